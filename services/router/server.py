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
from aisf.services.router import llm_servicer, repository_servicer, v2_servicer
from aisf.services.router.dataplane import Dataplane
from aisf.services.router.llm_dataplane import LlmDataplane, build_llm_dataplane
from aisf.services.router.repository import ModelRepository


@dataclass(slots=True)
class RouterService:
    dataplane: Dataplane
    repository: ModelRepository
    registrars: list[Registrar] = field(default_factory=list)
    service_names: list[str] = field(default_factory=list)
    llm: LlmDataplane | None = None  # LLM lane (aisf.llm.v1)

    async def close(self) -> None:
        self.dataplane.mark_stopping()
        if self.llm is not None:  # LLM lane: the semantic cache's index connection
            await self.llm.close()
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
    llm = build_llm_dataplane(settings, metrics, repository)  # LLM lane (aisf.llm.v1)
    await repository.load_all()
    return RouterService(
        dataplane,
        repository,
        [v2_servicer.register(dataplane), repository_servicer.register(store), llm_servicer.register(llm)],
        [v2_servicer.SERVICE_NAME, repository_servicer.SERVICE_NAME, llm_servicer.SERVICE_NAME],
        llm,
    )
