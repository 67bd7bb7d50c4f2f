"""Assembles the inference-router service: model repository, dataplane and their gRPC services."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from aisf.adapters.registry import AdapterRegistry
from aisf.services.common.db.engine import Database
from aisf.services.common.db.model_store import ModelStore
from aisf.services.common.grpc_server import Registrar
from aisf.services.common.metrics import DataplaneCollector, InferenceMetrics, ShadowCounts
from aisf.services.common.request_log import request_log_of
from aisf.services.common.settings import Settings
from aisf.services.router import control_servicer, llm_servicer, repository_servicer, v2_servicer
from aisf.services.router.control import ModelControl
from aisf.services.router.dataplane import Dataplane
from aisf.services.router.llm_dataplane import LlmDataplane, build_llm_dataplane
from aisf.services.router.repository import ModelRepository, RepositoryDefaults
from aisf.services.router.shadows import ShadowRegistry


@dataclass(slots=True)
class RouterService:
    dataplane: Dataplane
    repository: ModelRepository
    shadows: ShadowRegistry
    registrars: list[Registrar] = field(default_factory=list)
    service_names: list[str] = field(default_factory=list)
    llm: LlmDataplane | None = None  # LLM lane (aisf.llm.v1)

    async def close(self) -> None:
        self.dataplane.mark_stopping()
        await self.shadows.close()
        if self.llm is not None:  # LLM lane: the semantic cache's index connection
            await self.llm.close()
        await self.repository.close()


async def build_router(
    settings: Settings,
    metrics: CollectorRegistry,
    database: Database,
    adapters: AdapterRegistry | None = None,
) -> RouterService:
    """Load the model repository; the caller serves the returned registrars on its gRPC server."""
    store = ModelStore(database)
    defaults = RepositoryDefaults(
        max_queue_size=settings.max_queue_size,
        llm_max_waiting=settings.llm_max_waiting,
        drain_timeout_s=settings.drain_timeout_s,
        stream_idle_s=settings.llm_stream_idle_s,
    )
    repository = ModelRepository(
        settings.model_repository, adapters or AdapterRegistry.from_entry_points(), store, defaults
    )
    shadows = ShadowRegistry(repository, settings.request_timeout_s)
    dataplane = Dataplane(
        repository,
        InferenceMetrics(metrics),
        shadows,
        settings.request_timeout_s,
        request_log=request_log_of(settings),
    )
    llm = build_llm_dataplane(settings, metrics, repository, shadows)  # LLM lane (aisf.llm.v1)
    metrics.register(DataplaneCollector(dataplane.engine_gauges, lambda: _shadow_counts(shadows)))
    control = ModelControl(repository, shadows)
    await repository.load_all()
    return RouterService(
        dataplane,
        repository,
        shadows,
        [
            v2_servicer.register(dataplane),
            repository_servicer.register(store),
            llm_servicer.register(llm),
            control_servicer.register(control),
        ],
        [
            v2_servicer.SERVICE_NAME,
            repository_servicer.SERVICE_NAME,
            llm_servicer.SERVICE_NAME,
            control_servicer.SERVICE_NAME,
        ],
        llm,
    )


def _shadow_counts(shadows: ShadowRegistry) -> list[ShadowCounts]:
    counts = []
    for report in shadows.reports():
        shadow = f"{report.shadow_model}:{report.shadow_version or 'newest'}"
        errors = sum(report.shadow_errors.values())
        disagreed = report.compared - report.agreed
        counts.append(ShadowCounts(report.model, shadow, report.agreed, disagreed, errors, report.shed))
    return counts
