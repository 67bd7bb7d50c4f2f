"""The LLM dataplane streams, validates, admits, cancels and accounts for every request."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from aisf.adapters.llama_cpp_engine import AHEAD_PIECES, LlamaCppAdapter
from aisf.services.common.errors import (
    EngineOverloaded,
    EngineUnavailable,
    InvalidInput,
    ModelNotFound,
)
from aisf.services.common.llm_metrics import LlmMetrics
from aisf.services.common.llm_outputs import GenerationChunk, ModelKind
from aisf.services.common.llm_types import (
    ChatMessage,
    EmbedRequest,
    GenerateRequest,
    SamplingParams,
)
from aisf.services.llm_samples import CONTEXT_LENGTH
from aisf.services.router.llm_dataplane import LlmDataplane, engine_counters
from aisf.services.router.repository import ModelRepository, RepositoryDefaults
from tests.support.llm import (
    EMBEDDER,
    LLM,
    REMOTE,
    V2_MODEL,
    build_llm_models,
    kill,
    llama,
    reference,
    served_repository,
    upstream,
)

LABELS = {"model": LLM, "version": "1"}

# Generations do not queue here: a busy engine answers 429 at once.
NO_QUEUE = RepositoryDefaults(llm_max_waiting=0)


def chat(text: str = "hi", model: str = LLM, **params: object) -> GenerateRequest:
    return GenerateRequest(model, messages=(ChatMessage("user", text),), params=SamplingParams(**params))


async def collect(dataplane: LlmDataplane, request: GenerateRequest) -> list[GenerationChunk]:
    return [chunk async for chunk in dataplane.generate(request)]


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


@pytest.fixture(scope="module")
async def repository(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ModelRepository]:
    """llm-demo (llama.cpp), MiniLM and a V2 model, loaded once for the module; tests read the engine's
    own counters as deltas."""
    root = tmp_path_factory.mktemp("llm-dataplane")
    build_llm_models(root / "models", v2_model=True)
    async with served_repository(root, NO_QUEUE) as repository:
        yield repository


@pytest.fixture
def engine(repository: ModelRepository) -> LlamaCppAdapter:
    return llama(repository)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def dataplane(repository: ModelRepository, registry: CollectorRegistry) -> LlmDataplane:
    return LlmDataplane(repository, LlmMetrics(registry))


async def test_generation_streams_each_token_then_the_usage_totals(
    dataplane: LlmDataplane, repository: ModelRepository
) -> None:
    request = chat(max_tokens=6, temperature=0.0)
    expected = await reference(repository, request)
    chunks = await collect(dataplane, request)
    # The engine's text as it made it (pieces a slower reader has not taken yet arrive merged).
    assert "".join(c.choice.text for c in chunks if c.choice) == "".join(e.text for e in expected)
    assert len(chunks) > 2 and all(c.choice and c.choice.text for c in chunks[:-2])
    assert chunks[-2].choice is not None and chunks[-2].choice.finish_reason == "length"
    assert chunks[-1].choice is None and chunks[-1].usage is not None
    assert chunks[-1].usage == expected[-1].usage and chunks[-1].usage.completion_tokens == 6
    assert chunks[-1].usage.prompt_tokens > 1  # the chat template's markup and the text
    assert {(c.model, c.model_version) for c in chunks} == {(LLM, "1")}
    assert len({c.id for c in chunks}) == 1


async def test_usage_counts_every_choice_once(dataplane: LlmDataplane) -> None:
    chunks = await collect(dataplane, chat(n=2, max_tokens=2))
    finished = [c.choice for c in chunks if c.choice and c.choice.finish_reason]
    assert [(f.index, f.finish_reason) for f in finished] == [(0, "length"), (1, "length")]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (GenerateRequest(LLM), "messages"),
        (GenerateRequest(LLM, prompt=""), "prompt"),
        (chat(max_tokens=-1), "max_tokens"),
        (chat(max_tokens=10_000), "max_tokens"),
        (chat(temperature=3.0), "temperature"),
        (chat(top_p=0.0), "top_p"),
        (chat(n=99), "n"),
        (chat(stop=("a", "b", "c", "d", "e")), "stop"),
    ],
)
async def test_invalid_requests_are_rejected_naming_the_field(
    dataplane: LlmDataplane,
    engine: LlamaCppAdapter,
    registry: CollectorRegistry,
    request_: GenerateRequest,
    field: str,
) -> None:
    before = engine.tokens_generated
    with pytest.raises(InvalidInput, match=rf"^{field}: "):
        await collect(dataplane, request_)
    assert engine.tokens_generated == before  # the engine never saw it
    kind = "chat" if request_.messages else "completion"
    assert sample(registry, "aisf_llm_requests_total", **LABELS, kind=kind, outcome="invalid_input") == 1


async def test_unknown_and_non_generative_models_are_refused(dataplane: LlmDataplane) -> None:
    with pytest.raises(ModelNotFound):
        await collect(dataplane, chat(model="nope"))
    for model in (EMBEDDER, V2_MODEL):
        with pytest.raises(InvalidInput, match="does not generate text"):
            await collect(dataplane, chat(model=model))


async def test_closing_the_stream_early_stops_the_engine_and_counts_a_cancellation(
    dataplane: LlmDataplane, engine: LlamaCppAdapter, registry: CollectorRegistry
) -> None:
    before = engine.tokens_generated
    received = 0
    async with aclosing(dataplane.generate(chat(max_tokens=400, temperature=0.0))) as stream:
        async for chunk in stream:
            received += bool(chunk.choice and chunk.choice.text)
            if received == 2:
                break
    stopped_at = engine.tokens_generated - before
    await asyncio.sleep(0.1)
    assert engine.tokens_generated - before == stopped_at  # nothing generated after the close
    # The chunks read (each up to AHEAD_PIECES merged pieces) plus the bounded hand-over, not 400.
    assert 2 <= stopped_at <= 3 * AHEAD_PIECES + 2
    assert sample(registry, "aisf_llm_requests_total", **LABELS, kind="chat", outcome="cancelled") == 1
    assert sample(registry, "aisf_llm_generations_in_flight", **LABELS) == 0


async def test_a_cancelled_consumer_task_stops_the_engine(
    dataplane: LlmDataplane, engine: LlamaCppAdapter, registry: CollectorRegistry
) -> None:
    before = engine.tokens_generated
    received: list[GenerationChunk] = []
    streaming = asyncio.Event()

    async def consume() -> None:
        async for chunk in dataplane.generate(chat(max_tokens=400, temperature=0.0)):
            received.append(chunk)
            if len(received) == 3:
                streaming.set()

    task = asyncio.create_task(consume())
    await streaming.wait()
    task.cancel()  # lands while the consumer awaits the engine's next chunk
    with pytest.raises(asyncio.CancelledError):
        await task
    stopped_at = engine.tokens_generated - before
    assert sample(registry, "aisf_llm_generations_in_flight", **LABELS) == 0
    await asyncio.sleep(0.1)
    assert engine.tokens_generated - before == stopped_at  # stopped by the time the task ended
    assert 3 <= stopped_at < 40  # not 400: the engine runs only a few tokens ahead of its consumer


async def test_a_full_queue_answers_overloaded_with_a_retry_hint(dataplane: LlmDataplane) -> None:
    # llm-demo has one instance and this dataplane no queue: a stream held open occupies the engine.
    async with aclosing(dataplane.generate(chat(max_tokens=400))) as first:
        await anext(first)
        with pytest.raises(EngineOverloaded) as raised:
            await collect(dataplane, chat(max_tokens=2))
    assert raised.value.retry_after is not None and raised.value.http_status == 429
    assert (await collect(dataplane, chat(max_tokens=2)))[-1].usage is not None  # free again


async def test_an_engine_failing_mid_stream_is_a_typed_error_and_is_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry
) -> None:
    """The upstream llama.cpp server dies after its first chunk: its stream ends without [DONE]."""
    models = build_llm_models(tmp_path / "models", embedder=False)
    seen: list[GenerationChunk] = []
    with upstream(models, monkeypatch) as server:
        async with served_repository(tmp_path, NO_QUEUE) as repository:
            dataplane = LlmDataplane(repository, LlmMetrics(registry))
            with pytest.raises(EngineUnavailable, match="remote model 'upstream'"):
                async for chunk in dataplane.generate(chat(model=REMOTE, max_tokens=1500)):
                    seen.append(chunk)
                    if len(seen) == 1:
                        kill(server)
    assert seen and all(c.choice is not None and c.choice.finish_reason is None for c in seen)
    assert len(seen) < 1500  # it broke off: no finish, no usage
    labels = {"model": REMOTE, "version": "1", "kind": "chat"}
    assert sample(registry, "aisf_llm_requests_total", **labels, outcome="engine_unavailable") == 1
    assert sample(registry, "aisf_llm_generations_in_flight", model=REMOTE, version="1") == 0


async def test_each_request_records_ttft_tokens_and_one_log_line_without_the_prompt(
    dataplane: LlmDataplane, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="aisf.requests"):
        chunks = await collect(dataplane, chat("a very secret prompt", temperature=0.5, max_tokens=8, seed=5))
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens > 0 and usage.prompt_tokens > 4
    pieces = [c for c in chunks if c.choice and c.choice.text]
    assert sample(registry, "aisf_llm_time_to_first_token_seconds_count", **LABELS) == 1
    # One latency per token after the first chunk: a chunk merged for a slower reader counts each piece.
    after_first = sum(c.choice.pieces for c in pieces[1:] if c.choice)
    assert sample(registry, "aisf_llm_inter_token_latency_seconds_count", **LABELS) == after_first
    assert sample(registry, "aisf_llm_completion_tokens_sum", **LABELS) == usage.completion_tokens
    assert sample(registry, "aisf_llm_prompt_tokens_sum", **LABELS) == usage.prompt_tokens
    assert sample(registry, "aisf_llm_request_duration_seconds_count", **LABELS) == 1
    (line,) = [r for r in caplog.records if r.getMessage() == "llm request"]
    fields = line.__dict__
    assert (fields["model"], fields["version"], fields["outcome"]) == (LLM, "1", "success")
    assert (fields["prompt_tokens"], fields["completion_tokens"]) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )
    assert fields["ttft_ms"] > 0 and fields["duration_ms"] >= fields["ttft_ms"]
    assert fields["params"]["temperature"] == 0.5 and fields["params"]["max_tokens"] == 8
    assert fields["params"]["seed"] == 5
    assert "secret" not in caplog.text


async def test_embeddings_come_from_embedding_models_only(dataplane: LlmDataplane) -> None:
    result = await dataplane.embed(EmbedRequest(EMBEDDER, ("one two", "three")))
    assert (result.model, result.model_version) == (EMBEDDER, "1")
    assert [len(v) for v in result.response.vectors] == [384, 384]  # all-MiniLM-L6-v2
    assert result.response.usage.prompt_tokens == 7  # [CLS] one two [SEP], [CLS] three [SEP]
    with pytest.raises(InvalidInput, match="not an embedding model"):
        await dataplane.embed(EmbedRequest(V2_MODEL, ("x",)))
    with pytest.raises(InvalidInput, match=r"^input\[1\]: "):
        await dataplane.embed(EmbedRequest(EMBEDDER, ("x", "")))


async def test_models_lists_generative_and_embedding_models_with_their_kind(dataplane: LlmDataplane) -> None:
    cards = {c.name: c for c in dataplane.models()}
    assert sorted(cards) == [LLM, EMBEDDER]  # the V2 model is no LLM-lane model
    assert cards[LLM].kind is ModelKind.GENERATIVE and cards[LLM].context_length == CONTEXT_LENGTH
    assert cards[EMBEDDER].kind is ModelKind.EMBEDDING and cards[EMBEDDER].context_length == 0


async def test_engines_own_counters_are_exported_at_scrape_time(
    dataplane: LlmDataplane, repository: ModelRepository, engine: LlamaCppAdapter
) -> None:
    registry = CollectorRegistry()
    LlmMetrics(registry, engines=lambda: engine_counters(repository))

    def exported() -> tuple[float, float, float]:
        return (
            sample(registry, "aisf_llm_speculative_total", **LABELS, stat="proposed"),
            sample(registry, "aisf_llm_speculative_total", **LABELS, stat="accepted"),
            sample(registry, "aisf_llm_engine_tokens_total", **LABELS),
        )

    before = exported()
    stats = engine.speculative_stats()
    assert before == (stats["proposed"], stats["accepted"], engine.tokens_generated)
    await collect(dataplane, chat(max_tokens=32, temperature=0.0))
    after = exported()
    stats = engine.speculative_stats()
    assert after == (stats["proposed"], stats["accepted"], engine.tokens_generated)
    assert after[0] > before[0] and after[1] > before[1] and after[2] == before[2] + 32


async def test_unloading_mid_generation_lets_the_stream_finish_before_the_engine_unloads(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    build_llm_models(tmp_path / "models", embedder=False)
    async with served_repository(tmp_path, NO_QUEUE) as repository:
        dataplane = LlmDataplane(repository, LlmMetrics(registry))
        engine = llama(repository)
        async with aclosing(dataplane.generate(chat(max_tokens=64, temperature=0.0))) as stream:
            chunks = [await anext(stream)]
            unloading = asyncio.create_task(repository.unload(LLM))
            await asyncio.sleep(0.05)
            assert not unloading.done() and (await engine.health()).ready  # waits for the live stream
            chunks += [chunk async for chunk in stream]
        await unloading
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 64
    assert (await engine.health()).ready is False  # unloaded once the stream ended


async def test_a_stream_outliving_the_drain_grace_is_cut_off_with_a_typed_error(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    build_llm_models(tmp_path / "models", embedder=False)
    no_grace = RepositoryDefaults(llm_max_waiting=0, drain_timeout_s=0.0)
    async with served_repository(tmp_path, no_grace) as repository:
        dataplane = LlmDataplane(repository, LlmMetrics(registry))
        seen: list[GenerationChunk] = []
        async with aclosing(dataplane.generate(chat(max_tokens=400))) as stream:
            seen.append(await anext(stream))
            unloading = asyncio.create_task(repository.unload(LLM))
            with pytest.raises(EngineUnavailable, match="being unloaded"):
                async for chunk in stream:
                    seen.append(chunk)
        await unloading
    assert seen and all(c.choice is not None and c.choice.finish_reason is None for c in seen)
    assert len(seen) < 400
    assert (
        sample(registry, "aisf_llm_requests_total", **LABELS, kind="chat", outcome="engine_unavailable") == 1
    )


async def test_a_reader_that_stops_taking_chunks_is_cut_and_frees_the_engine(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    """The reader takes one chunk and then sits on the stream: after the idle limit its task is
    cancelled, the engine stops between two tokens, and the next request gets the one slot (the landed
    main held it until the client went away, or forever)."""
    build_llm_models(tmp_path / "models", embedder=False)
    stalls = RepositoryDefaults(llm_max_waiting=4, stream_idle_s=0.3)
    async with served_repository(tmp_path, stalls) as repository:
        dataplane = LlmDataplane(repository, LlmMetrics(registry))
        engine = llama(repository)

        async def stalled_reader() -> None:
            async with aclosing(dataplane.generate(chat(max_tokens=400, temperature=0.0))) as stream:
                await anext(stream)
                await asyncio.sleep(3600)  # a client that stopped reading

        reader = asyncio.create_task(stalled_reader())
        await asyncio.sleep(0.1)
        next_one = await asyncio.wait_for(collect(dataplane, chat(max_tokens=8, temperature=0.0)), timeout=10)
        assert next_one[-1].usage is not None and next_one[-1].usage.completion_tokens == 8
        assert reader.done() and reader.cancelled()
        tokens = engine.tokens_generated
        await asyncio.sleep(0.2)
        assert engine.tokens_generated == tokens  # nothing generates for the stalled reader any more
