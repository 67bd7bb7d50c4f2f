"""Semantic cache (REQ-OPT-04): a finished answer is reused for a later prompt whose embedding is close
enough, within one scope: tenant, model, model version, conversation context, sampling parameters, and
the embedding model and version that made the vectors (vectors of two embedders are not comparable).

The cache only ever saves time: every failure (the embedder, the index, a hung Redis) is logged, counted
and answered as a miss, and after one the cache rests for a cool-down (breaker-style) so a dead index
costs the requests nothing."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from aisf.adapters.base import EmbeddingAdapter
from aisf.services.common.errors import AisfError, InvalidInput
from aisf.services.common.llm_outputs import CacheMode
from aisf.services.common.llm_types import EmbedRequest, GenerateRequest
from aisf.services.router.repository import ModelRepository
from aisf.services.router.semantic_index import CachedAnswer, Vector, VectorIndex

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Embedding:
    vector: Vector
    embedder: str  # "model:version": part of the scope


Embedder = Callable[[str], Awaitable[Embedding]]
# Whether any of the texts holds personal data (the pii service's Detect).
PersonalDataCheck = Callable[[tuple[str, ...]], Awaitable[bool]]
_PENDING_WRITES = 256
_PII_CHECK_S = 5.0  # a check waits for the pii role's models to load after a restart
Clock = Callable[[], float]
Result = Literal["hit", "miss", "unavailable", "resting"]


@dataclass(frozen=True, slots=True)
class CacheKey:
    """Where a request's answer may be found (`scope`, matched exactly) and what is compared (`text`)."""

    scope: str
    text: str


@dataclass(frozen=True, slots=True)
class Probe:
    """A lookup's outcome; a miss carries where (and under which vector) to store the answer."""

    result: Result
    hit: CachedAnswer | None = None
    scope: str = ""
    vector: Vector | None = None
    text: str = ""
    """The prompt a miss embedded (for the personal-data check before its answer is kept)."""


def cacheable(request: GenerateRequest, mode: CacheMode) -> bool:
    """Only deterministic requests by default: a sampled answer replayed would pass for a fresh sample.
    Never one that asks for log probabilities (a stored answer keeps only its text), nor one with tools
    or tool results (the scope keys a conversation by its texts)."""
    if mode is CacheMode.BYPASS or request.params.logprobs is not None or _has_tools(request):
        return False
    return request.params.deterministic or mode is CacheMode.OPT_IN


def _has_tools(request: GenerateRequest) -> bool:
    return bool(request.tools) or any(m.tool_calls or m.role == "tool" for m in request.messages)


def _digest(material: object) -> str:
    return hashlib.sha256(json.dumps(material, ensure_ascii=False).encode()).hexdigest()[:40]


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
        [p.response_format.type, p.response_format.schema],  # a JSON answer is not a text answer
        [p.presence_penalty, p.frequency_penalty, list(p.logit_bias)],
    ]
    return CacheKey(_digest(material), text)


class SemanticCache:
    def __init__(
        self,
        index: VectorIndex,
        embed: Embedder,
        threshold: float,
        timeout_s: float = 0.25,
        cooldown_s: float = 5.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._index = index
        self._embed = embed
        self.threshold = threshold
        self._timeout_s = timeout_s
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._resting_until = 0.0
        self._personal: PersonalDataCheck | None = None
        self._skipped: Callable[[str], None] = lambda reason: None
        self._writes: set[asyncio.Task[None]] = set()

    async def lookup(self, key: CacheKey) -> Probe:
        """The answer a close prompt of the scope got, if any; never raises."""
        if self._clock() < self._resting_until:
            return Probe("resting")
        try:
            embedding = await self._embed(key.text)
            scope = _digest([key.scope, embedding.embedder])
            async with asyncio.timeout(self._timeout_s):
                found = await self._index.nearest(scope, embedding.vector)
        except Exception as exc:
            self._failed("lookup", exc)
            return Probe("unavailable")
        if found is None or found[0] < self.threshold:
            return Probe("miss", None, scope, embedding.vector, key.text)
        return Probe("hit", found[1])

    def use_personal_data_check(self, check: PersonalDataCheck, skipped: Callable[[str], None]) -> None:
        """From now on an answer is kept only once `check` said neither it nor its prompt holds personal
        data (the pii service; a cache never keeps what it could not check). `skipped(reason)` counts
        the answers not kept."""
        self._personal = check
        self._skipped = skipped

    def store_later(self, probe: Probe, answer: CachedAnswer) -> None:
        """Keep the answer off the request's path (the check and the write take milliseconds the
        caller must not wait for); more than a few hundred waiting writes: this one is dropped."""
        if len(self._writes) >= _PENDING_WRITES:
            self._skipped("backlog")
            return
        task = asyncio.get_running_loop().create_task(self.store(probe, answer))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def store(self, probe: Probe, answer: CachedAnswer) -> None:
        """Keep a missed request's finished answer; never raises."""
        if probe.vector is None or self._clock() < self._resting_until:
            return
        if self._personal is not None:
            try:
                async with asyncio.timeout(_PII_CHECK_S):
                    personal = await self._personal((probe.text, *answer.texts))
            except Exception as exc:
                self._skipped("pii_unavailable")
                log.warning(
                    "semantic cache kept nothing it could not check for personal data",
                    extra={
                        "detail": (exc.message if isinstance(exc, AisfError) else type(exc).__name__)[:300]
                    },
                )
                return
            if personal:
                self._skipped("personal_data")
                return
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._index.add(probe.scope, probe.vector, answer)
        except Exception as exc:
            self._failed("store", exc)

    def _failed(self, step: str, exc: Exception) -> None:
        self._resting_until = self._clock() + self._cooldown_s
        detail = exc.message if isinstance(exc, AisfError) else f"{type(exc).__name__}: {exc}"
        log.warning(
            "semantic cache skipped",
            extra={"step": step, "detail": detail[:300], "resting_s": self._cooldown_s},
        )

    async def close(self) -> None:
        for task in list(self._writes):
            task.cancel()
        await self._index.close()


def served_embedder(repository: ModelRepository, model_name: str) -> Embedder:
    """Embeds with a model the router serves, so the cache's embedding model is loaded, versioned and
    reported like any other; the version that embedded goes into the scope."""

    async def embed(text: str) -> Embedding:
        model = repository.get(model_name)
        if not isinstance(model.adapter, EmbeddingAdapter):
            raise InvalidInput(f"semantic cache: model '{model_name}' is not an embedding model")
        response = await model.adapter.embed(EmbedRequest(model_name, (text,), str(model.version)))
        return Embedding(np.asarray(response.vectors[0], dtype=np.float32), f"{model_name}:{model.version}")

    return embed
