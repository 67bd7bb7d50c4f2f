"""The adapter contract (DESIGN.md §3): what an engine must offer the foundation, nothing more."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from aisf.services.common.errors import AisfError, EngineOutOfMemory, InternalError
from aisf.services.common.llm_types import EmbedRequest, EmbedResponse, GenerateRequest, TokenChunk
from aisf.services.common.model_config import ModelConfig
from aisf.services.common.tensors import InferRequest, InferResponse, TensorSpec
from aisf.services.common.threads import BlockingPool


def _own_threads() -> BlockingPool:
    return BlockingPool("engine", 1)


def _never() -> bool:
    return False


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model version to load: its config, the folder holding its artifacts, the threads its blocking
    engine calls run on (the repository sizes them by instance_count; nothing else uses them), and
    whether its circuit is open (remote engines stop retrying then)."""

    name: str
    version: int
    path: Path
    config: ModelConfig
    threads: BlockingPool = field(default_factory=_own_threads)
    circuit_open: Callable[[], bool] = _never


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """What the engine reports it serves; shapes include the batch dim (-1) when batching."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    platform: str
    # Where it computes: "cpu", "cuda:N" (metrics carry it so dashboards join DCGM's GPU series) or
    # "remote" (another server's engine).
    device: str = "cpu"


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
