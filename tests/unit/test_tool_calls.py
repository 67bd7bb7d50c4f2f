"""Tool calling for engines without their own: how the request is rewritten for the engine, and how its
answer is read back into tool calls or left as text."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from contextlib import aclosing

from aisf.services.common.llm_types import (
    ChatMessage,
    GenerateRequest,
    TokenChunk,
    Tool,
    ToolCall,
    ToolChoice,
    Usage,
)
from aisf.services.router.tool_calls import MAX_PARALLEL_CALLS, ToolCallReader, prepared

WEATHER = Tool("get_weather", "The weather", '{"type": "object", "properties": {"city": {"type": "string"}}}')
TIME = Tool("get_time")


def _request(choice: ToolChoice, *messages: ChatMessage) -> GenerateRequest:
    asked = messages or (ChatMessage("user", "weather in Paris?"),)
    return GenerateRequest("m", messages=asked, tools=(WEATHER, TIME), tool_choice=choice)


async def _chunks(*pieces: str, finish: str = "stop") -> AsyncGenerator[TokenChunk, None]:
    for piece in pieces[:-1]:
        yield TokenChunk(piece)
    yield TokenChunk(pieces[-1], 0, finish, Usage(3, len(pieces)))  # type: ignore[arg-type]


async def _read(reader: ToolCallReader, chunks: AsyncGenerator[TokenChunk, None]) -> list[TokenChunk]:
    return [chunk async for chunk in reader.read(chunks)]


def test_a_required_call_constrains_decoding_to_the_offered_tools_calls() -> None:
    engine, reader = prepared(_request(ToolChoice("required", parallel=False)))
    assert reader is not None and engine.tools == ()
    assert engine.messages[0].role == "system" and "get_weather" in engine.messages[0].content
    assert "JSON array" not in engine.messages[0].content
    schema = json.loads(engine.params.response_format.schema)
    assert [option["properties"]["name"]["const"] for option in schema["anyOf"]] == [
        "get_weather",
        "get_time",
    ]


def test_parallel_calls_are_offered_as_one_call_or_an_array_of_calls() -> None:
    engine, _ = prepared(_request(ToolChoice("required")))  # OpenAI's default: parallel_tool_calls true
    assert "JSON array" in engine.messages[0].content
    one, several = json.loads(engine.params.response_format.schema)["anyOf"]
    assert [option["properties"]["name"]["const"] for option in one["anyOf"]] == ["get_weather", "get_time"]
    assert several == {"type": "array", "items": one, "minItems": 1, "maxItems": MAX_PARALLEL_CALLS}


async def test_an_array_of_calls_is_read_into_one_delta_per_call_in_order() -> None:
    reader = ToolCallReader(frozenset({"get_weather", "get_time"}), required=False)
    answer = (
        '[{"name": "get_weather", "arguments": {"city": "Paris"}},',
        ' {"name": "get_time", "arguments": {}}]',
    )
    (ended,) = await _read(reader, _chunks(*answer))
    assert ended.finish_reason == "tool_calls"
    assert [(d.index, d.name, json.loads(d.arguments)) for d in ended.tool_calls] == [
        (0, "get_weather", {"city": "Paris"}),
        (1, "get_time", {}),
    ]
    assert len({d.id for d in ended.tool_calls}) == 2


async def test_without_parallel_calls_an_array_is_text_and_brackets_stream_as_text() -> None:
    reader = ToolCallReader(frozenset({"get_weather"}), required=False, parallel=False)
    answer = '[{"name": "get_weather", "arguments": {}}]'
    streamed = await _read(reader, _chunks(answer[:10], answer[10:]))
    assert [c.text for c in streamed] == [answer[:10], answer[10:]] and not streamed[-1].tool_calls
    mixed = ToolCallReader(frozenset({"get_weather"}), required=False)
    (ended,) = await _read(mixed, _chunks('[{"name": "get_weather", "arguments": {}}, 3]'))
    assert not ended.tool_calls and ended.text.startswith("[")  # one item is no call: all of it is text


def test_a_named_function_offers_only_that_one_and_none_offers_nothing() -> None:
    engine, _ = prepared(_request(ToolChoice("function", "get_time")))
    assert json.loads(engine.params.response_format.schema)["properties"]["name"]["const"] == "get_time"
    assert "get_weather" not in engine.messages[0].content
    plain, reader = prepared(_request(ToolChoice("none")))
    assert reader is None and plain.messages[0].role == "user" and plain.params.response_format.type == "text"


def test_earlier_calls_and_results_become_messages_a_chat_template_takes() -> None:
    call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    history = (
        ChatMessage("user", "weather?"),
        ChatMessage("assistant", "", (call,)),
        ChatMessage("tool", '{"sky": "clear"}', tool_call_id="call_1"),
    )
    engine, _ = prepared(_request(ToolChoice("auto"), *history))
    assistant, tool = engine.messages[2], engine.messages[3]
    assert json.loads(assistant.content) == {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert (tool.role, tool.content) == ("tool", '{"sky": "clear"}')


async def test_a_call_is_read_into_one_delta_with_id_name_and_arguments() -> None:
    reader = ToolCallReader(frozenset({"get_weather"}), required=True)
    chunks = await _read(reader, _chunks('{"name": "get_wea', 'ther", "arguments": {"city"', ': "Paris"}}'))
    (ended,) = chunks
    (delta,) = ended.tool_calls
    assert ended.finish_reason == "tool_calls" and ended.usage == Usage(3, 3) and not ended.text
    assert delta.id.startswith("call_") and delta.name == "get_weather"
    assert json.loads(delta.arguments) == {"city": "Paris"}


async def test_with_auto_text_streams_as_it_comes_and_braces_that_are_no_call_stay_text() -> None:
    reader = ToolCallReader(frozenset({"get_weather"}), required=False)
    streamed = await _read(reader, _chunks("It is ", "sunny."))
    assert [c.text for c in streamed] == ["It is ", "sunny."] and streamed[-1].finish_reason == "stop"
    braces = await _read(reader, _chunks('{"a": ', "1}"))
    assert [(c.text, c.finish_reason, c.tool_calls) for c in braces] == [('{"a": 1}', "stop", ())]


async def test_a_call_cut_off_by_max_tokens_is_text_never_half_a_call() -> None:
    reader = ToolCallReader(frozenset({"get_weather"}), required=True)
    (cut,) = await _read(reader, _chunks('{"name": "get_weather", "argu', finish="length"))
    assert cut.finish_reason == "length" and not cut.tool_calls and cut.text.startswith('{"name"')


async def test_a_consumer_that_leaves_closes_the_engines_stream() -> None:
    """Closing the reader closes what it reads: that is what stops the engine and frees its slot."""
    closed: list[bool] = []

    async def engine() -> AsyncGenerator[TokenChunk, None]:
        try:
            while True:
                yield TokenChunk("word ")
        finally:
            closed.append(True)

    reader = ToolCallReader(frozenset({"get_weather"}), required=False)
    async with aclosing(reader.read(engine())) as chunks:
        assert (await anext(chunks)).text == "word "
    assert closed == [True]
