"""The llama_cpp adapter over the sample GGUFs, in process: streaming, cancellation, sampling, speculation."""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aisf.adapters.base import EmbeddingAdapter, GenerativeAdapter, ModelSpec
from aisf.adapters.llama_cpp_engine import AHEAD_PIECES, LlamaCppAdapter
from aisf.adapters.registry import AdapterRegistry
from aisf.services.common.errors import InvalidInput, ModelLoadFailed, ModelNotReady, Unsupported
from aisf.services.common.llm_types import (
    ChatMessage,
    EmbedRequest,
    GenerateRequest,
    SamplingParams,
    TokenChunk,
)
from aisf.services.common.model_config import load_model_config
from aisf.services.common.tensors import InferRequest
from aisf.services.llm_samples import CONTEXT_LENGTH, LLM_DEMO, LLM_DEMO_DRAFT

HELLO = (ChatMessage("system", "You are tiny."), ChatMessage("user", "hello world"))


async def _loaded(repository: Path, name: str) -> LlamaCppAdapter:
    adapter = LlamaCppAdapter()
    await adapter.load(ModelSpec(name, 1, repository / name / "1", load_model_config(repository / name)))
    return adapter


@pytest.fixture(scope="module")
async def llm(sample_repository: Path) -> AsyncIterator[LlamaCppAdapter]:
    adapter = await _loaded(sample_repository, LLM_DEMO)
    yield adapter
    await adapter.unload()


@pytest.fixture
async def own_llm(sample_repository: Path) -> AsyncIterator[LlamaCppAdapter]:
    """A private instance for tests that unload it."""
    adapter = await _loaded(sample_repository, LLM_DEMO_DRAFT)
    yield adapter
    await adapter.unload()


def _chat(**params: Any) -> GenerateRequest:
    return GenerateRequest(LLM_DEMO, messages=HELLO, params=SamplingParams(**params))


async def _collect(adapter: LlamaCppAdapter, request: GenerateRequest) -> list[TokenChunk]:
    return [chunk async for chunk in adapter.stream(request)]


def _text(chunks: list[TokenChunk], index: int = 0) -> str:
    return "".join(c.text for c in chunks if c.index == index)


def test_the_adapter_is_registered_and_is_generative_and_embedding() -> None:
    adapter = AdapterRegistry.from_entry_points().create("llama_cpp")
    assert isinstance(adapter, LlamaCppAdapter)
    assert isinstance(adapter, GenerativeAdapter) and isinstance(adapter, EmbeddingAdapter)


async def test_chat_streams_many_chunks_ending_with_length_and_usage(llm: LlamaCppAdapter) -> None:
    chunks = await _collect(llm, _chat(max_tokens=24, temperature=0.0))
    assert len(chunks) > 2  # pieces as they come (a reader slower than the engine gets them merged)
    last = chunks[-1]
    assert last.finish_reason == "length" and all(c.finish_reason is None for c in chunks[:-1])
    assert last.usage is not None and last.usage.completion_tokens == 24
    assert last.usage.prompt_tokens > len("hello world".split())  # the chat template's markup counts too
    assert _text(chunks).strip()


async def test_chunks_arrive_while_the_engine_is_still_generating(llm: LlamaCppAdapter) -> None:
    before = llm.tokens_generated
    stream = llm.stream(_chat(max_tokens=200, temperature=0.0))
    first = await anext(stream)
    generated_at_first_chunk = llm.tokens_generated - before
    await stream.aclose()
    assert first.text and first.finish_reason is None
    assert generated_at_first_chunk <= AHEAD_PIECES + 2  # not 200: handed over as it was made


async def test_closing_the_stream_stops_the_engine_between_tokens(llm: LlamaCppAdapter) -> None:
    before = llm.tokens_generated
    stream = llm.stream(_chat(max_tokens=400, temperature=0.0))
    for _ in range(3):
        await anext(stream)
    await stream.aclose()
    stopped_at = llm.tokens_generated - before
    await asyncio.sleep(0.2)
    assert llm.tokens_generated - before == stopped_at  # nothing generated after the close
    assert (
        stopped_at <= 4 * AHEAD_PIECES + 2
    )  # the chunks read (each at most that many pieces), the hand-over


async def test_a_reader_slower_than_the_engine_gets_fewer_longer_chunks_with_every_token(
    llm: LlamaCppAdapter,
) -> None:
    fast = await _collect(llm, _chat(max_tokens=48, temperature=0.0))
    slow: list[TokenChunk] = []
    async for chunk in llm.stream(_chat(max_tokens=48, temperature=0.0)):
        slow.append(chunk)
        await asyncio.sleep(0.005)  # a client slower than the engine
    assert _text(slow) == _text(fast)
    assert len(slow) < len(fast)
    assert slow[-1].usage is not None and slow[-1].usage.completion_tokens == 48


async def test_cancelling_the_consuming_task_stops_the_engine(llm: LlamaCppAdapter) -> None:
    before = llm.tokens_generated
    received: list[TokenChunk] = []

    async def consume() -> None:
        async with contextlib.aclosing(llm.stream(_chat(max_tokens=400, temperature=0.0))) as stream:
            async for chunk in stream:  # closed on cancellation, as the dataplane closes its streams
                received.append(chunk)
                await asyncio.sleep(0.01)  # a slow client

    task = asyncio.create_task(consume())
    while len(received) < 3:
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stopped_at = llm.tokens_generated - before
    await asyncio.sleep(0.2)
    # Nothing after the cancel; before it, the chunks read (a slow reader's carry merged pieces) and
    # the bounded hand-over.
    assert llm.tokens_generated - before == stopped_at <= 4 * AHEAD_PIECES + 2


async def test_greedy_decoding_is_deterministic(llm: LlamaCppAdapter) -> None:
    first = _text(await _collect(llm, _chat(max_tokens=30, temperature=0.0)))
    second = _text(await _collect(llm, _chat(max_tokens=30, temperature=0.0)))
    assert first == second


async def test_a_seed_reproduces_sampling_and_another_seed_changes_it(llm: LlamaCppAdapter) -> None:
    runs = [_text(await _collect(llm, _chat(max_tokens=30, temperature=1.0, seed=s))) for s in (7, 7, 8)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


async def test_a_stop_sequence_ends_the_choice_before_the_stop_text(llm: LlamaCppAdapter) -> None:
    full = _text(await _collect(llm, _chat(max_tokens=40, temperature=0.0)))
    stop = full[12:16]
    chunks = await _collect(llm, _chat(max_tokens=40, temperature=0.0, stop=(stop,)))
    assert chunks[-1].finish_reason == "stop"
    assert _text(chunks) == full[: full.index(stop)]


async def test_n_choices_are_generated_one_after_another_with_their_index(llm: LlamaCppAdapter) -> None:
    chunks = await _collect(llm, _chat(max_tokens=10, temperature=1.0, seed=3, n=2))
    finals = [c for c in chunks if c.finish_reason is not None]
    assert [c.index for c in finals] == [0, 1]
    assert finals[-1].usage is not None and finals[-1].usage.completion_tokens == 20  # usage so far: both
    assert _text(chunks, 0) and _text(chunks, 1)


async def test_a_completion_prompt_streams_too(llm: LlamaCppAdapter) -> None:
    request = GenerateRequest(LLM_DEMO, prompt="the model", params=SamplingParams(max_tokens=8))
    chunks = await _collect(llm, request)
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 3  # <s> ▁the ▁model


@pytest.mark.parametrize("field", ["prompt", "messages"])
async def test_a_prompt_longer_than_the_context_is_invalid_input_naming_the_field(
    llm: LlamaCppAdapter, field: str
) -> None:
    long_text = "x" * (CONTEXT_LENGTH + 10)
    if field == "prompt":
        request = GenerateRequest(LLM_DEMO, prompt=long_text)
    else:
        request = GenerateRequest(LLM_DEMO, messages=(ChatMessage("user", long_text),))
    with pytest.raises(InvalidInput, match=rf"^{field} is \d+ tokens;.*context window of {CONTEXT_LENGTH}"):
        await _collect(llm, request)


async def test_max_tokens_beyond_the_context_stops_at_the_context_with_length(llm: LlamaCppAdapter) -> None:
    chunks = await _collect(llm, _chat(max_tokens=10 * CONTEXT_LENGTH, temperature=0.0))
    usage = chunks[-1].usage
    assert chunks[-1].finish_reason == "length" and usage is not None
    assert usage.total_tokens == CONTEXT_LENGTH == llm.context_length()


async def _without_draft(sample_repository: Path, tmp_path: Path) -> LlamaCppAdapter:
    """The sample's target model loaded alone (its config without the draft model)."""
    alone = tmp_path / LLM_DEMO
    shutil.copytree(sample_repository / LLM_DEMO, alone)
    config = yaml.safe_load((alone / "config.yaml").read_text())
    del config["parameters"]["draft_model"]
    (alone / "config.yaml").write_text(yaml.safe_dump(config))
    return await _loaded(tmp_path, LLM_DEMO)


async def test_speculative_decoding_keeps_the_targets_greedy_output_and_counts_drafts(
    llm: LlamaCppAdapter, sample_repository: Path, tmp_path: Path
) -> None:
    target_alone = await _without_draft(sample_repository, tmp_path)
    try:
        expected = _text(await _collect(target_alone, _chat(max_tokens=60, temperature=0.0)))
        assert target_alone.speculative_stats() == {"proposed": 0, "accepted": 0}
    finally:
        await target_alone.unload()
    before = llm.speculative_stats()
    assert _text(await _collect(llm, _chat(max_tokens=60, temperature=0.0))) == expected
    after = llm.speculative_stats()
    assert after["proposed"] > before["proposed"]
    assert after["accepted"] > before["accepted"]


async def test_logprobs_are_the_same_with_or_without_a_draft_model_and_greedy_picks_the_top(
    llm: LlamaCppAdapter, sample_repository: Path, tmp_path: Path
) -> None:
    """With a draft model llama.cpp keeps every position's logits, without one only the last: both
    paths give the target's own distribution."""
    target_alone = await _without_draft(sample_repository, tmp_path)
    request = _chat(max_tokens=12, temperature=0.0, logprobs=3)
    try:
        without_draft = [e for c in await _collect(target_alone, request) for e in c.logprobs]
    finally:
        await target_alone.unload()
    chunks = await _collect(llm, request)
    with_draft = [e for c in chunks for e in c.logprobs]
    assert len(with_draft) == 12 and [e.token for e in with_draft] == [e.token for e in without_draft]
    assert [e.logprob for e in with_draft] == pytest.approx([e.logprob for e in without_draft], abs=1e-4)
    assert "".join(e.token for e in with_draft) == _text(chunks)
    for entry in with_draft:
        assert len(entry.top) == 3 and entry.top[0].token == entry.token  # greedy takes the most likely
        assert entry.top[0].logprob == entry.logprob <= 0
        assert [t.logprob for t in entry.top] == sorted((t.logprob for t in entry.top), reverse=True)


async def test_embeddings_are_unit_vectors_one_per_input(llm: LlamaCppAdapter) -> None:
    response = await llm.embed(EmbedRequest(LLM_DEMO, ("hello world", "the model", "hello world")))
    assert len(response.vectors) == 3 and all(len(v) == 64 for v in response.vectors)
    assert all(math.isclose(math.hypot(*v), 1.0, rel_tol=1e-4) for v in response.vectors)
    assert response.vectors[0] == pytest.approx(response.vectors[2], abs=1e-6)
    assert response.vectors[0] != pytest.approx(response.vectors[1], abs=1e-2)
    assert response.usage.prompt_tokens == 3 + 3 + 3  # each with <s>


async def test_v2_tensor_inference_is_unsupported(llm: LlamaCppAdapter) -> None:
    with pytest.raises(Unsupported, match="OpenAI-compatible API"):
        await llm.infer(InferRequest(LLM_DEMO, "1", inputs=[]))


async def test_unload_cancels_a_running_stream_then_reports_not_ready(own_llm: LlamaCppAdapter) -> None:
    stream = own_llm.stream(_chat(max_tokens=400, temperature=0.0))
    await anext(stream)
    unloading = asyncio.create_task(own_llm.unload())
    rest = [chunk async for chunk in stream]
    await unloading
    assert rest[-1].finish_reason == "cancelled"
    assert not (await own_llm.health()).ready
    with pytest.raises(ModelNotReady):
        await _collect(own_llm, _chat(max_tokens=4))


async def test_a_missing_draft_model_fails_the_load_naming_the_file(
    sample_repository: Path, tmp_path: Path
) -> None:
    shutil.copytree(sample_repository / LLM_DEMO, tmp_path / LLM_DEMO)
    (tmp_path / LLM_DEMO / "1" / "draft.gguf").unlink()
    with pytest.raises(ModelLoadFailed, match="draft.gguf not found"):
        await _loaded(tmp_path, LLM_DEMO)
