"""The one inference dataplane behind every transport: resolve, validate, execute, account."""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter_ns

from aisf import __version__
from aisf.services.common.errors import AisfError
from aisf.services.common.metrics import InferenceMetrics
from aisf.services.common.tensors import InferRequest, InferResponse
from aisf.services.common.validation import select_outputs, validate_request
from aisf.services.router.repository import IndexEntry, LoadedModel, ModelRepository
from aisf.services.router.statistics import ModelStatistics

SERVER_NAME = "aisf"
# Triton extensions whose RPCs/endpoints aisf serves (tritonclient checks some of these).
EXTENSIONS = (
    "model_repository",
    "model_repository(unload_dependents)",
    "statistics",
    "binary_tensor_data",
    "model_configuration",
)


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...]


class Dataplane:
    def __init__(self, repository: ModelRepository, metrics: InferenceMetrics) -> None:
        self._repository = repository
        self._metrics = metrics
        self._live = True
        self._started = False

    async def infer(self, request: InferRequest) -> InferResponse:
        started = perf_counter_ns()
        model = self._repository.get(request.model_name, request.model_version)
        try:
            batch_size = validate_request(
                model.name, model.inputs, model.outputs, model.config.max_batch_size, request
            )
            response, timing = await model.executor.execute(request, batch_size)
        except AisfError as exc:
            elapsed = perf_counter_ns() - started
            model.stats.record_failure(elapsed)
            self._metrics.failure(model.name, str(model.version), exc.reason, elapsed)
            raise
        elapsed = perf_counter_ns() - started
        model.stats.record_success(elapsed, batch_size, timing)
        self._metrics.success(model.name, str(model.version), elapsed, timing.queue_ns, timing.batch_size)
        response = select_outputs(response, [o.name for o in request.outputs])
        response.model_name = model.name
        response.model_version = str(model.version)
        response.id = request.id
        return response

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(SERVER_NAME, __version__, EXTENSIONS)

    def live(self) -> bool:
        return self._live

    def ready(self) -> bool:
        """Ready once the start-up load finished (a model that failed to load leaves the rest serving)."""
        return self._live and self._started

    def mark_started(self) -> None:
        self._started = True

    def mark_stopping(self) -> None:
        self._live = False

    def model(self, name: str, version: str = "") -> LoadedModel:
        return self._repository.get(name, version)

    def model_versions(self, name: str) -> list[str]:
        return [str(m.version) for m in self._repository.ready() if m.name == name]

    async def model_ready(self, name: str, version: str = "") -> bool:
        """Loaded, and its engine says it can serve (a remote engine may have gone away)."""
        try:
            model = self._repository.get(name, version)
        except AisfError:
            return False
        return (await model.adapter.health()).ready

    def statistics(self, name: str = "", version: str = "") -> list[ModelStatistics]:
        if name:
            return [self._repository.get(name, version).stats]
        return [m.stats for m in self._repository.ready()]

    def repository_index(self) -> list[IndexEntry]:
        return self._repository.index()

    async def load_model(self, name: str) -> None:
        await self._repository.load(name)

    async def unload_model(self, name: str) -> None:
        await self._repository.unload(name)
