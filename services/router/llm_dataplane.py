"""The one LLM dataplane behind gRPC and REST: resolve, validate, cache, admit, stream, account."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, replace
from time import perf_counter_ns

from prometheus_client import CollectorRegistry

from aisf.adapters.base import EmbeddingAdapter, GenerativeAdapter, engine_failure
from aisf.services.common.errors import AisfError, EngineUnavailable, InvalidInput
from aisf.services.common.llm_metrics import EngineCounters, LlmMetrics, Trace
from aisf.services.common.llm_outputs import CacheMode, EmbedResult, GenerationChunk, ModelCard, ModelKind
from aisf.services.common.llm_types import EmbedRequest, FinishReason, GenerateRequest, TokenChunk, Usage
from aisf.services.common.settings import Settings
from aisf.services.router.llm_admission import Admission
from aisf.services.router.llm_validation import validate_embed, validate_generate
from aisf.services.router.repository import LoadedModel, ModelRepository
from aisf.services.router.semantic_cache import CacheKey, SemanticCache, cache_key, cacheable, served_embedder
from aisf.services.router.semantic_index import CachedAnswer, MemoryIndex, RedisIndex, Vector, VectorIndex

log = logging.getLogger(__name__)


def engine_counters(repository: ModelRepository) -> Iterator[EngineCounters]:
    """The counters engines keep themselves (llama.cpp: speculative decoding, tokens sampled)."""
    for model in repository.ready():
        speculative = getattr(model.adapter, "speculative_stats", None)
        tokens = getattr(model.adapter, "tokens_generated", None)
        if callable(speculative) or isinstance(tokens, int):
            yield EngineCounters(
                model.name,
                str(model.version),
                speculative() if callable(speculative) else None,
                tokens if isinstance(tokens, int) else None,
            )


class _Answer:
    """Collects a generation as it streams: each choice's text and finish reason, and the usage."""

    def __init__(self, choices: int) -> None:
        self._texts: dict[int, list[str]] = {i: [] for i in range(choices)}
        self._finish: dict[int, FinishReason] = {}
        self._usage = Usage()

    def add(self, chunk: TokenChunk) -> None:
        self._texts.setdefault(chunk.index, []).append(chunk.text)
        if chunk.finish_reason is not None:
            self._finish[chunk.index] = chunk.finish_reason
        if chunk.usage is not None:  # the request's usage so far, every choice included
            self._usage = chunk.usage

    def usage(self) -> Usage:
        return self._usage

    def finished(self) -> CachedAnswer | None:
        """The whole answer when every choice ended normally: only those are worth replaying."""
        indices = sorted(self._texts)
        if any(self._finish.get(i) not in ("stop", "length") for i in indices):
            return None
        texts = tuple("".join(self._texts[i]) for i in indices)
        return CachedAnswer(texts, tuple(self._finish[i] for i in indices), self.usage())


@asynccontextmanager
async def _closing(stream: AsyncIterator[TokenChunk]) -> AsyncIterator[AsyncIterator[TokenChunk]]:
    """Close the engine's stream however the consumer leaves: that is what stops its generation
    (the protocol promises an AsyncIterator; async generators, the usual kind, need the aclose)."""
    try:
        yield stream
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()


async def _replay(answer: CachedAnswer) -> AsyncGenerator[TokenChunk, None]:
    """A cached answer as a stream: each choice's whole text in one chunk."""
    for index, (text, finish) in enumerate(zip(answer.texts, answer.finish_reasons, strict=True)):
        yield TokenChunk(text, index, finish)


@dataclass(slots=True)
class _Lookup:
    key: CacheKey | None = None
    vector: Vector | None = None
    hit: CachedAnswer | None = None


class LlmDataplane:
    def __init__(
        self,
        repository: ModelRepository,
        metrics: LlmMetrics,
        cache: SemanticCache | None = None,
        max_waiting: int = 32,
    ) -> None:
        self._repository = repository
        self._metrics = metrics
        self._cache = cache
        self._max_waiting = max_waiting
        self._admissions: dict[tuple[str, int], tuple[object, Admission]] = {}
        self._first_seen: dict[tuple[str, int], int] = {}

    def models(self) -> list[ModelCard]:
        cards: list[ModelCard] = []
        for model in sorted(self._repository.ready(), key=lambda m: (m.name, m.version)):
            seen = self._first_seen.setdefault((model.name, model.version), int(time.time()))
            if isinstance(model.adapter, GenerativeAdapter):
                length = model.adapter.context_length()
                cards.append(ModelCard(model.name, str(model.version), ModelKind.GENERATIVE, seen, length))
            elif isinstance(model.adapter, EmbeddingAdapter):
                cards.append(ModelCard(model.name, str(model.version), ModelKind.EMBEDDING, seen))
        return cards

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        model = self._repository.get(request.model_name, request.model_version)
        if not isinstance(model.adapter, EmbeddingAdapter):
            raise InvalidInput(f"model: '{model.name}' is not an embedding model")
        validate_embed(request)
        trace = self._metrics.trace(model.name, str(model.version), "embed")
        try:
            response = await model.adapter.embed(replace(request, model_version=str(model.version)))
        except AisfError as exc:
            trace.finish(exc.reason, None)
            raise
        except Exception as exc:
            trace.finish("internal", None)
            raise engine_failure(exc, model.name) from exc
        trace.finish("success", response.usage)
        return EmbedResult(model.name, str(model.version), response)

    async def generate(
        self, request: GenerateRequest, mode: CacheMode = CacheMode.DEFAULT
    ) -> AsyncGenerator[GenerationChunk, None]:
        """Chunks as the engine makes them, then one with the usage totals. Closing the iterator (or
        cancelling its consumer) stops the engine."""
        model = self._repository.get(request.model_name, request.model_version)
        adapter = model.adapter
        if not isinstance(adapter, GenerativeAdapter):
            raise InvalidInput(f"model: '{model.name}' does not generate text")
        version = str(model.version)
        request = replace(request, model_version=version, request_id=request.request_id or uuid.uuid4().hex)
        trace = self._metrics.trace(
            model.name, version, "chat" if request.messages else "completion", request.params
        )
        head = GenerationChunk(request.request_id, model.name, version, int(time.time()))
        answer = _Answer(request.params.n)
        outcome = "cancelled"
        try:
            validate_generate(request, adapter.context_length())
            lookup = await self._lookup(request, mode, trace)
            cached = lookup.hit is not None
            source = _replay(lookup.hit) if lookup.hit else self._run(model, adapter, request, trace)
            async with aclosing(source) as chunks:
                async for chunk in chunks:
                    if chunk.text:
                        trace.chunk()
                    answer.add(chunk)
                    yield replace(head, choice=chunk, cached=cached)
            await self._store(lookup, answer)
            outcome = "success"
            yield replace(head, usage=answer.usage(), cached=cached)
        except AisfError as exc:
            outcome = exc.reason
            raise
        finally:
            trace.finish(outcome, answer.usage())

    async def _run(
        self, model: LoadedModel, adapter: GenerativeAdapter, request: GenerateRequest, trace: Trace
    ) -> AsyncGenerator[TokenChunk, None]:
        async with self._admission(model).slot():
            trace.engine_started()
            try:
                async with _closing(adapter.stream(request)) as stream:
                    async for chunk in stream:
                        if chunk.finish_reason in ("cancelled", "error"):  # e.g. the model is unloading
                            raise EngineUnavailable(
                                f"model '{model.name}' stopped generating ({chunk.finish_reason})"
                            )
                        yield chunk
            except AisfError:
                raise
            except Exception as exc:
                raise engine_failure(exc, model.name) from exc
            finally:
                trace.engine_stopped()

    def _admission(self, model: LoadedModel) -> Admission:
        """One admission per loaded engine; a reloaded model gets a fresh one."""
        key = (model.name, model.version)
        known = self._admissions.get(key)
        if known is None or known[0] is not model.adapter:
            known = (model.adapter, Admission(model.name, model.config.instance_count, self._max_waiting))
            self._admissions[key] = known
        return known[1]

    async def _lookup(self, request: GenerateRequest, mode: CacheMode, trace: Trace) -> _Lookup:
        if self._cache is None:
            return _Lookup()
        if not cacheable(request, mode):
            trace.cache = "bypass" if mode is CacheMode.BYPASS else "uncacheable"
            self._metrics.cache_result(request.model_name, trace.cache)
            return _Lookup()
        key = cache_key(request, request.model_version)
        started = perf_counter_ns()
        try:
            vector, hit = await self._cache.lookup(key)
        except AisfError as exc:
            # The cache only saves time: without it the request is still answered.
            log.warning("semantic cache unavailable", extra={"reason": exc.reason, "detail": exc.message})
            trace.cache = "unavailable"
            self._metrics.cache_result(request.model_name, trace.cache, perf_counter_ns() - started)
            return _Lookup()
        trace.cache = "hit" if hit else "miss"
        self._metrics.cache_result(request.model_name, trace.cache, perf_counter_ns() - started)
        return _Lookup(key, vector, hit)

    async def _store(self, lookup: _Lookup, answer: _Answer) -> None:
        finished = answer.finished()
        if self._cache is None or lookup.key is None or lookup.vector is None or lookup.hit or not finished:
            return
        try:
            await self._cache.store(lookup.key, lookup.vector, finished)
        except AisfError as exc:
            log.warning("semantic cache store failed", extra={"reason": exc.reason, "detail": exc.message})

    async def close(self) -> None:
        if self._cache is not None:
            await self._cache.close()


def build_llm_dataplane(
    settings: Settings, registry: CollectorRegistry, repository: ModelRepository
) -> LlmDataplane:
    """The LLM dataplane as configured: its metrics, and the semantic cache when an embedding model
    is named (indexed in Redis when a URL is given, in this process otherwise)."""
    metrics = LlmMetrics(registry, engines=lambda: engine_counters(repository))
    cache = None
    if settings.semantic_cache_embedding_model:
        index: VectorIndex
        if settings.semantic_cache_redis_url:
            index = RedisIndex(
                settings.semantic_cache_redis_url,
                settings.semantic_cache_ttl_s,
                settings.semantic_cache_max_entries,
            )
        else:
            index = MemoryIndex(settings.semantic_cache_ttl_s, settings.semantic_cache_max_entries)
        embedder = served_embedder(repository, settings.semantic_cache_embedding_model)
        cache = SemanticCache(index, embedder, settings.semantic_cache_threshold)
    return LlmDataplane(repository, metrics, cache, settings.llm_max_waiting)
