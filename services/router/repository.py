"""The model repository: models/<name>/config.yaml + <version>/ folders, loaded into engines."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from aisf.adapters.base import ModelAdapter, ModelMetadata, ModelSpec
from aisf.adapters.registry import AdapterRegistry
from aisf.services.common.db.model_store import EventKind, ModelStore
from aisf.services.common.errors import AisfError, InvalidInput, ModelLoadFailed, ModelNotFound, ModelNotReady
from aisf.services.common.model_config import ModelConfig, load_model_config
from aisf.services.common.tensors import TensorSpec
from aisf.services.router.executors import DirectExecutor, DynamicBatcher, Executor
from aisf.services.router.statistics import ModelStatistics

log = logging.getLogger(__name__)


class ModelState(StrEnum):
    READY = "READY"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(slots=True)
class LoadedModel:
    """One served model version: its effective tensors, engine, executor and statistics."""

    name: str
    version: int
    config: ModelConfig
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    platform: str
    adapter: ModelAdapter
    executor: Executor
    stats: ModelStatistics


@dataclass(frozen=True, slots=True)
class IndexEntry:
    name: str
    version: str
    state: ModelState
    reason: str


class ModelRepository:
    def __init__(self, root: Path, registry: AdapterRegistry, store: ModelStore) -> None:
        self._root = root
        self._registry = registry
        self._store = store
        self._models: dict[str, dict[int, LoadedModel]] = {}
        self._status: dict[str, tuple[ModelState, str]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def load_all(self) -> None:
        """Load every model folder; one model's failure leaves the others serving."""
        names = sorted(p.name for p in self._root.iterdir() if (p / "config.yaml").is_file())
        for name in names:
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
                loaded = await self._load_versions(model_dir, config, versions)
            except AisfError as exc:
                self._status[name] = (
                    (ModelState.READY, "") if previous else (ModelState.UNAVAILABLE, exc.message)
                )
                await self._store.record(name, "", "", EventKind.LOAD_FAILED, exc.message)
                raise
            self._models[name] = loaded
            self._status[name] = (ModelState.READY, "")
            for model in loaded.values():
                await self._store.record(name, str(model.version), config.backend, EventKind.LOADED)
            for old in previous.values():
                await _close(old)
            log.info("model loaded", extra={"model": name, "versions": sorted(loaded)})

    async def unload(self, name: str) -> None:
        self._model_dir(name)
        async with self._locks.setdefault(name, asyncio.Lock()):
            loaded = self._models.pop(name, {})
            self._status[name] = (ModelState.UNAVAILABLE, "unloaded")
            for model in loaded.values():
                await _close(model)
                await self._store.record(name, str(model.version), model.config.backend, EventKind.UNLOADED)
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
                await _close(model)

    def _model_dir(self, name: str) -> Path:
        model_dir = self._root / name
        if not name or "/" in name or name.startswith(".") or not (model_dir / "config.yaml").is_file():
            raise ModelNotFound(f"unknown model '{name}': no {name}/config.yaml in the model repository")
        return model_dir

    async def _load_versions(
        self, model_dir: Path, config: ModelConfig, versions: list[int]
    ) -> dict[int, LoadedModel]:
        """All or nothing: a version that fails to load releases the ones loaded before it."""
        loaded: dict[int, LoadedModel] = {}
        try:
            for version in versions:
                loaded[version] = await self._load_version(model_dir, config, version)
        except AisfError:
            for model in loaded.values():
                await _close(model)
            raise
        return loaded

    async def _load_version(self, model_dir: Path, config: ModelConfig, version: int) -> LoadedModel:
        adapter = self._registry.create(config.backend)
        spec = ModelSpec(config.name, version, model_dir / str(version), config)
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
            inputs = _effective(config, config.tensor_specs(config.inputs), metadata.inputs, "input")
            outputs = _effective(config, config.tensor_specs(config.outputs), metadata.outputs, "output")
        except AisfError:
            await adapter.unload()
            raise
        stats = ModelStatistics(config.name, str(version))
        executor: Executor
        if config.dynamic_batching is not None:
            executor = DynamicBatcher(
                adapter, stats, config.instance_count, config.max_batch_size, config.dynamic_batching
            )
        else:
            executor = DirectExecutor(adapter, stats, config.instance_count)
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
        )


def _version_dirs(model_dir: Path) -> list[int]:
    return sorted(
        int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0
    )


def _platform(config: ModelConfig, metadata: ModelMetadata) -> str:
    return config.platform or metadata.platform or config.backend


def _effective(
    config: ModelConfig, declared: list[TensorSpec], engine: list[TensorSpec], kind: str
) -> list[TensorSpec]:
    """Declared tensors win, but must agree with the engine; undeclared ones come from the engine."""
    if not declared:
        if config.max_batch_size > 0:
            fixed = [t.name for t in engine if not t.shape or t.shape[0] != -1]
            if fixed:
                raise ModelLoadFailed(
                    f"model '{config.name}': max_batch_size > 0 but {kind}(s) {fixed} have a fixed first dim"
                )
        return engine
    by_name = {t.name: t for t in engine}
    for tensor in declared:
        found = by_name.get(tensor.name)
        if found is None:
            raise ModelLoadFailed(
                f"model '{config.name}': {kind} '{tensor.name}' is not one the engine has: {sorted(by_name)}"
            )
        agree = len(found.shape) == len(tensor.shape) and all(
            a == b or -1 in (a, b) for a, b in zip(found.shape, tensor.shape, strict=True)
        )
        if found.datatype != tensor.datatype or not agree:
            raise ModelLoadFailed(
                f"model '{config.name}': {kind} '{tensor.name}' is declared "
                f"{tensor.datatype} {list(tensor.shape)} "
                f"but the engine has {found.datatype} {list(found.shape)}"
            )
    return declared


async def _close(model: LoadedModel) -> None:
    await model.executor.close()
    await model.adapter.unload()
