"""Semantic cache (REQ-OPT-04): a finished answer is reused for a later prompt whose embedding is close
enough, within one scope: tenant, model, model version, conversation context and sampling parameters."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from aisf.adapters.base import EmbeddingAdapter
from aisf.services.common.errors import InvalidInput
from aisf.services.common.llm_outputs import CacheMode
from aisf.services.common.llm_types import EmbedRequest, GenerateRequest
from aisf.services.router.repository import ModelRepository
from aisf.services.router.semantic_index import CachedAnswer, Vector, VectorIndex

Embedder = Callable[[str], Awaitable[Vector]]


@dataclass(frozen=True, slots=True)
class CacheKey:
    """Where a request's answer may be found (`scope`, matched exactly) and what is compared (`text`)."""

    scope: str
    text: str


def cacheable(request: GenerateRequest, mode: CacheMode) -> bool:
    """Only deterministic requests by default: a sampled answer replayed would pass for a fresh sample."""
    if mode is CacheMode.BYPASS:
        return False
    return request.params.deterministic or mode is CacheMode.OPT_IN


def cache_key(request: GenerateRequest, model_version: str) -> CacheKey:
    """A chat compares its last message; the earlier turns must match exactly, so a paraphrase of the
    question hits only within the same conversation."""
    if request.messages:
        *context, last = request.messages
        kind, text = "chat", last.content
        turns = [[m.role, m.content] for m in context] + [[last.role]]
    else:
        kind, text, turns = "completion", request.prompt or "", []
    p = request.params
    material = [
        request.tenant,
        request.model_name,
        model_version,
        kind,
        turns,
        [p.max_tokens, p.temperature, p.top_p, list(p.stop), p.seed, p.n],
    ]
    digest = hashlib.sha256(json.dumps(material, ensure_ascii=False).encode()).hexdigest()
    return CacheKey(digest[:40], text)


class SemanticCache:
    def __init__(self, index: VectorIndex, embed: Embedder, threshold: float) -> None:
        self._index = index
        self._embed = embed
        self.threshold = threshold

    async def lookup(self, key: CacheKey) -> tuple[Vector, CachedAnswer | None]:
        """The prompt's embedding (to store the answer under on a miss) and the answer it hits, if any."""
        vector = await self._embed(key.text)
        found = await self._index.nearest(key.scope, vector)
        if found is None or found[0] < self.threshold:
            return vector, None
        return vector, found[1]

    async def store(self, key: CacheKey, vector: Vector, answer: CachedAnswer) -> None:
        await self._index.add(key.scope, vector, answer)

    async def close(self) -> None:
        await self._index.close()


def served_embedder(repository: ModelRepository, model_name: str) -> Embedder:
    """Embeds with a model the router serves, so the cache's embedding model is loaded, versioned and
    reported like any other."""

    async def embed(text: str) -> Vector:
        model = repository.get(model_name)
        if not isinstance(model.adapter, EmbeddingAdapter):
            raise InvalidInput(f"semantic cache: model '{model_name}' is not an embedding model")
        response = await model.adapter.embed(EmbedRequest(model_name, (text,), str(model.version)))
        return np.asarray(response.vectors[0], dtype=np.float32)

    return embed
