"""The semantic cache answers close prompts within one scope only, and only deterministic requests.

The dataplane tests use real engines: llm-demo on llama.cpp answers, all-MiniLM-L6-v2 embeds prompts
(paraphrases of one question land close together, unrelated questions far apart)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import replace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from aisf.services.common.errors import EngineUnavailable
from aisf.services.common.llm_metrics import LlmMetrics
from aisf.services.common.llm_outputs import CacheMode, GenerationChunk
from aisf.services.common.llm_types import ChatMessage, GenerateRequest, ResponseFormat, SamplingParams, Usage
from aisf.services.router.llm_dataplane import LlmDataplane
from aisf.services.router.repository import ModelRepository
from aisf.services.router.semantic_cache import CacheKey, Embedding, SemanticCache, cache_key, served_embedder
from aisf.services.router.semantic_index import CachedAnswer, MemoryIndex, RedisIndex, VectorIndex
from tests.support.llm import EMBEDDER, LLM, build_llm_models, llama, served_repository

REDIS_URL = "redis://127.0.0.1:6379/0"
ANSWER = CachedAnswer(("Paris.",), ("stop",), Usage(5, 2))


def chat(
    text: str, tenant: str = "acme", temperature: float = 0.0, history: tuple[str, ...] = ()
) -> GenerateRequest:
    turns = tuple(ChatMessage("user", h) for h in history) + (ChatMessage("user", text),)
    params = SamplingParams(temperature=temperature, max_tokens=8)
    return GenerateRequest(LLM, messages=turns, params=params, tenant=tenant)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


@pytest.fixture(params=["memory", "redis"])
async def index_and_clock(request: pytest.FixtureRequest) -> AsyncIterator[tuple[VectorIndex, Clock]]:
    clock = Clock()
    index: VectorIndex
    if request.param == "memory":
        index = MemoryIndex(ttl_s=60, max_entries=2, clock=clock)
    else:
        index = RedisIndex(
            REDIS_URL, ttl_s=60, max_entries=2, prefix=f"aisf-test:{uuid.uuid4().hex}:", clock=clock
        )
    yield index, clock
    await index.close()


async def test_the_nearest_entry_of_the_scope_is_found_with_its_similarity(
    index_and_clock: tuple[VectorIndex, Clock],
) -> None:
    index, _ = index_and_clock
    await index.add("s", unit(1, 0, 0), ANSWER)
    await index.add("s", unit(0, 1, 0), replace(ANSWER, texts=("Berlin.",)))
    found = await index.nearest("s", unit(0.1, 1, 0))
    assert found is not None and found[1].texts == ("Berlin.",) and found[0] > 0.99
    assert await index.nearest("other scope", unit(1, 0, 0)) is None


async def test_entries_expire_after_the_ttl_and_the_oldest_go_first_when_full(
    index_and_clock: tuple[VectorIndex, Clock],
) -> None:
    index, clock = index_and_clock
    await index.add("s", unit(1, 0, 0), ANSWER)
    clock.now += 1
    await index.add("s", unit(0, 1, 0), ANSWER)
    clock.now += 1
    await index.add("s", unit(0, 0, 1), ANSWER)
    found = await index.nearest("s", unit(1, 0, 0))
    assert found is not None and found[0] < 0.5  # the first entry was evicted
    clock.now += 61
    assert await index.nearest("s", unit(0, 0, 1)) is None


async def test_the_in_process_index_keeps_a_bounded_number_of_scopes_least_recently_used_out() -> None:
    """The landed main kept every scope it had seen (one per tenant, model and parameters) forever."""
    index = MemoryIndex(ttl_s=60, max_entries=2, clock=Clock(), max_scopes=3)
    for scope in ("a", "b", "c"):
        await index.add(scope, unit(1, 0, 0), ANSWER)
    assert await index.nearest("a", unit(1, 0, 0)) is not None  # "a" is now the most recent
    await index.add("d", unit(1, 0, 0), ANSWER)
    assert index.scopes() == 3
    assert await index.nearest("b", unit(1, 0, 0)) is None
    assert await index.nearest("a", unit(1, 0, 0)) is not None


async def test_an_unreachable_redis_is_reported_as_unavailable() -> None:
    index = RedisIndex("redis://127.0.0.1:1/0", ttl_s=60, max_entries=10)
    with pytest.raises(EngineUnavailable, match="semantic cache index"):
        await index.nearest("s", unit(1, 0))
    await index.close()


def test_the_scope_separates_tenants_models_versions_parameters_and_history() -> None:
    base = chat("What is the capital of France?")
    scope = cache_key(base, "1").scope
    assert cache_key(chat("totally different words"), "1").scope == scope
    assert cache_key(chat("What is the capital of France?", tenant="other"), "1").scope != scope
    assert cache_key(base, "2").scope != scope
    assert cache_key(replace(base, model_name="other"), "1").scope != scope
    assert cache_key(chat("What is the capital of France?", temperature=0.5), "1").scope != scope
    assert cache_key(chat("What is the capital of France?", history=("earlier",)), "1").scope != scope
    as_json = replace(base, params=replace(base.params, response_format=ResponseFormat("json_object")))
    assert cache_key(as_json, "1").scope != scope  # a JSON answer never replays for a text request
    assert cache_key(base, "1").text == "What is the capital of France?"


QUESTION = "What is the capital of France?"
PARAPHRASE = "What's the capital city of France?"  # cosine similarity 0.96 under MiniLM


@pytest.fixture(scope="module")
async def repository(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ModelRepository]:
    root = tmp_path_factory.mktemp("llm-cache")
    build_llm_models(root / "models")
    async with served_repository(root) as repository:
        yield repository


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def cached_dataplane(
    repository: ModelRepository, registry: CollectorRegistry, embedder: str = EMBEDDER
) -> LlmDataplane:
    cache = SemanticCache(MemoryIndex(60, 100), served_embedder(repository, embedder), threshold=0.9)
    return LlmDataplane(repository, LlmMetrics(registry), cache)


async def answer(
    dataplane: LlmDataplane, request: GenerateRequest, mode: CacheMode = CacheMode.DEFAULT
) -> tuple[str, bool]:
    chunks: list[GenerationChunk] = [c async for c in dataplane.generate(request, mode)]
    return "".join(c.choice.text for c in chunks if c.choice), all(c.cached for c in chunks)


def lookups(registry: CollectorRegistry, result: str) -> float:
    return (
        registry.get_sample_value("aisf_llm_semantic_cache_lookups_total", {"model": LLM, "result": result})
        or 0
    )


def engine_runs(registry: CollectorRegistry) -> float:
    """Requests the engine answered (a cache replay records no time to first token)."""
    labels = {"model": LLM, "version": "1"}
    return registry.get_sample_value("aisf_llm_time_to_first_token_seconds_count", labels) or 0


async def test_a_close_prompt_is_answered_from_the_cache_without_the_engine(
    repository: ModelRepository, registry: CollectorRegistry
) -> None:
    dataplane = cached_dataplane(repository, registry)
    text, cached = await answer(dataplane, chat(QUESTION))
    assert text.strip() and not cached
    tokens = llama(repository).tokens_generated
    assert await answer(dataplane, chat(PARAPHRASE)) == (text, True)
    assert await answer(dataplane, chat(QUESTION.upper())) == (text, True)
    assert llama(repository).tokens_generated == tokens and engine_runs(registry) == 1
    assert (lookups(registry, "miss"), lookups(registry, "hit")) == (1, 2)


async def test_an_unrelated_prompt_or_another_tenant_misses(
    repository: ModelRepository, registry: CollectorRegistry
) -> None:
    dataplane = cached_dataplane(repository, registry)
    await answer(dataplane, chat(QUESTION))
    assert (await answer(dataplane, chat("How do I bake bread?")))[1] is False
    assert (await answer(dataplane, chat(QUESTION, tenant="rival")))[1] is False
    assert (await answer(dataplane, chat(QUESTION, history=("Hello!",))))[1] is False
    assert engine_runs(registry) == 4 and lookups(registry, "miss") == 4


async def test_sampled_requests_are_cached_only_on_opt_in_and_bypass_skips_the_cache(
    repository: ModelRepository, registry: CollectorRegistry
) -> None:
    dataplane = cached_dataplane(repository, registry)
    sampled = chat("Tell me a story", temperature=0.8)
    await answer(dataplane, sampled)
    assert (await answer(dataplane, sampled))[1] is False
    assert lookups(registry, "uncacheable") == 2
    stored, _ = await answer(dataplane, sampled, CacheMode.OPT_IN)
    assert await answer(dataplane, sampled, CacheMode.OPT_IN) == (stored, True)
    greedy = chat(QUESTION)
    await answer(dataplane, greedy)
    assert (await answer(dataplane, greedy, CacheMode.BYPASS))[1] is False
    assert lookups(registry, "bypass") == 1
    assert engine_runs(registry) == 5


async def test_without_its_embedding_model_the_cache_steps_aside_and_requests_are_answered(
    repository: ModelRepository, registry: CollectorRegistry
) -> None:
    dataplane = cached_dataplane(repository, registry, embedder="missing-model")
    text, cached = await answer(dataplane, chat(QUESTION))
    assert text.strip() and not cached and engine_runs(registry) == 1
    assert lookups(registry, "unavailable") == 1


async def test_an_unfinished_generation_is_never_stored(
    repository: ModelRepository, registry: CollectorRegistry
) -> None:
    dataplane = cached_dataplane(repository, registry)
    async with aclosing(dataplane.generate(chat(QUESTION))) as stream:
        first = await anext(stream)  # the client leaves after the first piece
    assert first.choice is not None and first.choice.text and not first.cached
    text, cached = await answer(dataplane, chat(QUESTION))
    # A miss: what the first request got was never stored (its first chunk may already carry most of
    # the text when the engine ran ahead; the answer is only stored once it finished).
    assert not cached and text.startswith(first.choice.text)
    assert await answer(dataplane, chat(QUESTION)) == (text, True)  # a finished answer is stored
    assert (lookups(registry, "miss"), lookups(registry, "hit")) == (2, 1)


class Embeddings:
    """Hands out what a test says the embedding model answers now (its vector and which model it is)."""

    def __init__(self, vector: np.ndarray, embedder: str = "embed:1") -> None:
        self.now = Embedding(vector, embedder)
        self.failure: Exception | None = None

    async def __call__(self, text: str) -> Embedding:
        if self.failure is not None:
            raise self.failure
        return self.now


KEY = CacheKey("scope", "What is the capital of France?")


async def test_vectors_of_a_swapped_embedder_never_match() -> None:
    """The same words under another embedding model (or version) miss: its vectors are not comparable,
    even when they happen to be close (the landed main scoped by the LLM only)."""
    embeddings = Embeddings(unit(1, 0))
    cache = SemanticCache(MemoryIndex(60, 10), embeddings, threshold=0.9)
    missed = await cache.lookup(KEY)
    await cache.store(missed, ANSWER)
    assert (await cache.lookup(KEY)).result == "hit"
    embeddings.now = Embedding(unit(1, 0), "embed:2")
    assert (await cache.lookup(KEY)).result == "miss"


async def test_a_vector_of_another_dimension_is_a_miss_never_an_error(
    index_and_clock: tuple[VectorIndex, Clock],
) -> None:
    index, _ = index_and_clock
    await index.add("s", unit(1, 0, 0), ANSWER)
    assert await index.nearest("s", unit(1, 0)) is None


async def test_a_failing_cache_is_skipped_for_its_cool_down_then_tried_again() -> None:
    """Any failure (here the embedder's ValueError, which the landed main let fail the generation) is
    a miss; the next requests skip the cache until the cool-down passed."""
    clock = Clock()
    embeddings = Embeddings(unit(1, 0))
    cache = SemanticCache(MemoryIndex(60, 10), embeddings, 0.9, cooldown_s=5, clock=clock)
    embeddings.failure = ValueError("shapes (2,) and (3,) not aligned")
    assert (await cache.lookup(KEY)).result == "unavailable"
    embeddings.failure = None
    assert (await cache.lookup(KEY)).result == "resting"
    clock.now += 5
    assert (await cache.lookup(KEY)).result == "miss"


async def test_a_hung_redis_costs_a_lookup_its_timeout_not_the_request() -> None:
    """A Redis that accepts connections and never answers: the lookup gives up after its timeout (the
    landed main's client had no socket timeout and waited forever)."""

    connections: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)  # reads, never answers

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    index = RedisIndex(f"redis://127.0.0.1:{port}/0", ttl_s=60, max_entries=10, timeout_s=0.1)
    cache = SemanticCache(index, Embeddings(unit(1, 0)), 0.9, timeout_s=0.1)
    try:
        probe = await asyncio.wait_for(cache.lookup(KEY), timeout=5)
        assert probe.result == "unavailable" and probe.hit is None
    finally:
        await cache.close()
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_hit_replays_the_usage_the_answer_cost(
    repository: ModelRepository, registry: CollectorRegistry
) -> None:
    dataplane = cached_dataplane(repository, registry)
    first = [c async for c in dataplane.generate(chat(QUESTION))]
    again = [c async for c in dataplane.generate(chat(QUESTION))]
    assert again[-1].cached and again[-1].usage == first[-1].usage
    assert first[-1].usage is not None and first[-1].usage.completion_tokens > 0


async def test_the_in_process_index_evicts_the_least_recently_hit_entry_first() -> None:
    clock = Clock()
    index = MemoryIndex(ttl_s=60, max_entries=2, clock=clock)
    await index.add("s", unit(1, 0, 0), ANSWER)
    await index.add("s", unit(0, 1, 0), replace(ANSWER, texts=("Berlin.",)))
    assert await index.nearest("s", unit(1, 0, 0)) is not None  # the older entry, hit: now the recent one
    await index.add("s", unit(0, 0, 1), replace(ANSWER, texts=("Rome.",)))
    kept = await index.nearest("s", unit(1, 0, 0))
    assert kept is not None and kept[0] > 0.99 and kept[1] == ANSWER
    berlin = await index.nearest("s", unit(0, 1, 0))
    assert berlin is None or berlin[1].texts != ("Berlin.",)


@pytest.mark.parametrize("max_entries", [100, 1500])  # searched exactly, and through the HNSW graph
async def test_the_in_process_index_stays_bounded_under_churn_and_finds_the_nearest_of_many(
    max_entries: int,
) -> None:
    rng = np.random.default_rng(7)
    index = MemoryIndex(ttl_s=60, max_entries=max_entries, clock=Clock())
    vectors = rng.standard_normal((4000, 64)).astype(np.float32)
    for i, vector in enumerate(vectors):
        await index.add("s", vector, replace(ANSWER, texts=(str(i),)))
    assert index.entries("s") == max_entries
    found = await index.nearest("s", vectors[3990] + 0.01)
    assert found is not None and found[1].texts == ("3990",) and found[0] > 0.99
    evicted = await index.nearest("s", vectors[10])  # among the oldest: evicted
    assert evicted is None or evicted[1].texts != ("10",)


async def test_expired_neighbours_never_hide_a_live_entry_and_an_emptied_scope_is_forgotten() -> None:
    clock = Clock()
    index = MemoryIndex(ttl_s=10, max_entries=100, clock=clock)
    for _ in range(6):  # closer to the query than the live one, and soon expired
        await index.add("s", unit(1, 0.01, 0), ANSWER)
    clock.now += 11
    await index.add("s", unit(1, 0.2, 0), replace(ANSWER, texts=("live",)))
    found = await index.nearest("s", unit(1, 0, 0))
    assert found is not None and found[1].texts == ("live",)
    clock.now += 11
    assert await index.nearest("s", unit(1, 0, 0)) is None
    assert index.scopes() == 0
