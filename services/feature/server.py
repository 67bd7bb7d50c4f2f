"""Assembles the feature service: Feast's registry read once (in a thread: `import feast` takes seconds),
the online store chosen (Redis read directly, others through Feast's SDK), and its gRPC service."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from aisf.services.common.grpc_server import Registrar
from aisf.services.common.settings import Settings
from aisf.services.feature import servicer
from aisf.services.feature.catalog import Catalog, load_catalog, repository_config
from aisf.services.feature.feast_import import import_feast
from aisf.services.feature.feast_layout import VALUE_TYPES
from aisf.services.feature.metrics import FeatureMetrics
from aisf.services.feature.online import FeatureLookup, OnlineStore
from aisf.services.feature.redis_store import RedisFeatureStore
from aisf.services.feature.sdk_store import FeastSdkStore

log = logging.getLogger(__name__)


@dataclass(slots=True)
class FeatureLane:
    lookup: FeatureLookup
    registrars: list[Registrar] = field(default_factory=list)
    service_names: list[str] = field(default_factory=list)

    async def close(self) -> None:
        await self.lookup.close()


def open_feature_store(repo: Path) -> Any:
    """A `feast.FeatureStore` over the repository (blocking, seconds: call it in a thread)."""
    repository_config(repo)
    feast = import_feast()  # seconds: only the feature role and the CLI pay for it
    return feast.FeatureStore(repo_path=str(repo.resolve()))


def online_store(catalog: Catalog, feast_store: Any, timeout_s: float) -> OnlineStore:
    """Redis read directly when every feature is a scalar aisf decodes; Feast's SDK otherwise."""
    scalar = all(f.value_type in VALUE_TYPES for v in catalog.views.values() for f in v.features)
    if catalog.online_store.type == "redis" and scalar:
        return RedisFeatureStore(catalog, timeout_s)
    return FeastSdkStore(feast_store, catalog.online_store.type)


async def build_feature_lane(settings: Settings, registry: CollectorRegistry) -> FeatureLane:
    assert settings.feature_repo is not None
    repo = settings.feature_repo.resolve()
    feast_store = await asyncio.to_thread(open_feature_store, repo)
    catalog = await asyncio.to_thread(load_catalog, feast_store)
    store = online_store(catalog, feast_store, settings.feature_store_timeout_s)
    lookup = FeatureLookup(catalog, store, FeatureMetrics(registry), settings.feature_max_entities)
    log.info(
        "feature repository loaded",
        extra={
            "project": catalog.project,
            "online_store": catalog.online_store.type,
            "feature_views": len(catalog.views),
            "feature_services": len(catalog.services),
        },
    )
    return FeatureLane(lookup, [servicer.register(lookup)], [servicer.SERVICE_NAME])
