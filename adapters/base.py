"""The adapter contract (DESIGN.md §3): what an engine must offer the foundation, nothing more."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from aisf.services.common.errors import (
    AisfError,
    EngineOutOfMemory,
    InternalError,
    ModelLoadFailed,
    ModelNotReady,
)
from aisf.services.common.llm_types import EmbedRequest, EmbedResponse, GenerateRequest, TokenChunk
from aisf.services.common.model_config import ModelConfig
from aisf.services.common.tensors import InferRequest, InferResponse, TensorSpec
from aisf.services.common.threads import BlockingPool


def _own_threads() -> BlockingPool:
    return BlockingPool("engine", 1)


def _never() -> bool:
    return False


@dataclass(frozen=True, slots=True)
class ServedModel:
    """What a model calling other models (a pipeline) sees of one: its tensors (the batch dim included)."""

    name: str
    version: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class RepositoryModels(Protocol):
    """The repository's models, for an engine that calls them: through the dataplane, so every call
    is validated, batched, counted and guarded by the called model's breaker like any other."""

    def describe(self, name: str, version: str = "") -> ServedModel:
        """Raise ModelNotFound / ModelNotReady for a model that does not serve."""
        ...

    def infer(self, request: InferRequest) -> Awaitable[InferResponse]: ...

    def observe_step(self, pipeline: str, step: str, elapsed_ns: int, outcome: str) -> None:
        """Account one step of a pipeline's request (its time and outcome: `success` or a reason)."""
        ...


class _NoModels:
    def describe(self, name: str, version: str = "") -> ServedModel:
        raise ModelLoadFailed(f"model '{name}': this engine was loaded without the repository")

    async def infer(self, request: InferRequest) -> InferResponse:
        raise ModelNotReady(f"model '{request.model_name}': this engine was loaded without the repository")

    def observe_step(self, pipeline: str, step: str, elapsed_ns: int, outcome: str) -> None:
        return None


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model version to load: its config, the folder holding its artifacts, the threads its blocking
    engine calls run on (the repository sizes them by instance_count; nothing else uses them), whether
    its circuit is open (remote engines stop retrying then), and the repository's other models (for a
    pipeline's steps)."""

    name: str
    version: int
    path: Path
    config: ModelConfig
    threads: BlockingPool = field(default_factory=_own_threads)
    circuit_open: Callable[[], bool] = _never
    models: RepositoryModels = field(default_factory=_NoModels)


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """What the engine reports it serves; shapes include the batch dim (-1) when batching."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    platform: str
    # Where it computes: "cpu", "cuda:N" (metrics carry it so dashboards join DCGM's GPU series) or
    # "remote" (another server's engine).
    device: str = "cpu"
    # What the engine chose at load where the config left it a choice (a decoder, an execution
    # provider, a fallback from TensorRT): the model's config reports them among its parameters.
    details: dict[str, str] = field(default_factory=dict)
    # Calls it takes at once; 0: one per instance (instance_count). An engine that only awaits others
    # (a pipeline) takes many.
    concurrency: int = 0


@dataclass(frozen=True, slots=True)
class Health:
    ready: bool
    reason: str = ""
    details: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class ModelAdapter(Protocol):
    """An engine. Raise aisf.services.common.errors types only; callers decide retries by type.

    `infer` receives a validated request whose tensors match the metadata `load` returned,
    possibly a dynamic batch of several client requests merged along dim 0.
    """

    async def load(self, spec: ModelSpec) -> ModelMetadata: ...

    async def infer(self, request: InferRequest) -> InferResponse: ...

    async def health(self) -> Health: ...

    async def unload(self) -> None: ...


_OUT_OF_MEMORY_MARKERS = (
    "out of memory",
    "failed to allocate",
    "bad_alloc",
    "cudaerrormemoryallocation",
    "smaller than requested bytes",  # ONNX Runtime's capped arena
)


def engine_failure(exc: BaseException, model: str) -> AisfError:
    """Classify an engine's own exception: out-of-memory is its own type (REQ-ORC-02)."""
    text = str(exc)
    if isinstance(exc, MemoryError) or any(m in text.lower() for m in _OUT_OF_MEMORY_MARKERS):
        return EngineOutOfMemory(f"model '{model}': engine ran out of memory: {text}")
    return InternalError(f"model '{model}': engine failed: {type(exc).__name__}: {text}")


@runtime_checkable
class GenerativeAdapter(ModelAdapter, Protocol):
    """An engine that generates text. `stream` yields chunks as the engine produces them and must stop
    the engine's work when the consumer stops iterating (client disconnect cancels generation)."""

    def stream(self, request: GenerateRequest) -> AsyncIterator[TokenChunk]: ...

    def context_length(self) -> int: ...


@runtime_checkable
class EmbeddingAdapter(ModelAdapter, Protocol):
    async def embed(self, request: EmbedRequest) -> EmbedResponse: ...
