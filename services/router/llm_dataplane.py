"""The one LLM dataplane behind gRPC and REST: route, validate, deadline, breaker (or canned fallback),
cache, admit, stream, account, mirror to a shadow."""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from dataclasses import replace
from time import perf_counter_ns
from typing import TypeVar

from prometheus_client import CollectorRegistry

from aisf.adapters.base import EmbeddingAdapter, GenerativeAdapter, engine_failure
from aisf.services.common import deadlines, tracing
from aisf.services.common.errors import AisfError, EngineUnavailable, InvalidInput, ModelNotReady
from aisf.services.common.llm_metrics import EngineCounters, LlmMetrics, Trace
from aisf.services.common.llm_outputs import CacheMode, EmbedResult, GenerationChunk, ModelCard, ModelKind
from aisf.services.common.llm_types import (
    EmbedRequest,
    EmbedResponse,
    FinishReason,
    GenerateRequest,
    TokenChunk,
    Usage,
)
from aisf.services.common.request_log import request_log_of
from aisf.services.common.settings import Settings
from aisf.services.router import tool_calls
from aisf.services.router.breaker import Permit
from aisf.services.router.engine_calls import StreamLease, on_successor
from aisf.services.router.fallback import circuit_open
from aisf.services.router.llm_validation import validate_embed, validate_generate
from aisf.services.router.repository import LoadedModel, ModelRepository
from aisf.services.router.routing import TrafficRouter
from aisf.services.router.semantic_cache import (
    PersonalDataCheck,
    Probe,
    SemanticCache,
    cache_key,
    cacheable,
    served_embedder,
)
from aisf.services.router.semantic_index import CachedAnswer, MemoryIndex, RedisIndex, VectorIndex
from aisf.services.router.shadow import token_agreement
from aisf.services.router.shadows import ShadowRegistry, shadow_target

log = logging.getLogger(__name__)
T = TypeVar("T")


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

    def texts(self) -> tuple[str, ...]:
        return tuple("".join(self._texts[i]) for i in sorted(self._texts))

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
    """A cached answer as a stream: each choice's whole text in one chunk; the last carries the usage
    the engine reported when it answered (what the answer is worth, whoever serves it)."""
    last = len(answer.texts) - 1
    for index, (text, finish) in enumerate(zip(answer.texts, answer.finish_reasons, strict=True)):
        yield TokenChunk(text, index, finish, answer.usage if index == last else None)


_NO_PROBE = Probe("miss")  # the cache was not consulted: nothing to store


async def _canned(message: str, choices: int) -> AsyncGenerator[TokenChunk, None]:
    """A rule fallback's answer: the configured message as every choice."""
    for index in range(choices):
        yield TokenChunk(message, index, "stop", Usage())


def _generation_span(model: LoadedModel, cached: bool) -> tuple[str, dict[str, str | int]]:
    return f"generate {model.name}", {
        "aisf.model": model.name,
        "aisf.engine": model.platform,
        "aisf.cached": int(cached),
    }


class LlmDataplane:
    def __init__(
        self,
        repository: ModelRepository,
        metrics: LlmMetrics,
        cache: SemanticCache | None = None,
        shadows: ShadowRegistry | None = None,
    ) -> None:
        self._repository = repository
        self._routes = TrafficRouter(repository)
        self._metrics = metrics
        self._cache = cache
        self._shadows = shadows or ShadowRegistry(repository, 60.0)
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

    def _resolve(self, name: str, version: str, tenant: str, moved: bool = False) -> LoadedModel:
        """The version serving a request (its canary split is sticky by tenant when configured);
        `moved`: the one it waited for was unloaded, so not finding a successor is UNAVAILABLE."""
        try:
            return self._routes.resolve(name, version, {"tenant": tenant})
        except AisfError as exc:
            if not moved:
                raise
            raise ModelNotReady(
                f"model '{name}' was unloaded while the request waited: {exc.message}"
            ) from None

    async def _call(
        self, model: LoadedModel, asked: tuple[str, str], work: Callable[[LoadedModel], Awaitable[T]]
    ) -> T:
        """One engine call; it moves to the model's new version if the one it waited for retired."""
        return await on_successor(
            model,
            lambda on: on.calls.call(functools.partial(work, on)),
            lambda: self._resolve(*asked, "", moved=True),
            f"model '{asked[0]}'",
        )

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        model = self._resolve(request.model_name, request.model_version, "")
        if not isinstance(model.adapter, EmbeddingAdapter):
            raise InvalidInput(f"model: '{model.name}' is not an embedding model")
        validate_embed(request)
        trace = self._metrics.trace(model.name, str(model.version), "embed")

        async def embed_on(target: LoadedModel) -> EmbedResponse:
            adapter = target.adapter
            assert isinstance(adapter, EmbeddingAdapter)
            return await adapter.embed(replace(request, model_version=str(target.version)))

        try:
            deadlines.check(f"model '{model.name}'")
            permit = model.breaker.enter()
            if permit is None:
                raise circuit_open(model)
            try:
                response = await self._call(model, (request.model_name, request.model_version), embed_on)
            finally:
                model.breaker.leave(permit)
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
        model = self._resolve(request.model_name, request.model_version, request.tenant)
        adapter = model.adapter
        if not isinstance(adapter, GenerativeAdapter):
            raise InvalidInput(f"model: '{model.name}' does not generate text")
        version = str(model.version)
        asked = (request.model_name, request.model_version)
        request = replace(
            request,
            model_name=model.name,
            model_version=version,
            request_id=request.request_id or uuid.uuid4().hex,
        )
        trace = self._metrics.trace(
            model.name, version, "chat" if request.messages else "completion", request.params
        )
        head = GenerationChunk(request.request_id, model.name, version, int(time.time()))
        answer = _Answer(request.params.n)
        outcome = "cancelled"
        started = perf_counter_ns()
        permit: Permit | None = None
        try:
            validate_generate(request, adapter.context_length())
            deadlines.check(f"model '{model.name}'")
            lookup = await self._lookup(request, mode, trace)
            fallback = ""
            if lookup.hit:  # a cached answer costs the engine nothing: no permit, no probe spent
                source = _replay(lookup.hit)
            elif (permit := model.breaker.enter()) is None:
                lookup = _NO_PROBE
                source, fallback = self._fallback(model, request, trace)
            else:
                source = self._generation(model, asked, request, trace)
            cached = lookup.hit is not None
            head = replace(head, cached=cached, fallback=fallback)
            with tracing.span(lambda: _generation_span(model, cached)):
                async with aclosing(source) as chunks:
                    async for chunk in chunks:
                        if chunk.text:
                            trace.chunk(chunk.pieces)
                        answer.add(chunk)
                        yield replace(head, choice=chunk)
            self._store(lookup, answer)
            outcome = "fallback" if fallback else "success"
            yield replace(head, usage=answer.usage())
            # A shadow compares texts: an answer that may be a tool call is not one to compare.
            if not cached and not fallback and model.config.shadow is not None and not request.tools:
                self._mirror(model, request, answer, perf_counter_ns() - started)
        except AisfError as exc:
            outcome = exc.reason
            raise
        finally:
            if permit is not None:
                model.breaker.leave(permit)
            trace.finish(outcome, answer.usage())

    def _fallback(
        self, model: LoadedModel, request: GenerateRequest, trace: Trace
    ) -> tuple[AsyncGenerator[TokenChunk, None], str]:
        """The open circuit's answer and what gave it: another generative model, or a canned message."""
        fallback = model.config.fallback
        if fallback is None:
            raise circuit_open(model)
        if fallback.message:
            return _canned(fallback.message, request.params.n), "rule"  # counted as outcome "fallback"
        try:
            target = self._repository.get(fallback.model, fallback.version)
        except AisfError as exc:
            raise circuit_open(
                model, f", and its fallback '{fallback.model}' is not serving: {exc.message}"
            ) from None
        if not isinstance(target.adapter, GenerativeAdapter):
            raise circuit_open(model, f", and its fallback '{target.name}' does not generate text")
        return self._on_fallback(target, request, trace), target.name

    async def _on_fallback(
        self, target: LoadedModel, request: GenerateRequest, trace: Trace
    ) -> AsyncGenerator[TokenChunk, None]:
        permit = target.breaker.enter()
        if permit is None:
            raise circuit_open(target)
        moved = replace(request, model_name=target.name, model_version=str(target.version))
        try:
            async with aclosing(
                self._generation(target, (target.name, moved.model_version), moved, trace)
            ) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            target.breaker.leave(permit)

    def _generation(
        self, model: LoadedModel, asked: tuple[str, str], request: GenerateRequest, trace: Trace
    ) -> AsyncGenerator[TokenChunk, None]:
        """The engine's answer to a request, tools included: an engine that calls tools itself (an
        OpenAI server) gets them as they are; for any other the request is rewritten and the answer read
        back into tool calls."""
        if getattr(model.adapter, "calls_tools", False):
            return self._run(model, asked, request, trace)
        engine_request, calls = tool_calls.prepared(request)
        source = self._run(model, asked, engine_request, trace)
        return source if calls is None else calls.read(source)

    async def _held(
        self, model: LoadedModel, asked: tuple[str, str], tenant: str
    ) -> tuple[LoadedModel, StreamLease, AsyncExitStack]:
        """An engine slot for a stream, on whatever serves the model once the slot is free."""

        async def hold(on: LoadedModel) -> tuple[LoadedModel, StreamLease, AsyncExitStack]:
            stack = AsyncExitStack()
            return on, await stack.enter_async_context(on.calls.stream()), stack

        return await on_successor(
            model, hold, lambda: self._resolve(*asked, tenant, moved=True), f"model '{asked[0]}'"
        )

    async def _run(
        self, model: LoadedModel, asked: tuple[str, str], request: GenerateRequest, trace: Trace
    ) -> AsyncGenerator[TokenChunk, None]:
        model, lease, slot = await self._held(model, asked, request.tenant)
        adapter = model.adapter
        assert isinstance(adapter, GenerativeAdapter)
        async with slot:
            trace.engine_started()
            try:
                async with _closing(adapter.stream(request)) as stream:
                    async for chunk in stream:
                        if chunk.finish_reason in ("cancelled", "error"):  # e.g. the model is unloading
                            raise EngineUnavailable(
                                f"model '{model.name}' stopped generating ({chunk.finish_reason})"
                            )
                        if lease.revoked:
                            raise EngineUnavailable(
                                f"model '{model.name}' is being unloaded: the generation was cut off"
                            )
                        lease.waiting_since = time.monotonic()  # the stall watchdog's clock
                        yield chunk
                        lease.waiting_since = 0.0
            except AisfError:
                raise
            except Exception as exc:
                raise engine_failure(exc, model.name) from exc
            finally:
                trace.engine_stopped()

    def _mirror(self, live: LoadedModel, request: GenerateRequest, answer: _Answer, elapsed: int) -> None:
        config = live.config.shadow
        assert config is not None
        target, target_version = shadow_target(live.name, config)

        async def copy(original: GenerateRequest) -> tuple[str, ...]:
            model = self._repository.get(target, target_version)
            moved = replace(original, model_name=model.name, model_version=str(model.version))
            trace = self._metrics.trace(model.name, str(model.version), "shadow", moved.params)
            shadowed = _Answer(moved.params.n)
            outcome = "cancelled"
            permit = model.breaker.enter()  # an open shadow circuit gets no copies either
            try:
                if permit is None:
                    raise circuit_open(model)
                async with aclosing(self._run(model, (target, target_version), moved, trace)) as chunks:
                    async for chunk in chunks:
                        shadowed.add(chunk)
                outcome = "success"
            except AisfError as exc:
                outcome = exc.reason
                raise
            finally:
                if permit is not None:
                    model.breaker.leave(permit)
                trace.finish(outcome, shadowed.usage())
            return shadowed.texts()

        def agree(mine: tuple[str, ...], theirs: tuple[str, ...]) -> bool:
            return len(mine) == len(theirs) and all(
                token_agreement(a, b) >= config.text_agreement for a, b in zip(mine, theirs, strict=True)
            )

        mirror = self._shadows.mirror(live, copy, agree)
        if mirror is not None:
            mirror.offer(request, answer.texts(), elapsed)

    async def _lookup(self, request: GenerateRequest, mode: CacheMode, trace: Trace) -> Probe:
        if self._cache is None:
            return _NO_PROBE
        if not cacheable(request, mode):
            trace.cache = "bypass" if mode is CacheMode.BYPASS else "uncacheable"
            self._metrics.cache_result(request.model_name, trace.cache)
            return _NO_PROBE
        started = perf_counter_ns()
        probe = await self._cache.lookup(cache_key(request, request.model_version))
        trace.cache = probe.result
        self._metrics.cache_result(request.model_name, probe.result, perf_counter_ns() - started)
        return probe

    def _store(self, lookup: Probe, answer: _Answer) -> None:
        finished = answer.finished()
        if self._cache is not None and lookup.vector is not None and finished is not None:
            self._cache.store_later(lookup, finished)

    def use_personal_data_check(self, check: PersonalDataCheck) -> None:
        """The semantic cache keeps only answers `check` cleared (see SemanticCache); no cache: no-op."""
        if self._cache is not None:
            self._cache.use_personal_data_check(check, self._metrics.cache_write_skipped)

    @property
    def caches(self) -> bool:
        return self._cache is not None

    async def close(self) -> None:
        if self._cache is not None:
            await self._cache.close()


def build_llm_dataplane(
    settings: Settings, registry: CollectorRegistry, repository: ModelRepository, shadows: ShadowRegistry
) -> LlmDataplane:
    """The LLM dataplane as configured: its metrics, and the semantic cache when an embedding model
    is named (indexed in Redis when a URL is given, in this process otherwise)."""
    metrics = LlmMetrics(registry, lambda: engine_counters(repository), request_log_of(settings))
    cache = None
    if settings.semantic_cache_embedding_model:
        index: VectorIndex
        if settings.semantic_cache_redis_url:
            index = RedisIndex(
                settings.semantic_cache_redis_url,
                settings.semantic_cache_ttl_s,
                settings.semantic_cache_max_entries,
                timeout_s=settings.semantic_cache_timeout_s,
            )
        else:
            index = MemoryIndex(
                settings.semantic_cache_ttl_s,
                settings.semantic_cache_max_entries,
                max_scopes=settings.semantic_cache_max_scopes,
            )
        embedder = served_embedder(repository, settings.semantic_cache_embedding_model)
        cache = SemanticCache(
            index,
            embedder,
            settings.semantic_cache_threshold,
            settings.semantic_cache_timeout_s,
            settings.semantic_cache_cooldown_s,
        )
    return LlmDataplane(repository, metrics, cache, shadows)
