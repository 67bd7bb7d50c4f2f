"""Tool calling for engines that have none of their own (llama.cpp, vLLM's engine API, any engine that
takes a response format): the offered tools are described to the model in a system message, a call is
one JSON object {"name": ..., "arguments": {...}} and several calls (OpenAI's parallel_tool_calls, on by
default) a JSON array of them, decoding is constrained to that shape (a response format) when a call is
required, and the answer is read back into OpenAI-style tool calls: the calls come as tool-call deltas
when their choice ends.

With `auto` the model may answer text or calls: an answer that starts with "{" (or "[" when several
calls are allowed) is held until it ends and becomes calls if it is, otherwise it is streamed as it
comes."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field, replace

from aisf.services.common.llm_types import (
    ChatMessage,
    GenerateRequest,
    ResponseFormat,
    TokenChunk,
    Tool,
    ToolCallDelta,
)

# Calls one answer may make at once: a cap, so a model that keeps adding calls (a weak or random one, under
# a grammar that always allows one more) ends its answer instead of running into max_tokens.
MAX_PARALLEL_CALLS = 8


def _described(tools: tuple[Tool, ...], required: bool, parallel: bool) -> str:
    several = "; to call several at once, answer with only a JSON array of such objects" if parallel else ""
    lines = [
        "You can call these functions. To call one, answer with only a JSON object "
        '{"name": <function name>, "arguments": <its arguments as a JSON object>}'
        + several
        + ("; you must call one." if required else "; otherwise answer in text."),
    ]
    for tool in tools:
        lines.append(f"- {tool.name}: {tool.description or '(no description)'} Parameters: {tool.parameters}")
    return "\n".join(lines)


def _call_schema(tools: tuple[Tool, ...], parallel: bool) -> str:
    options = [
        {
            "type": "object",
            "properties": {"name": {"const": tool.name}, "arguments": json.loads(tool.parameters)},
            "required": ["name", "arguments"],
        }
        for tool in tools
    ]
    call = options[0] if len(options) == 1 else {"anyOf": options}
    if not parallel:
        return json.dumps(call)
    calls = {"type": "array", "items": call, "minItems": 1, "maxItems": MAX_PARALLEL_CALLS}
    return json.dumps({"anyOf": [call, calls]})


def _flattened(message: ChatMessage) -> ChatMessage:
    """Earlier calls and their results as plain messages an engine's chat template takes."""
    if message.tool_calls:
        calls = [{"name": c.name, "arguments": json.loads(c.arguments or "{}")} for c in message.tool_calls]
        text = "\n".join(json.dumps(call) for call in calls)
        return ChatMessage("assistant", f"{message.content}\n{text}".strip())
    if message.role == "tool":
        return ChatMessage("tool", message.content)
    return message


def prepared(request: GenerateRequest) -> tuple[GenerateRequest, ToolCallReader | None]:
    """The request an engine without tool calling is given, and the reader of its answer (None when no
    tool may be called)."""
    messages = tuple(_flattened(m) for m in request.messages)
    choice = request.tool_choice
    if not request.tools or choice.mode == "none":
        return replace(request, messages=messages, tools=()), None
    offered = tuple(t for t in request.tools if choice.mode != "function" or t.name == choice.name)
    required = choice.mode in ("required", "function")
    parallel = choice.parallel and choice.mode != "function"  # a named function is called once
    system = ChatMessage("system", _described(offered, required, parallel))
    if messages and messages[0].role == "system":
        system, messages = ChatMessage("system", f"{messages[0].content}\n\n{system.content}"), messages[1:]
    params = request.params
    if required:
        schema = _call_schema(offered, parallel)
        params = replace(params, response_format=ResponseFormat("json_schema", schema, "call"))
    engine_request = replace(request, messages=(system, *messages), params=params, tools=())
    return engine_request, ToolCallReader(frozenset(t.name for t in offered), required, parallel)


@dataclass(slots=True)
class _Choice:
    held: list[str] = field(default_factory=list)
    holding: bool | None = None  # None: no text seen yet


class ToolCallReader:
    def __init__(self, names: frozenset[str], required: bool, parallel: bool = True) -> None:
        self._names = names
        self._required = required
        self._opening = ("{", "[") if parallel else ("{",)
        self._parallel = parallel

    async def read(self, chunks: AsyncGenerator[TokenChunk, None]) -> AsyncGenerator[TokenChunk, None]:
        """Closing this closes `chunks`: a consumer that leaves stops the engine and frees its slot."""
        choices: dict[int, _Choice] = {}
        async with aclosing(chunks):
            async for chunk in chunks:
                state = choices.setdefault(chunk.index, _Choice(holding=True if self._required else None))
                if state.holding is None and chunk.text.strip():
                    state.holding = self._required or chunk.text.lstrip().startswith(self._opening)
                if not state.holding:
                    if chunk.text or chunk.logprobs or chunk.finish_reason is not None:
                        yield chunk
                    continue
                state.held.append(chunk.text)
                if chunk.finish_reason is not None:
                    yield self._ended(chunk, "".join(state.held))

    def _is_call(self, call: object) -> bool:
        return (
            isinstance(call, dict)
            and call.get("name") in self._names
            and isinstance(call.get("arguments"), dict)
        )

    def _ended(self, last: TokenChunk, text: str) -> TokenChunk:
        """The held answer as its calls (each id, name and arguments in one piece, so a call cut off by
        max_tokens is never half announced); as text when it is not calls after all (an `auto` answer in
        braces, or one cut off)."""
        try:
            answer = json.loads(text)
        except ValueError:
            answer = None
        calls = [answer] if isinstance(answer, dict) else answer if self._parallel else None
        if isinstance(calls, list) and calls and all(self._is_call(call) for call in calls):
            deltas = tuple(
                ToolCallDelta(i, f"call_{uuid.uuid4().hex[:24]}", call["name"], json.dumps(call["arguments"]))
                for i, call in enumerate(calls)
            )
            return TokenChunk("", last.index, "tool_calls", last.usage, tool_calls=deltas)
        return replace(last, text=text)
