"""An in-process router over a model folder: repository, dataplane, shadows and metrics, as the router
role wires them (without the gRPC server), for tests of the dataplane itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

from aisf.adapters.registry import AdapterRegistry
from aisf.services.common.db.engine import open_database
from aisf.services.common.db.model_store import ModelStore
from aisf.services.common.metrics import InferenceMetrics
from aisf.services.common.tensors import InferRequest, Tensor
from aisf.services.router.control import ModelControl
from aisf.services.router.dataplane import Dataplane
from aisf.services.router.repository import ModelRepository, RepositoryDefaults
from aisf.services.router.shadows import ShadowRegistry


@dataclass
class Router:
    repository: ModelRepository
    dataplane: Dataplane
    control: ModelControl
    registry: CollectorRegistry
    shadows: ShadowRegistry

    def adapter_model(self, name: str, version: str = "") -> object:
        """A python-backend model's own object (its counters)."""
        return self.repository.get(name, version).adapter.model  # type: ignore[attr-defined]


@asynccontextmanager
async def routing(models: Path, defaults: RepositoryDefaults | None = None) -> AsyncIterator[Router]:
    database = open_database(f"sqlite:///{models.parent / 'router-meta.db'}")
    repository = ModelRepository(
        models, AdapterRegistry.from_entry_points(), ModelStore(database), defaults or RepositoryDefaults()
    )
    shadows = ShadowRegistry(repository, 10.0)
    registry = CollectorRegistry()
    dataplane = Dataplane(repository, InferenceMetrics(registry), shadows)
    await repository.load_all()
    try:
        yield Router(repository, dataplane, ModelControl(repository, shadows), registry, shadows)
    finally:
        await shadows.close()
        await repository.close()
        database.close()


def rows(
    model: str, values: np.ndarray, name: str = "x", **parameters: bool | int | float | str
) -> InferRequest:
    data = np.asarray(values, dtype=np.float32)
    return InferRequest(model, "", [Tensor.from_numpy(name, data)], parameters=dict(parameters))
