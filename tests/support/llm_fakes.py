"""Scripted LLM-lane engines for fast tests, and a loaded repository around them."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import yaml

from aisf.adapters.base import Health, ModelMetadata, ModelSpec
from aisf.adapters.registry import AdapterRegistry
from aisf.services.common.db.engine import open_database
from aisf.services.common.db.model_store import ModelStore
from aisf.services.common.errors import Unsupported
from aisf.services.common.llm_types import EmbedRequest, EmbedResponse, GenerateRequest, TokenChunk, Usage
from aisf.services.common.tensors import InferRequest, InferResponse
from aisf.services.router.repository import ModelRepository

PROMPT_TOKENS = 3


class ScriptedLlm:
    """Streams `tokens` (per choice, at most max_tokens) `delay_s` apart, and records what it was asked
    and whether its stream was closed; `fail_after` raises a plain exception after that many tokens."""

    def __init__(
        self,
        tokens: tuple[str, ...] = ("Hello", " world", "!"),
        delay_s: float = 0.0,
        fail_after: int | None = None,
        context: int = 64,
    ) -> None:
        self.tokens = tokens
        self.delay_s = delay_s
        self.fail_after = fail_after
        self.context = context
        self.requests: list[GenerateRequest] = []
        self.produced = 0
        self.running = 0
        self.closed = 0

    async def load(self, spec: ModelSpec) -> ModelMetadata:
        return ModelMetadata([], [], "scripted")

    async def infer(self, request: InferRequest) -> InferResponse:
        raise Unsupported("scripted LLM: no tensors")

    async def health(self) -> Health:
        return Health(ready=True)

    async def unload(self) -> None:
        return None

    def context_length(self) -> int:
        return self.context

    async def stream(self, request: GenerateRequest) -> AsyncIterator[TokenChunk]:
        self.requests.append(request)
        self.running += 1
        try:
            budget = request.params.max_tokens or len(self.tokens)
            generated = 0
            for index in range(request.params.n):
                for token in self.tokens[:budget]:
                    await asyncio.sleep(self.delay_s)
                    if self.fail_after is not None and self.produced >= self.fail_after:
                        raise RuntimeError("engine exploded")
                    self.produced += 1
                    generated += 1
                    yield TokenChunk(token, index)
                finish = "length" if budget < len(self.tokens) else "stop"
                yield TokenChunk("", index, finish, Usage(PROMPT_TOKENS, generated))
        finally:
            self.running -= 1
            self.closed += 1


class WordEmbedder:
    """Bag-of-words vectors: texts with the same words (any case or punctuation) embed identically."""

    dimensions = 64

    def __init__(self) -> None:
        self.calls = 0

    async def load(self, spec: ModelSpec) -> ModelMetadata:
        return ModelMetadata([], [], "words")

    async def infer(self, request: InferRequest) -> InferResponse:
        raise Unsupported("word embedder: no tensors")

    async def health(self) -> Health:
        return Health(ready=True)

    async def unload(self) -> None:
        return None

    def vector(self, text: str) -> list[float]:
        vector = np.zeros(self.dimensions, dtype=np.float32)
        for word in re.findall(r"[a-z]+", text.lower()):
            vector[sum(map(ord, word)) % self.dimensions] += 1.0
        norm = float(np.linalg.norm(vector)) or 1.0
        return (vector / norm).tolist()

    async def embed(self, request: EmbedRequest) -> EmbedResponse:
        self.calls += 1
        words = sum(len(t.split()) for t in request.inputs)
        return EmbedResponse([self.vector(t) for t in request.inputs], Usage(prompt_tokens=words))


def write_model(root: Path, name: str, backend: str, instance_count: int = 1) -> None:
    (root / name / "1").mkdir(parents=True, exist_ok=True)
    config = {"backend": backend, "instance_count": instance_count}
    (root / name / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")


@asynccontextmanager
async def loaded_repository(root: Path, engines: dict[str, object]) -> AsyncIterator[ModelRepository]:
    """A repository (SQLite history) serving each engine instance as a model of the same name."""
    registry = AdapterRegistry()
    for name, engine in engines.items():
        registry.register(name, lambda engine=engine: engine)  # type: ignore[misc]
        write_model(root / "models", name, name)
    database = open_database(f"sqlite:///{root / 'meta.db'}")
    repository = ModelRepository(root / "models", registry, ModelStore(database))
    try:
        await repository.load_all()
        yield repository
    finally:
        await repository.close()
        database.dispose()
