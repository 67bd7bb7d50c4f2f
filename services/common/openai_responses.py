"""OpenAI response bodies from the LLM dataplane's chunks: streamed events, or one aggregated answer."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from aisf.services.common.errors import InternalError
from aisf.services.common.llm_outputs import GenerationChunk
from aisf.services.common.llm_types import TokenChunk, Usage

Body = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Flavor:
    """What differs between chat and text completions on the wire."""

    id_prefix: str
    chunk_object: str
    answer_object: str
    chat: bool


CHAT = Flavor("chatcmpl-", "chat.completion.chunk", "chat.completion", chat=True)
TEXT = Flavor("cmpl-", "text_completion", "text_completion", chat=False)


def usage_body(usage: Usage) -> Body:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _head(chunk: GenerationChunk, flavor: Flavor, kind: str) -> Body:
    head = {"id": flavor.id_prefix + chunk.id, "object": kind, "created": chunk.created, "model": chunk.model}
    if (
        chunk.fallback
    ):  # the model's circuit was open: its fallback answered (also the x-aisf-fallback header)
        head["aisf_fallback"] = chunk.fallback
    return head


def _streamed_choice(choice: TokenChunk, flavor: Flavor, first: bool) -> Body:
    if not flavor.chat:
        return {
            "index": choice.index,
            "text": choice.text,
            "logprobs": None,
            "finish_reason": choice.finish_reason,
        }
    delta: Body = {"role": "assistant", "content": choice.text} if first else {}
    if choice.text:
        delta["content"] = choice.text
    return {"index": choice.index, "delta": delta, "logprobs": None, "finish_reason": choice.finish_reason}


async def stream_events(
    chunks: AsyncGenerator[GenerationChunk, None], flavor: Flavor, include_usage: bool
) -> AsyncGenerator[Body, None]:
    """One event per chunk (the first of each chat choice names the assistant role); with
    stream_options.include_usage, every event has `usage: null` and a last one carries the totals.
    Closing the events closes `chunks`: that is how a client's disconnect reaches the engine."""
    started: set[int] = set()
    async with aclosing(chunks):
        async for chunk in chunks:
            head = _head(chunk, flavor, flavor.chunk_object)
            if chunk.choice is not None:
                first = chunk.choice.index not in started
                started.add(chunk.choice.index)
                event = {**head, "choices": [_streamed_choice(chunk.choice, flavor, first)]}
                yield {**event, "usage": None} if include_usage else event
            elif include_usage and chunk.usage is not None:
                yield {**head, "choices": [], "usage": usage_body(chunk.usage)}


async def answer_body(chunks: AsyncIterator[GenerationChunk], flavor: Flavor) -> Body:
    """The whole stream folded into one response, as a non-streaming request gets it."""
    texts: dict[int, list[str]] = {}
    finish: dict[int, str | None] = {}
    usage, last = Usage(), None
    async for chunk in chunks:
        last = chunk
        if chunk.choice is not None:
            texts.setdefault(chunk.choice.index, []).append(chunk.choice.text)
            finish[chunk.choice.index] = chunk.choice.finish_reason or finish.get(chunk.choice.index)
        if chunk.usage is not None:
            usage = chunk.usage
    if last is None:
        raise InternalError("the router ended the generation without an answer")
    choices = []
    for index in sorted(texts):
        text = "".join(texts[index])
        content: Body = {"message": {"role": "assistant", "content": text}} if flavor.chat else {"text": text}
        choices.append({"index": index, **content, "logprobs": None, "finish_reason": finish[index]})
    return {**_head(last, flavor, flavor.answer_object), "choices": choices, "usage": usage_body(usage)}
