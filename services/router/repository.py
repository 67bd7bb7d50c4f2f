"""The model repository: models/<name>/config.yaml + <version>/ folders, loaded into engines."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from aisf.adapters.base import (
    GenerativeAdapter,
    ModelAdapter,
    ModelMetadata,
    ModelSpec,
    RepositoryModels,
    ServedModel,
)
from aisf.adapters.registry import AdapterRegistry
from aisf.services.common import heap
from aisf.services.common.db.model_store import EventKind, ModelStore
from aisf.services.common.errors import AisfError, InvalidInput, ModelLoadFailed, ModelNotFound, ModelNotReady
from aisf.services.common.model_config import PIPELINE_BACKEND, ModelConfig, TrafficConfig, load_model_config
from aisf.services.common.tensors import InferRequest, InferResponse, TensorSpec
from aisf.services.common.threads import BlockingPool
from aisf.services.router.breaker import CircuitBreaker
from aisf.services.router.engine_calls import EngineCalls
from aisf.services.router.executors import DirectExecutor, DynamicBatcher, Executor
from aisf.services.router.model_checks import check_fallback, check_routes, effective_tensors
from aisf.services.router.statistics import ModelStatistics

log = logging.getLogger(__name__)


class ModelState(StrEnum):
    READY = "READY"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(slots=True)
class LoadedModel:
    """One served model version: its effective tensors, engine, the calls into it (slots, breaker,
    drain), its executor (direct or batching), its threads and statistics."""

    name: str
    version: int
    config: ModelConfig
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    platform: str
    adapter: ModelAdapter
    executor: Executor
    stats: ModelStatistics
    calls: EngineCalls
    breaker: CircuitBreaker
    threads: BlockingPool
    artifacts: tuple[tuple[str, int, int], ...] = ()
    device: str = "cpu"
    details: dict[str, str] = field(default_factory=dict)

    @property
    def request_inputs(self) -> list[TensorSpec]:
        """What a client sends: the entity ids of a model that fetches its own features, else the engine's
        inputs."""
        return self.config.features.entity_specs() if self.config.features is not None else self.inputs

    async def close(self, grace_s: float) -> None:
        """Drain, then unload: the engine's unload() never runs under a live call."""
        await self.executor.close(grace_s)
        try:
            await self.adapter.unload()
        finally:
            self.threads.close()


@dataclass(frozen=True, slots=True)
class RepositoryDefaults:
    """Server-wide defaults a model's config.yaml may override."""

    max_queue_size: int = 256
    llm_max_waiting: int = 32
    drain_timeout_s: float = 30.0
    stream_idle_s: float = 60.0  # a stream whose reader took no chunk this long is cut (0: never)


# Settings that only steer traffic around an engine: a reload that changes nothing else keeps the engine.
_ROUTING_FIELDS = {"circuit_breaker", "fallback", "shadow", "traffic"}


@dataclass(frozen=True, slots=True)
class IndexEntry:
    name: str
    version: str
    state: ModelState
    reason: str


class ModelRepository:
    def __init__(
        self,
        root: Path,
        registry: AdapterRegistry,
        store: ModelStore,
        defaults: RepositoryDefaults = RepositoryDefaults(),
    ) -> None:
        self._root = root
        self._registry = registry
        self._store = store
        self._defaults = defaults
        self._models: dict[str, dict[int, LoadedModel]] = {}
        self._status: dict[str, tuple[ModelState, str]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # An operator's traffic override (a promoted shadow) until the model is loaded again.
        self._overrides: dict[str, TrafficConfig] = {}
        self._listeners: list[Callable[[str], None]] = []
        self._models_view: RepositoryModels = _ServedModels(self, _no_step_lane, lambda *_: None)

    def on_change(self, listener: Callable[[str], None]) -> None:
        """Call `listener(name)` once a model was loaded again or unloaded (what serves it changed)."""
        self._listeners.append(listener)

    def _changed(self, name: str) -> None:
        for listener in self._listeners:
            listener(name)

    def serve_steps(
        self,
        infer: Callable[[InferRequest], Awaitable[InferResponse]],
        observe_step: Callable[[str, str, int, str], None],
    ) -> None:
        """How engines that call other models (pipelines) reach them: the dataplane's step lane."""
        self._models_view = _ServedModels(self, infer, observe_step)

    async def load_all(self) -> None:
        """Load every model folder, pipelines after the models they call; one model's failure leaves the
        others serving."""
        names = sorted(p.name for p in self._root.iterdir() if (p / "config.yaml").is_file())
        for name in _load_order(self._root, names):
            try:
                await self.load(name)
            except AisfError as exc:
                log.warning("model load failed", extra={"model": name, "reason": exc.message})

    async def load(self, name: str) -> None:
        """(Re)load a model's versions per its version policy; a failed reload keeps the old ones."""
        model_dir = self._model_dir(name)
        async with self._locks.setdefault(name, asyncio.Lock()):
            previous = self._models.get(name, {})
            self._status[name] = (ModelState.LOADING, "")
            try:
                config = load_model_config(model_dir)
                versions = config.version_policy.select(_version_dirs(model_dir))
                if not versions:
                    raise ModelLoadFailed(f"model '{name}': no version folder matches its version_policy")
                check_routes(config, versions)
                loaded = await self._load_versions(model_dir, config, versions, previous)
            except AisfError as exc:
                self._status[name] = (
                    (ModelState.READY, "") if previous else (ModelState.UNAVAILABLE, exc.message)
                )
                await self._store.record(name, "", "", EventKind.LOAD_FAILED, exc.message)
                raise
            # New requests see the new versions from here on; the old ones drain, then unload.
            self._models[name] = loaded
            self._overrides.pop(name, None)
            self._status[name] = (ModelState.READY, "")
            self._changed(name)
            kept = {id(m) for m in loaded.values()}
            for model in loaded.values():
                await self._store.record(name, str(model.version), config.backend, EventKind.LOADED)
            retired = [old for old in previous.values() if id(old) not in kept]
            for old in retired:
                await old.close(self._defaults.drain_timeout_s)
            if retired:
                heap.settle()
            log.info("model loaded", extra={"model": name, "versions": sorted(loaded)})

    async def unload(self, name: str) -> None:
        self._model_dir(name)
        async with self._locks.setdefault(name, asyncio.Lock()):
            loaded = self._models.pop(name, {})
            self._overrides.pop(name, None)
            self._status[name] = (ModelState.UNAVAILABLE, "unloaded")
            self._changed(name)
            for model in loaded.values():
                await model.close(self._defaults.drain_timeout_s)
                await self._store.record(name, str(model.version), model.config.backend, EventKind.UNLOADED)
            if loaded:
                heap.settle()
            log.info("model unloaded", extra={"model": name})

    def get(self, name: str, version: str = "") -> LoadedModel:
        """The version asked for, or the newest ready one when `version` is empty."""
        versions = self._models.get(name)
        if not versions:
            if name not in self._status and not (self._root / name / "config.yaml").is_file():
                raise ModelNotFound(f"unknown model '{name}'")
            state, reason = self._status.get(name, (ModelState.UNAVAILABLE, "not loaded"))
            raise ModelNotReady(
                f"model '{name}' is not ready ({state.value.lower()}{': ' + reason if reason else ''})"
            )
        if not version:
            return versions[max(versions)]
        try:
            number = int(version)
        except ValueError:
            raise InvalidInput(f"model '{name}': version '{version}' is not a number") from None
        model = versions.get(number)
        if model is None:
            raise ModelNotFound(f"model '{name}' has no ready version {version}; ready: {sorted(versions)}")
        return model

    def traffic(self, name: str) -> TrafficConfig | None:
        """The canary split of a model's unversioned requests: an override, else its config's."""
        if name in self._overrides:
            return self._overrides[name]
        versions = self._models.get(name)
        return versions[max(versions)].config.traffic if versions else None

    def override_traffic(self, name: str, traffic: TrafficConfig) -> None:
        self.get(name)
        self._overrides[name] = traffic

    def overridden(self, name: str) -> bool:
        """Whether an operator's override steers the model's traffic (until it is loaded again)."""
        return name in self._overrides

    def ready(self) -> list[LoadedModel]:
        return [m for versions in self._models.values() for m in versions.values()]

    def index(self) -> list[IndexEntry]:
        entries: list[IndexEntry] = []
        on_disk = sorted(p.name for p in self._root.iterdir() if (p / "config.yaml").is_file())
        for name in sorted(set(on_disk) | set(self._status)):
            loaded = self._models.get(name, {})
            if loaded:
                entries.extend(IndexEntry(name, str(v), ModelState.READY, "") for v in sorted(loaded))
            else:
                state, reason = self._status.get(name, (ModelState.UNAVAILABLE, "not loaded"))
                entries.append(IndexEntry(name, "", state, reason))
        return entries

    async def close(self) -> None:
        for name in list(self._models):
            for model in self._models.pop(name).values():
                await model.close(self._defaults.drain_timeout_s)

    def _model_dir(self, name: str) -> Path:
        model_dir = self._root / name
        if not name or "/" in name or name.startswith(".") or not (model_dir / "config.yaml").is_file():
            raise ModelNotFound(f"unknown model '{name}': no {name}/config.yaml in the model repository")
        return model_dir

    async def _load_versions(
        self, model_dir: Path, config: ModelConfig, versions: list[int], previous: dict[int, LoadedModel]
    ) -> dict[int, LoadedModel]:
        """All or nothing: a version that fails to load releases the ones loaded before it. A version
        whose engine settings did not change keeps its engine (a canary split is a cheap reload)."""
        loaded: dict[int, LoadedModel] = {}
        kept: list[LoadedModel] = []
        try:
            for version in versions:
                old = previous.get(version)
                if (
                    old is not None
                    and _engine_settings(old.config) == _engine_settings(config)
                    and old.artifacts == _artifacts(model_dir / str(version))
                ):
                    check_fallback(config, old.adapter, old.outputs)
                    kept.append(old)
                    loaded[version] = old
                else:
                    loaded[version] = await self._load_version(model_dir, config, version)
        except AisfError:
            for model in loaded.values():
                if model is not previous.get(model.version):
                    await model.close(self._defaults.drain_timeout_s)
            raise
        # Only once every version loaded: a failed reload leaves the kept ones as they were.
        for old in kept:
            old.config = config
            old.breaker.configure(config.circuit_breaker)
        return loaded

    async def _load_version(self, model_dir: Path, config: ModelConfig, version: int) -> LoadedModel:
        adapter = self._registry.create(config.backend)
        threads = BlockingPool(f"{config.name}-{version}", config.instance_count)
        breaker = CircuitBreaker(config.name, str(version), config.circuit_breaker)
        spec = ModelSpec(
            config.name,
            version,
            model_dir / str(version),
            config,
            threads,
            breaker.is_open,
            self._models_view,
        )
        artifacts = _artifacts(spec.path)
        try:
            try:
                metadata = await adapter.load(spec)
            except AisfError:
                raise
            except Exception as exc:
                # A plugin's own exception must not take the other models down with it.
                raise ModelLoadFailed(
                    f"model '{config.name}' version {version}: {type(exc).__name__}: {exc}"
                ) from exc
            try:
                inputs = effective_tensors(
                    config, config.tensor_specs(config.inputs), metadata.inputs, "input"
                )
                outputs = effective_tensors(
                    config, config.tensor_specs(config.outputs), metadata.outputs, "output"
                )
                check_fallback(config, adapter, outputs)
            except AisfError:
                await adapter.unload()
                raise
        except AisfError:
            threads.close()
            raise
        stats = ModelStatistics(config.name, str(version))
        calls = EngineCalls(
            f"model '{config.name}' version {version}",
            metadata.concurrency or config.instance_count,
            self._max_waiting(config, adapter),
            breaker,
            self._defaults.stream_idle_s,
        )
        executor: Executor
        if config.dynamic_batching is not None:
            executor = DynamicBatcher(adapter, stats, calls, config.max_batch_size, config.dynamic_batching)
        else:
            executor = DirectExecutor(adapter, stats, calls)
        return LoadedModel(
            config.name,
            version,
            config,
            inputs,
            outputs,
            _platform(config, metadata),
            adapter,
            executor,
            stats,
            calls,
            breaker,
            threads,
            artifacts,
            metadata.device,
            metadata.details,
        )

    def _max_waiting(self, config: ModelConfig, adapter: ModelAdapter) -> int:
        if config.max_queue_size is not None:
            waiting = config.max_queue_size
        elif isinstance(adapter, GenerativeAdapter):
            waiting = self._defaults.llm_max_waiting
        else:
            waiting = self._defaults.max_queue_size
        # A batcher's queue must hold at least one batch, or it could never batch.
        return max(waiting, config.max_batch_size) if config.dynamic_batching is not None else waiting


class _ServedModels:
    """The repository as a pipeline's steps see it: ready models' tensors, calls through the dataplane."""

    def __init__(
        self,
        repository: ModelRepository,
        infer: Callable[[InferRequest], Awaitable[InferResponse]],
        observe_step: Callable[[str, str, int, str], None],
    ) -> None:
        self._repository = repository
        self.infer = infer
        self.observe_step = observe_step

    def describe(self, name: str, version: str = "") -> ServedModel:
        model = self._repository.get(name, version)
        return ServedModel(model.name, model.version, model.request_inputs, model.outputs)


async def _no_step_lane(request: InferRequest) -> InferResponse:
    raise ModelNotReady(f"model '{request.model_name}': this repository serves no step calls")


def _load_order(root: Path, names: list[str]) -> list[str]:
    """Models first, then pipelines, each after the pipelines it calls (a pipeline checks its steps'
    tensors when it loads). A config that cannot be read keeps its place: its load reports why."""
    calls: dict[str, set[str]] = {}
    for name in names:
        try:
            config = load_model_config(root / name)
        except AisfError:
            continue
        if config.backend == PIPELINE_BACKEND and config.pipeline is not None:
            calls[name] = {s.model for s in config.pipeline.steps if s.model}
    order = [n for n in names if n not in calls]
    waiting = [n for n in names if n in calls]
    while waiting:
        ready = [n for n in waiting if not calls[n] & set(waiting)] or waiting  # a cycle fails at load
        order += ready
        waiting = [n for n in waiting if n not in ready]
    return order


def _version_dirs(model_dir: Path) -> list[int]:
    return sorted(
        int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0
    )


def _platform(config: ModelConfig, metadata: ModelMetadata) -> str:
    return config.platform or metadata.platform or config.backend


def _engine_settings(config: ModelConfig) -> dict[str, object]:
    return config.model_dump(exclude=_ROUTING_FIELDS)


def _artifacts(version_dir: Path) -> tuple[tuple[str, int, int], ...]:
    """What the version folder holds (path, size, mtime): a replaced artifact means a real reload.
    Python's bytecode caches are not artifacts (importing a python-backend model writes one)."""
    files = (p for p in version_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return tuple(
        sorted((str(p.relative_to(version_dir)), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    )
