"""The official openai SDK works against `aisf serve` (sample llm-demo): streaming, options, models."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest
from openai import OpenAI

from tests.support.processes import AisfProcess

pytestmark = pytest.mark.integration

MODEL = "llm-demo"
HELLO = [{"role": "user", "content": "hello world"}]


@pytest.fixture(scope="module")
def client(aisf_server: AisfProcess) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"http://{aisf_server.http_url}/v1", api_key="unused", max_retries=0) as client:
        yield client


def test_a_streamed_chat_yields_tokens_as_they_are_generated(client: OpenAI) -> None:
    arrivals: list[int] = []
    pieces: list[str] = []
    finishes: list[str | None] = []
    stream = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=480, stream=True)
    with stream:
        for chunk in stream:
            arrivals.append(time.perf_counter_ns())
            pieces.append(chunk.choices[0].delta.content or "")
            finishes.append(chunk.choices[0].finish_reason)
            assert (chunk.choices[0].delta.role is not None) == (len(arrivals) == 1)
            if len(arrivals) == 1:
                assert chunk.choices[0].delta.role == "assistant" and pieces[0]
                assert not stream.response.is_closed  # handed over before the response ended
    # Many chunks, each its own event (not one buffered answer; pieces the client had not read yet come
    # merged); only the last ends the choice.
    assert len(arrivals) > 20 and "".join(pieces)
    assert finishes == [None] * (len(finishes) - 1) + ["length"]
    assert arrivals == sorted(arrivals) and arrivals[0] < arrivals[-1]
    assert stream.response.is_closed


def test_a_chat_without_streaming_returns_one_answer_with_usage(client: OpenAI) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=HELLO, max_completion_tokens=12)
    assert reply.object == "chat.completion" and reply.model == MODEL
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 12 and reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 12


def test_stream_options_include_usage_adds_a_final_usage_chunk(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=5, stream=True, stream_options={"include_usage": True}
    )
    with stream:
        chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert all(c.usage is None for c in chunks[:-1])


def test_temperature_zero_is_deterministic_and_seed_makes_sampling_repeatable(client: OpenAI) -> None:
    def text(**options: object) -> str:
        reply = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=16, **options)
        return str(reply.choices[0].message.content)

    assert text(temperature=0) == text(temperature=0)
    assert text(temperature=1.0, top_p=0.9, seed=7) == text(temperature=1.0, top_p=0.9, seed=7)
    assert len({text(temperature=1.0, seed=seed) for seed in (1, 2, 3)}) > 1


def test_a_stop_string_ends_the_answer_before_it(client: OpenAI) -> None:
    greedy = client.completions.create(model=MODEL, prompt="the", max_tokens=16, temperature=0)
    text = greedy.choices[0].text
    stop = text.split()[2]
    stopped = client.completions.create(model=MODEL, prompt="the", max_tokens=16, temperature=0, stop=[stop])
    assert stopped.choices[0].finish_reason == "stop"
    assert stop not in stopped.choices[0].text and text.startswith(stopped.choices[0].text)


def test_n_returns_that_many_choices(client: OpenAI) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4, n=3, seed=1)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert reply.usage is not None and reply.usage.completion_tokens == 12


def test_completions_stream_and_answer(client: OpenAI) -> None:
    reply = client.completions.create(model=MODEL, prompt="hello", max_tokens=6)
    assert reply.object == "text_completion" and reply.choices[0].text
    assert reply.usage is not None and reply.usage.completion_tokens == 6
    with client.completions.create(model=MODEL, prompt="hello", max_tokens=6, stream=True) as stream:
        pieces = [c.choices[0].text for c in stream if c.choices]
    assert len(pieces) >= 2 and "".join(pieces)


def test_models_and_embeddings_work(client: OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert MODEL in ids and "tabular-demo" not in ids
    assert client.models.retrieve(MODEL).id == MODEL
    embedded = client.embeddings.create(model=MODEL, input=["hello world", "the model"])
    assert len(embedded.data) == 2 and len(embedded.data[0].embedding) > 8
    assert embedded.usage.prompt_tokens > 0


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"functions": [{"name": "lookup", "parameters": {}}]}, "functions"),  # the deprecated API
        ({"audio": {"voice": "alloy", "format": "mp3"}}, "audio"),
    ],
)
def test_unsupported_options_get_a_clear_400(client: OpenAI, options: dict[str, object], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=MODEL, messages=HELLO, **options)
    assert raised.value.status_code == 400 and raised.value.param == param
    assert "not supported" in raised.value.message


VERDICT = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "enum": ["yes", "no"]},
        "score": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
    },
    "required": ["answer", "score"],
    "additionalProperties": False,
}
# Numeric bounds are beyond llama.cpp's grammars: a strict schema with them is refused, never half-kept.
BOUNDED = {**VERDICT, "properties": {"score": {"type": "integer", "maximum": 9}}, "required": ["score"]}
AS_VERDICT: Any = {
    "type": "json_schema",
    "json_schema": {"name": "verdict", "schema": VERDICT, "strict": True},
}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_json_schema_response_format_gets_json_valid_for_the_schema(client: OpenAI, seed: int) -> None:
    """The sample model's weights are random: without the schema its answer is never JSON."""
    reply = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=256, temperature=0.9, seed=seed, response_format=AS_VERDICT
    )
    assert reply.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(reply.choices[0].message.content or ""), VERDICT)


def test_a_streamed_structured_answer_reassembles_into_valid_json(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=256, seed=7, stream=True, response_format=AS_VERDICT
    )
    with stream:
        pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    # Streamed as generated, not held until it parses (pieces the client had not read yet come merged).
    assert len([piece for piece in pieces if piece]) >= 2
    jsonschema.validate(json.loads("".join(pieces)), VERDICT)


def test_a_json_object_response_format_answers_a_json_object(client: OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=64, temperature=0, response_format={"type": "json_object"}
    )
    content = reply.choices[0].message.content or ""
    assert content.lstrip().startswith("{")
    if reply.choices[0].finish_reason == "stop":  # a random model may still be inside a string at the limit
        assert isinstance(json.loads(content), dict)


@pytest.mark.parametrize(
    ("response_format", "message"),
    [
        ({"type": "json_schema", "json_schema": {"name": "x"}}, "schema: is required"),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "wrong"}}},
            "valid JSON Schema",
        ),
        ({"type": "xml"}, "response_format"),
        (
            {"type": "json_schema", "json_schema": {**AS_VERDICT["json_schema"], "schema": BOUNDED}},
            "properties.score.maximum: llama.cpp's grammars cannot enforce",
        ),
    ],
)
def test_a_bad_response_format_is_a_400_naming_it(
    client: OpenAI, response_format: dict[str, Any], message: str
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=MODEL, messages=HELLO, response_format=response_format)  # type: ignore[arg-type]
    assert raised.value.status_code == 400 and "response_format" in raised.value.message
    assert message in raised.value.message


def test_chat_logprobs_give_each_token_and_its_alternatives(client: OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=10, temperature=0, logprobs=True, top_logprobs=2
    )
    content = reply.choices[0].logprobs.content if reply.choices[0].logprobs else None
    assert content is not None and len(content) == 10
    assert "".join(entry.token for entry in content) == reply.choices[0].message.content
    assert all(len(e.top_logprobs) == 2 and e.top_logprobs[0].token == e.token for e in content)
    assert all(e.logprob <= 0 and bytes(e.bytes or []).decode(errors="replace") == e.token for e in content)


def test_streamed_logprobs_come_with_the_tokens_they_belong_to(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=10, temperature=0, logprobs=True, stream=True
    )
    with stream:
        chunks = [chunk.choices[0] for chunk in stream if chunk.choices]
    with_text = [c for c in chunks if c.delta.content]
    assert with_text and all(
        c.logprobs and c.logprobs.content and "".join(e.token for e in c.logprobs.content) == c.delta.content
        for c in with_text
    )


def test_completion_logprobs_use_the_legacy_shape(client: OpenAI) -> None:
    reply = client.completions.create(model=MODEL, prompt="the", max_tokens=6, temperature=0, logprobs=2)
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens and len(logprobs.tokens) == 6
    assert "".join(logprobs.tokens) == reply.choices[0].text
    assert logprobs.token_logprobs and all(v is not None and v <= 0 for v in logprobs.token_logprobs)
    assert logprobs.top_logprobs and all(len(top) == 2 for top in logprobs.top_logprobs)
    assert logprobs.text_offset == sorted(logprobs.text_offset or []) and logprobs.text_offset[0] == 0


@pytest.mark.parametrize(
    ("options", "param"),
    [({"top_logprobs": 2}, "top_logprobs"), ({"logprobs": True, "top_logprobs": 21}, "top_logprobs")],
)
def test_bad_logprob_options_are_a_400_naming_them(
    client: OpenAI, options: dict[str, Any], param: str
) -> None:
    _refused(client, HELLO, options, param)


def _refused(client: OpenAI, messages: Any, options: dict[str, Any], message: str) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2, **options)
    assert raised.value.status_code == 400 and message in raised.value.message


def test_a_logprobs_request_never_comes_from_the_semantic_cache(client: OpenAI) -> None:
    """A stored answer keeps only its text; the request is answered by the engine, with logprobs."""
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=HELLO, max_tokens=4, temperature=0, logprobs=True
        )
        assert raw.headers.get("x-aisf-cache") != "hit" and raw.parse().choices[0].logprobs is not None


WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}, "celsius": {"type": "boolean"}},
            "required": ["city", "celsius"],
            "additionalProperties": False,
        },
    },
}
TIME: Any = {"type": "function", "function": {"name": "get_time", "description": "The time now"}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.mark.parametrize(
    ("tool_choice", "parallel"),
    [
        ("required", None),
        ("required", False),
        ({"type": "function", "function": {"name": "get_weather"}}, None),
    ],
)
def test_a_required_tool_call_names_a_tool_with_arguments_valid_for_its_parameters(
    client: OpenAI, tool_choice: Any, parallel: bool | None
) -> None:
    extra: Any = {} if parallel is None else {"parallel_tool_calls": parallel}
    reply = client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice=tool_choice,
        max_tokens=400,
        seed=5,
        **extra,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    calls = choice.message.tool_calls
    if parallel is False or tool_choice != "required":
        assert len(calls) == 1  # one call: parallel calls off, or a named function
    assert len({call.id for call in calls}) == len(calls)
    for call in calls:
        assert call.id.startswith("call_") and call.type == "function"
        assert call.function.name in ("get_weather", "get_time")
        if tool_choice != "required":
            assert call.function.name == "get_weather"
        if call.function.name == "get_weather":
            jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])


def test_a_streamed_tool_call_is_reassembled_by_the_sdk(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=400,
        seed=6,
        stream=True,
    )
    with stream:
        chunks = [chunk.choices[0] for chunk in stream if chunk.choices]
    deltas = [d for c in chunks for d in c.delta.tool_calls or []]
    assert chunks[-1].finish_reason == "tool_calls" and deltas and deltas[0].id
    assert deltas[0].function and deltas[0].function.name == "get_weather"
    arguments: dict[int, str] = {}  # each call's pieces, by its index (several calls may come)
    for d in deltas:
        arguments[d.index] = arguments.get(d.index, "") + ((d.function.arguments or "") if d.function else "")
    assert sorted(arguments) == list(range(len(arguments)))
    for joined in arguments.values():
        jsonschema.validate(json.loads(joined), WEATHER["function"]["parameters"])


def test_tool_choice_none_answers_text_and_a_tool_result_continues_the_conversation(client: OpenAI) -> None:
    first = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required", max_tokens=400, seed=7
    )
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    conversation: Any = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear", "celsius": 21}'},
    ]
    follow_up = client.chat.completions.create(
        model=MODEL, messages=conversation, tools=[WEATHER], tool_choice="none", max_tokens=8
    )
    assert follow_up.choices[0].message.content and not follow_up.choices[0].message.tool_calls
    assert follow_up.choices[0].finish_reason == "length"


def test_tool_choice_auto_answers_either_text_or_a_call(client: OpenAI) -> None:
    """The sample model's weights are random: it answers text; either way the answer is well formed."""
    reply = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], max_tokens=8)
    choice = reply.choices[0]
    assert bool(choice.message.tool_calls) == (choice.finish_reason == "tool_calls")
    assert choice.message.content or choice.message.tool_calls


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tool_choice": "required"}, "tool_choice: 'required' needs tools"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "no tool"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 1}}}]},
            "tools[0].function.parameters",
        ),
        ({"tools": [WEATHER, WEATHER]}, "appears twice"),
    ],
)
def test_bad_tool_requests_are_a_400_naming_the_field(
    client: OpenAI, options: dict[str, Any], message: str
) -> None:
    _refused(client, ASK, options, message)


def test_a_tool_message_without_its_call_id_is_a_400(client: OpenAI) -> None:
    messages: Any = [*ASK, {"role": "tool", "content": "21 degrees"}]
    with pytest.raises(openai.BadRequestError, match="tool_call_id"):
        client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2)


def test_logit_bias_steers_every_token_to_the_biased_one(client: OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=5, temperature=0, logprobs=True, logit_bias={"300": 100}
    )
    content = reply.choices[0].logprobs.content if reply.choices[0].logprobs else None
    assert content is not None and len(content) == 5 and len({entry.token for entry in content}) == 1


def test_a_frequency_penalty_makes_a_greedy_answer_repeat_itself_less(client: OpenAI) -> None:
    def distinct(**penalty: float) -> int:
        reply = client.completions.create(
            model=MODEL, prompt="the", max_tokens=40, temperature=0, logprobs=0, **penalty
        )
        return len(set(reply.choices[0].logprobs.tokens or [])) if reply.choices[0].logprobs else 0

    assert distinct(frequency_penalty=2.0) > distinct()
    assert distinct(presence_penalty=2.0) > distinct()


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"logit_bias": {"token": 1}}, "logit_bias"),
        ({"logit_bias": {"999999": 1}}, "logit_bias"),
        ({"frequency_penalty": 3}, "frequency_penalty"),
    ],
)
def test_bad_penalties_and_biases_are_a_400_naming_them(
    client: OpenAI, options: dict[str, Any], param: str
) -> None:
    _refused(client, HELLO, options, param)
