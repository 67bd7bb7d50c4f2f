"""OpenAI response bodies from the LLM dataplane's chunks: streamed events, or one aggregated answer."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import numpy as np

from aisf.services.common.errors import AisfError, InternalError
from aisf.services.common.llm_outputs import EmbedResult, GenerationChunk
from aisf.services.common.llm_types import TokenChunk, TokenLogprob, ToolCallDelta, Usage

Body = dict[str, Any]

# Errors of the LLM lane start with the offending field, `messages[0].role: ...` (any field) or
# `prompt is 900 tokens; ...` (a known request field): that is the error's `param`.
_FIELD = re.compile(r"^(([a-z_]+)(?:\[\d+\])*(?:\.[a-z_]+(?:\[\d+\])*)*)(:?) ")
_REQUEST_FIELDS = {"model", "messages", "prompt", "max_tokens", "temperature", "top_p", "n", "stop", "input"}


def _error_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def error_body(error: AisfError) -> dict[str, Any]:
    """`{"error": {...}}` as OpenAI sends it, in a response body or as an SSE error event."""
    found = _FIELD.match(error.message)
    param = found[1] if found and (found[3] or found[2] in _REQUEST_FIELDS) else None
    return {
        "error": {
            "message": error.message,
            "type": _error_type(error.http_status),
            "param": param,
            "code": error.reason,
        }
    }


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
    if chunk.fallback:  # the model's circuit was open: its fallback answered (also x-aisf-fallback)
        head["aisf_fallback"] = chunk.fallback
    if chunk.cached:  # replayed from the semantic cache (also x-aisf-cache: hit)
        head["aisf_cache"] = "hit"
    return head


def _chat_logprobs(entries: Sequence[TokenLogprob]) -> Body:
    def one(token: str, logprob: float, raw: bytes) -> Body:
        return {"token": token, "logprob": logprob, "bytes": list(raw)}

    content = [
        {**one(e.token, e.logprob, e.raw), "top_logprobs": [one(t.token, t.logprob, t.raw) for t in e.top]}
        for e in entries
    ]
    return {"content": content, "refusal": None}


def _text_logprobs(entries: Sequence[TokenLogprob], offset: int) -> Body:
    """The legacy completions form; `offset`: characters of the choice's text before these tokens."""
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry.token)
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{t.token: t.logprob for t in e.top} for e in entries],
        "text_offset": offsets,
    }


def _logprobs(entries: Sequence[TokenLogprob], flavor: Flavor, offset: int) -> Body | None:
    if not entries:
        return None
    return _chat_logprobs(entries) if flavor.chat else _text_logprobs(entries, offset)


def _call_delta(delta: ToolCallDelta) -> Body:
    """A streamed piece of a tool call: id, type and name on its first piece, arguments as they come."""
    body: Body = {"index": delta.index, "function": {"arguments": delta.arguments}}
    if delta.id:
        body.update(id=delta.id, type="function")
        body["function"]["name"] = delta.name
    return body


def tool_call_body(call_id: str, name: str, arguments: str) -> Body:
    """OpenAI's form of one whole tool call (in an answer's message, or in a request's history)."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _calls(deltas: Sequence[ToolCallDelta]) -> list[Body]:
    """A choice's tool-call pieces reassembled into whole calls."""
    calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]
    for d in deltas:
        call = calls.setdefault(d.index, ["", "", ""])
        call[0], call[1] = d.id or call[0], d.name or call[1]
        call[2] += d.arguments
    return [tool_call_body(*calls[i]) for i in sorted(calls)]


def _streamed_choice(choice: TokenChunk, flavor: Flavor, first: bool, offset: int) -> Body:
    logprobs = _logprobs(choice.logprobs, flavor, offset)
    if not flavor.chat:
        return {
            "index": choice.index,
            "text": choice.text,
            "logprobs": logprobs,
            "finish_reason": choice.finish_reason,
        }
    delta: Body = {"role": "assistant", "content": choice.text} if first else {}
    if choice.text:
        delta["content"] = choice.text
    if choice.tool_calls:
        delta["tool_calls"] = [_call_delta(d) for d in choice.tool_calls]
    finish = choice.finish_reason
    return {"index": choice.index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}


async def stream_events(
    chunks: AsyncGenerator[GenerationChunk, None], flavor: Flavor, include_usage: bool
) -> AsyncGenerator[Body, None]:
    """One event per chunk (the first of each chat choice names the assistant role); with
    stream_options.include_usage, every event has `usage: null` and a last one carries the totals.
    Closing the events closes `chunks`: that is how a client's disconnect reaches the engine."""
    offsets: dict[int, int] = {}  # characters each choice streamed so far (completions' text_offset)
    async with aclosing(chunks):
        async for chunk in chunks:
            head = _head(chunk, flavor, flavor.chunk_object)
            if chunk.choice is not None:
                index = chunk.choice.index
                first = index not in offsets
                offset = offsets.get(index, 0)
                offsets[index] = offset + sum(len(e.token) for e in chunk.choice.logprobs)
                event = {**head, "choices": [_streamed_choice(chunk.choice, flavor, first, offset)]}
                yield {**event, "usage": None} if include_usage else event
            elif include_usage and chunk.usage is not None:
                yield {**head, "choices": [], "usage": usage_body(chunk.usage)}


def _message(text: str, deltas: Sequence[ToolCallDelta]) -> Body:
    if not deltas:
        return {"role": "assistant", "content": text}
    return {"role": "assistant", "content": text or None, "tool_calls": _calls(deltas)}


async def answer_body(chunks: AsyncIterator[GenerationChunk], flavor: Flavor) -> Body:
    """The whole stream folded into one response, as a non-streaming request gets it."""
    texts: dict[int, list[str]] = {}
    finish: dict[int, str | None] = {}
    logprobs: dict[int, list[TokenLogprob]] = {}
    tool_calls: dict[int, list[ToolCallDelta]] = {}
    usage, last = Usage(), None
    async for chunk in chunks:
        last = chunk
        if chunk.choice is not None:
            texts.setdefault(chunk.choice.index, []).append(chunk.choice.text)
            logprobs.setdefault(chunk.choice.index, []).extend(chunk.choice.logprobs)
            tool_calls.setdefault(chunk.choice.index, []).extend(chunk.choice.tool_calls)
            finish[chunk.choice.index] = chunk.choice.finish_reason or finish.get(chunk.choice.index)
        if chunk.usage is not None:
            usage = chunk.usage
    if last is None:
        raise InternalError("the router ended the generation without an answer")
    choices = []
    for index in sorted(texts):
        text = "".join(texts[index])
        content: Body = {"message": _message(text, tool_calls[index])} if flavor.chat else {"text": text}
        entries = _logprobs(logprobs[index], flavor, 0)
        choices.append({"index": index, **content, "logprobs": entries, "finish_reason": finish[index]})
    return {**_head(last, flavor, flavor.answer_object), "choices": choices, "usage": usage_body(usage)}


def embeddings_body(result: EmbedResult, encoding: str) -> Body:
    """The embeddings response; `base64` (what the openai SDK asks for by default) is little-endian
    float32 bytes."""

    def encoded(vector: list[float]) -> list[float] | str:
        if encoding == "base64":
            return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
        return vector

    data = [
        {"object": "embedding", "index": i, "embedding": encoded(v)}
        for i, v in enumerate(result.response.vectors)
    ]
    tokens = result.response.usage.prompt_tokens
    return {
        "object": "list",
        "data": data,
        "model": result.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
