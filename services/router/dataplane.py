"""The one inference dataplane behind every transport: route, validate, deadline, breaker (or fallback),
execute, account, mirror to a shadow."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Iterator, Mapping
from dataclasses import dataclass, replace
from time import perf_counter_ns

from aisf import __version__
from aisf.services.common import call_context, deadlines, tracing
from aisf.services.common.errors import AisfError, InternalError, InvalidInput, ModelNotReady
from aisf.services.common.marks import FALLBACK_PARAMETER
from aisf.services.common.metrics import EngineGauges, InferenceMetrics
from aisf.services.common.request_log import SUCCESS, RequestLog, describe_parameters, describe_tensors, ms
from aisf.services.common.tensors import InferRequest, InferResponse, ParameterValue
from aisf.services.common.validation import select_outputs, validate_request
from aisf.services.router.breaker import STATE_VALUES
from aisf.services.router.engine_calls import on_successor
from aisf.services.router.fallback import RULE, circuit_open, rule_answer
from aisf.services.router.feature_join import FeatureJoin
from aisf.services.router.repository import IndexEntry, LoadedModel, ModelRepository
from aisf.services.router.routing import TrafficRouter
from aisf.services.router.shadow import tensors_agree
from aisf.services.router.shadows import ShadowRegistry, shadow_target
from aisf.services.router.statistics import ExecutionTiming, ModelStatistics

SERVER_NAME = "aisf"
# Triton extensions whose RPCs/endpoints aisf serves (tritonclient checks some of these).
EXTENSIONS = (
    "model_repository",
    "model_repository(unload_dependents)",
    "statistics",
    "binary_tensor_data",
    "model_configuration",
)
STREAM_LANE = "stream"
STREAM_WINDOW = 64  # requests of one ModelStreamInfer stream in flight or answered but not yet sent


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One request of a stream, or why its message could not be decoded."""

    model_name: str
    id: str
    request: InferRequest | None = None
    error: AisfError | None = None


@dataclass(frozen=True, slots=True)
class StreamAnswer:
    model_name: str
    id: str
    response: InferResponse | None = None
    error: AisfError | None = None


def _engine_span(model: LoadedModel, rows: int) -> tuple[str, dict[str, str | int]]:
    attributes: dict[str, str | int] = {
        "aisf.model": model.name,
        "aisf.model_version": model.version,
        "aisf.engine": model.platform,
        "aisf.device": model.device,
        "aisf.rows": rows,
    }
    return f"engine {model.name}", attributes


def timeout_parameter(request: InferRequest) -> float | None:
    """Triton's per-request `timeout` parameter (microseconds), in seconds."""
    value = request.parameters.get(deadlines.TIMEOUT_PARAMETER)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 0 < value <= deadlines.MAX_TIMEOUT_S * 1e6
    ):
        raise InvalidInput(
            f"parameters.timeout: must be a positive number of microseconds up to "
            f"{deadlines.MAX_TIMEOUT_S * 1e6:.0f}, got {value!r}"
        )
    return value / 1e6


class Dataplane:
    def __init__(
        self,
        repository: ModelRepository,
        metrics: InferenceMetrics,
        shadows: ShadowRegistry,
        request_timeout_s: float = 60.0,
        features: FeatureJoin | None = None,
        request_log: RequestLog | None = None,
    ) -> None:
        self._repository = repository
        self._request_log = request_log or RequestLog()
        self.features = features or FeatureJoin(None)
        self._metrics = metrics
        self._shadows = shadows
        self._routes = TrafficRouter(repository)
        self._request_timeout_s = request_timeout_s
        self._live = True
        self._started = False
        repository.serve_steps(self.infer_step, metrics.pipeline_step)

    async def infer(self, request: InferRequest) -> InferResponse:
        started = perf_counter_ns()
        try:
            timeout = timeout_parameter(request)
            model = self._routes.resolve(request.model_name, request.model_version, request.parameters)
        except AisfError as exc:  # refused before a model version took it: its line names what was asked
            self._log(
                request.model_name, request.model_version, request, exc.reason, perf_counter_ns() - started
            )
            raise
        if timeout is None:
            return await self._infer(request, model, started)
        with deadlines.bound(timeout):
            return await self._infer(request, model, started)

    async def _infer(self, request: InferRequest, model: LoadedModel, started: int) -> InferResponse:
        return await on_successor(
            model,
            lambda on: self._infer_on(on, request, started, live=True),
            lambda: self._successor(request.model_name, request.model_version, request.parameters),
            f"model '{request.model_name}'",
        )

    async def infer_step(self, request: InferRequest) -> InferResponse:
        """A pipeline's call of one of its steps: the step model's own routing, validation, breaker (and
        fallback), batching, shadow and accounting; the request's log line is the pipeline's."""
        model = self._routes.resolve(request.model_name, request.model_version, request.parameters)
        return await on_successor(
            model,
            lambda on: self._infer_on(on, request, perf_counter_ns(), live=True, logged=False),
            lambda: self._successor(request.model_name, request.model_version, request.parameters),
            f"model '{request.model_name}'",
        )

    def _successor(self, name: str, version: str, parameters: Mapping[str, ParameterValue]) -> LoadedModel:
        """What serves a request whose engine version retired while it waited for it."""
        try:
            return self._routes.resolve(name, version, parameters)
        except AisfError as exc:
            raise ModelNotReady(
                f"model '{name}' was unloaded while the request waited: {exc.message}"
            ) from None

    async def _infer_on(
        self, model: LoadedModel, request: InferRequest, started: int, live: bool, logged: bool = True
    ) -> InferResponse:
        """`live`: a client's request (fallback and shadow apply), not a shadow's or fallback's copy;
        `logged`: it gets its own request-log line (a pipeline's step does not)."""
        version = str(model.version)
        try:
            if model.config.features is not None:  # the model fetches its own features
                deadlines.check(f"model '{model.name}'")  # a late request fetches nothing
                request = await self.features.join(
                    model.name,
                    model.config.features,
                    model.inputs,
                    model.outputs,
                    request,
                    model.calls.max_waiting,
                )
            batch_size = validate_request(
                model.name, model.inputs, model.outputs, model.config.max_batch_size, request
            )
            deadlines.check(f"model '{model.name}'")
            permit = model.breaker.enter()
            if permit is None:
                return await self._fallback(model, request, batch_size, live, started, logged)
            try:
                with tracing.span(lambda: _engine_span(model, batch_size)):
                    response, timing = await model.executor.execute(request, batch_size)
            finally:
                model.breaker.leave(permit)
        except AisfError as exc:
            elapsed = perf_counter_ns() - started
            model.stats.record_failure(elapsed)
            self._metrics.failure(model.name, version, exc.reason, elapsed)
            if live and logged:
                self._log(model.name, version, request, exc.reason, elapsed)
            raise
        elapsed = perf_counter_ns() - started
        model.stats.record_success(elapsed, batch_size, timing)
        self._metrics.success(model.name, version, elapsed, timing.queue_ns, timing.batch_size)
        if live and logged:
            self._log(model.name, version, request, SUCCESS, elapsed, batch_size, timing)
        response = select_outputs(response, [o.name for o in request.outputs])
        response.model_name, response.model_version, response.id = model.name, version, request.id
        if live and model.config.shadow is not None:
            self._mirror(model, request, response, elapsed)
        return response

    def _log(
        self,
        model: str,
        version: str,
        request: InferRequest,
        outcome: str,
        elapsed_ns: int,
        rows: int | None = None,
        timing: ExecutionTiming | None = None,
        fallback: str = "",
    ) -> None:
        if not self._request_log.keeps(outcome, elapsed_ns):
            return
        fields: dict[str, object] = {
            "model": model,
            "version": version,
            "inputs": describe_tensors(request.inputs),
            "parameters": describe_parameters(request.parameters),
            "outputs": [o.name for o in request.outputs],
            "rows": rows,
        }
        if timing is not None:
            fields["queue_ms"] = ms(timing.queue_ns)
            fields["compute_ms"] = ms(
                timing.compute_input_ns + timing.compute_infer_ns + timing.compute_output_ns
            )
            fields["batch_size"] = timing.batch_size
        if fallback:
            fields["fallback"] = fallback
        self._request_log.write("v2 request", outcome, elapsed_ns, fields)

    async def _fallback(
        self,
        model: LoadedModel,
        request: InferRequest,
        batch_size: int,
        live: bool,
        started: int,
        logged: bool,
    ) -> InferResponse:
        """The open circuit's answer: the configured fallback (model or rule), else UNAVAILABLE."""
        version, fallback = str(model.version), model.config.fallback
        if fallback is None or not live or fallback.message:  # a message answers the LLM lane only
            raise circuit_open(model)
        if fallback.model:
            try:
                target = self._repository.get(fallback.model, fallback.version)
                response = await self._infer_on(
                    target,
                    replace(request, model_name=target.name, model_version=str(target.version)),
                    perf_counter_ns(),
                    live=False,
                )
            except AisfError as exc:
                raise circuit_open(
                    model, f", and its fallback '{fallback.model}' failed too: {exc.message}"
                ) from None
            kind = target.name
        else:
            response = rule_answer(fallback, request, model.config.max_batch_size > 0, batch_size)
            response.model_name, response.model_version = model.name, version
            kind = RULE
        response.parameters[FALLBACK_PARAMETER] = kind
        self._metrics.fallback(model.name, version, kind)
        if logged:
            self._log(
                model.name, version, request, SUCCESS, perf_counter_ns() - started, batch_size, fallback=kind
            )
        return response

    def _mirror(
        self, live: LoadedModel, request: InferRequest, response: InferResponse, elapsed: int
    ) -> None:
        config = live.config.shadow
        assert config is not None
        target, target_version = shadow_target(live.name, config)

        async def copy(request: InferRequest) -> InferResponse:
            def on(model: LoadedModel) -> Awaitable[InferResponse]:
                moved = replace(request, model_name=model.name, model_version=str(model.version))
                return self._infer_on(model, moved, perf_counter_ns(), live=False)

            shadow = self._repository.get(target, target_version)
            return await on_successor(
                shadow, on, lambda: self._successor(target, target_version, {}), f"shadow '{target}'"
            )

        def agree(mine: InferResponse, theirs: InferResponse) -> bool:
            return tensors_agree(mine, theirs, config.rtol, config.atol)

        mirror = self._shadows.mirror(live, copy, agree)
        if mirror is not None:
            mirror.offer(request, replace(response, outputs=list(response.outputs)), elapsed)

    async def infer_stream(self, items: AsyncIterator[StreamItem]) -> AsyncGenerator[StreamAnswer, None]:
        """ModelStreamInfer: requests run concurrently, each answered (or failed) alone, in completion
        order. At most STREAM_WINDOW are in flight or answered but not yet taken by the transport, so a
        client that stops reading stops the stream's reads too."""
        window = asyncio.Semaphore(STREAM_WINDOW)
        answers: asyncio.Queue[StreamAnswer | None] = asyncio.Queue()
        tasks: set[asyncio.Task[None]] = set()

        async def answer(item: StreamItem, request: InferRequest) -> None:
            try:
                with deadlines.bound(self._request_timeout_s):
                    response = await self.infer(request)
                answers.put_nowait(StreamAnswer(item.model_name, item.id, response=response))
            except AisfError as error:
                answers.put_nowait(StreamAnswer(item.model_name, item.id, error=error))
            except Exception as error:  # every request gets an answer, or the window would leak a slot
                failed = InternalError(f"{type(error).__name__}: {error}")
                answers.put_nowait(StreamAnswer(item.model_name, item.id, error=failed))

        async def read_all() -> None:
            if not call_context.lane.get():  # this task's own context: the answers' tasks inherit it
                call_context.lane.set(STREAM_LANE)
            try:
                async for item in items:
                    await window.acquire()
                    if item.request is None:
                        answers.put_nowait(StreamAnswer(item.model_name, item.id, error=item.error))
                        continue
                    task = asyncio.create_task(answer(item, item.request))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.gather(*tasks)
            finally:
                answers.put_nowait(None)

        reader = asyncio.create_task(read_all())
        try:
            while (item := await answers.get()) is not None:
                yield item
                window.release()  # the transport took the answer
            await reader
        finally:
            reader.cancel()
            for task in tasks:
                task.cancel()

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

    def engine_gauges(self) -> Iterator[EngineGauges]:
        for model in self._repository.ready():
            status = model.breaker.status()
            yield EngineGauges(
                model.name,
                str(model.version),
                model.executor.queue_depth(),
                model.calls.in_flight(),
                STATE_VALUES[status.state],
                status.opened_count,
                status.rejected,
                model.platform,
                model.device,
            )

    def repository_index(self) -> list[IndexEntry]:
        return self._repository.index()

    async def load_model(self, name: str) -> None:
        await self._repository.load(name)

    async def unload_model(self, name: str) -> None:
        await self._repository.unload(name)
