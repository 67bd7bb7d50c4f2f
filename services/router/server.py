"""Assembles the inference-router service: model repository, dataplane and their gRPC services."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from aisf.adapters.registry import AdapterRegistry
from aisf.services.common.db.model_store import ModelStore
from aisf.services.common.grpc_server import Registrar
from aisf.services.common.metrics import InferenceMetrics
from aisf.services.common.settings import Settings
from aisf.services.router import repository_servicer, v2_servicer
from aisf.services.router.dataplane import Dataplane
from aisf.services.router.repository import ModelRepository


@dataclass(slots=True)
class RouterService:
    dataplane: Dataplane
    repository: ModelRepository
    registrars: list[Registrar] = field(default_factory=list)
    service_names: list[str] = field(default_factory=list)

    async def close(self) -> None:
        self.dataplane.mark_stopping()
        await self.repository.close()


async def build_router(
    settings: Settings, metrics: CollectorRegistry, database: Engine, adapters: AdapterRegistry | None = None
) -> RouterService:
    """Load the model repository; the caller serves the returned registrars on its gRPC server."""
    store = ModelStore(database)
    repository = ModelRepository(
        settings.model_repository, adapters or AdapterRegistry.from_entry_points(), store
    )
    dataplane = Dataplane(repository, InferenceMetrics(metrics))
    await repository.load_all()
    return RouterService(
        dataplane,
        repository,
        [v2_servicer.register(dataplane), repository_servicer.register(store)],
        [v2_servicer.SERVICE_NAME, repository_servicer.SERVICE_NAME],
    )
