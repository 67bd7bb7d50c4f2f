"""The openai_remote adapter: against llama.cpp's real OpenAI server, and against scripted answers for the
upstream behaviours a healthy local server never shows (429, 503, broken streams, mid-stream errors)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aisf.adapters.base import GenerativeAdapter, ModelSpec
from aisf.adapters.openai_remote import OpenAIRemoteAdapter
from aisf.services.common.errors import (
    AisfError,
    DeadlineExceeded,
    EngineMisconfigured,
    EngineOverloaded,
    EngineUnavailable,
    InternalError,
    InvalidInput,
    ModelLoadFailed,
)
from aisf.services.common.llm_types import (
    NO_PARAMETERS,
    ChatMessage,
    EmbedRequest,
    GenerateRequest,
    ResponseFormat,
    SamplingParams,
    TokenChunk,
    TokenLogprob,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    TopLogprob,
)
from aisf.services.common.model_config import ModelConfig
from aisf.services.llm_samples import CONTEXT_LENGTH, LLM_DEMO
from tests.support.llama_server import LlamaServer, running_llama_server

KEY_ENV = "AISF_TEST_LLM_KEY"
KEY = "test-key-not-a-secret"
HELLO = (ChatMessage("user", "hello world"),)
Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


def _spec(base_url: str, **parameters: str | int) -> ModelSpec:
    config = ModelConfig(
        name="remote", backend="openai_remote", parameters={"base_url": base_url, **parameters}
    )
    return ModelSpec("remote", 1, Path("."), config)


async def _collect(adapter: OpenAIRemoteAdapter, request: GenerateRequest) -> list[TokenChunk]:
    return [chunk async for chunk in adapter.stream(request)]


def _chat(**params: Any) -> GenerateRequest:
    return GenerateRequest("remote", messages=HELLO, params=SamplingParams(**params))


# --- against llama.cpp's OpenAI server --------------------------------------------------------------


@pytest.fixture(scope="module")
def server(sample_repository: Path) -> Iterator[LlamaServer]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv(KEY_ENV, KEY)
        with running_llama_server(
            sample_repository / LLM_DEMO / "1" / "model.gguf", "tiny-llama", KEY
        ) as running:
            yield running


@pytest.fixture(scope="module")
async def remote(server: LlamaServer) -> AsyncIterator[OpenAIRemoteAdapter]:
    adapter = OpenAIRemoteAdapter()
    await adapter.load(_spec(server.base_url, remote_model=server.model, api_key_env=KEY_ENV))
    yield adapter
    await adapter.unload()


@pytest.mark.integration
async def test_chat_streams_the_servers_chunks_and_finishes(remote: OpenAIRemoteAdapter) -> None:
    assert isinstance(remote, GenerativeAdapter) and (await remote.health()).ready
    chunks = await _collect(remote, _chat(max_tokens=12, temperature=0.0))
    texts = [c.text for c in chunks if c.text]
    assert len(texts) > 3  # chunk by chunk, not one blob
    assert chunks[-1].finish_reason == "length"


@pytest.mark.integration
async def test_a_response_format_passes_through_to_the_server_and_constrains_its_answer(
    remote: OpenAIRemoteAdapter,
) -> None:
    """llama.cpp's own server takes `json_object` (its server predates `json_schema`): the random sample
    model, which never answers JSON unconstrained, answers a JSON object."""
    form = ResponseFormat("json_object")
    chunks = await _collect(remote, _chat(max_tokens=64, temperature=0.0, response_format=form))
    text = "".join(c.text for c in chunks)
    assert text.lstrip().startswith("{")
    if chunks[-1].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)


@pytest.mark.integration
async def test_a_completion_prompt_streams_through_the_completions_route(remote: OpenAIRemoteAdapter) -> None:
    request = GenerateRequest(
        "remote", prompt="the model", params=SamplingParams(max_tokens=5, temperature=0.0)
    )
    chunks = await _collect(remote, request)
    assert "".join(c.text for c in chunks) and chunks[-1].finish_reason == "length"


@pytest.mark.integration
async def test_a_stream_the_server_abandons_is_engine_unavailable_not_an_empty_answer(
    remote: OpenAIRemoteAdapter,
) -> None:
    # llama_cpp.server checks the context only after answering 200 to a stream, then just closes it.
    request = GenerateRequest(
        "remote", prompt="x" * (CONTEXT_LENGTH + 10), params=SamplingParams(max_tokens=4)
    )
    with pytest.raises(EngineUnavailable, match="the stream ended before \\[DONE\\]"):
        await _collect(remote, request)


@pytest.mark.integration
async def test_embeddings_come_back_one_vector_per_input(remote: OpenAIRemoteAdapter) -> None:
    response = await remote.embed(EmbedRequest("remote", ("hello world", "the model")))
    assert [len(v) for v in response.vectors] == [64, 64]
    assert response.vectors[0] != response.vectors[1]


@pytest.mark.integration
async def test_a_wrong_api_key_fails_the_load_with_the_servers_answer(
    server: LlamaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "wrong")
    with pytest.raises(ModelLoadFailed, match="HTTP 401: Invalid API key") as failure:
        await OpenAIRemoteAdapter().load(
            _spec(server.base_url, remote_model=server.model, api_key_env=KEY_ENV)
        )
    assert "wrong" not in str(failure.value)


@pytest.mark.integration
async def test_a_model_the_server_does_not_serve_fails_the_load(server: LlamaServer) -> None:
    with pytest.raises(ModelLoadFailed, match="serves \\['tiny-llama'\\], not 'other'"):
        await OpenAIRemoteAdapter().load(_spec(server.base_url, remote_model="other", api_key_env=KEY_ENV))


@pytest.mark.integration
async def test_a_server_that_goes_away_is_engine_unavailable_and_not_ready(sample_repository: Path) -> None:
    gguf = sample_repository / LLM_DEMO / "1" / "model.gguf"
    with pytest.MonkeyPatch.context() as env, running_llama_server(gguf, "short-lived", KEY) as short_lived:
        env.setenv(KEY_ENV, KEY)
        adapter = OpenAIRemoteAdapter()
        await adapter.load(_spec(short_lived.base_url, remote_model="short-lived", api_key_env=KEY_ENV))
        short_lived.stop()
        try:
            with pytest.raises(EngineUnavailable, match="unreachable"):
                await _collect(adapter, _chat(max_tokens=4))
            health = await adapter.health()
            assert not health.ready and "unreachable" in health.reason
        finally:
            await adapter.unload()


# --- against scripted upstream answers --------------------------------------------------------------


class _Upstream(httpx.AsyncByteStream):
    """An SSE body that records how far it was read and whether the client closed it."""

    def __init__(self, events: list[str], delay_s: float = 0.0) -> None:
        self.events, self.delay_s = events, delay_s
        self.sent = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for event in self.events:
            await asyncio.sleep(self.delay_s)
            self.sent += 1
            yield event.encode()

    async def aclose(self) -> None:
        self.closed = True


def _sse(*payloads: object) -> list[str]:
    return [f"data: {p if isinstance(p, str) else json.dumps(p)}\n\n" for p in payloads]


def _delta(text: str, index: int = 0, finish: str | None = None) -> dict[str, object]:
    return {"choices": [{"index": index, "delta": {"content": text}, "finish_reason": finish}]}


async def _scripted(handler: Handler, **parameters: str | int) -> OpenAIRemoteAdapter:
    """An adapter whose upstream serves model 'remote' and answers everything else with `handler`."""

    async def route(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "remote", "max_model_len": 4096}]})
        return await handler(request)

    adapter = OpenAIRemoteAdapter(transport=httpx.MockTransport(route))
    await adapter.load(_spec("http://upstream.test/v1", **parameters))
    return adapter


async def test_the_request_carries_sampling_the_key_and_asks_for_usage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, stream=_Upstream(_sse(_delta("hi", finish="stop"), "[DONE]")))

    monkeypatch.setenv(KEY_ENV, KEY)
    adapter = await _scripted(handler, api_key_env=KEY_ENV, remote_model="remote")
    form = ResponseFormat("json_schema", '{"type": "object"}', "thing", strict=True)
    await _collect(
        adapter,
        _chat(
            max_tokens=7,
            temperature=0.5,
            top_p=0.9,
            seed=3,
            stop=("x",),
            n=2,
            response_format=form,
            presence_penalty=0.5,
            frequency_penalty=1.0,
            logit_bias=((11, -100.0),),
        ),
    )
    await _collect(adapter, _chat(max_tokens=7))
    await adapter.unload()
    body = json.loads(seen[0].content)
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "thing", "schema": {"type": "object"}, "strict": True},
    }
    assert (body["presence_penalty"], body["frequency_penalty"], body["logit_bias"]) == (
        0.5,
        1.0,
        {"11": -100.0},
    )
    plain = json.loads(seen[1].content)
    assert not {"response_format", "presence_penalty", "logit_bias"} & set(plain)  # the server's defaults
    assert seen[0].url.path == "/v1/chat/completions"
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert {k: body[k] for k in ("model", "max_tokens", "temperature", "top_p", "seed", "stop", "n")} == {
        "model": "remote",
        "max_tokens": 7,
        "temperature": 0.5,
        "top_p": 0.9,
        "seed": 3,
        "stop": ["x"],
        "n": 2,
    }
    assert body["messages"] == [{"role": "user", "content": "hello world"}]
    assert adapter.context_length() == 4096  # from the model card's max_model_len


async def test_logprobs_are_asked_for_and_read_back_in_both_of_openais_forms() -> None:
    seen: list[dict[str, Any]] = []
    top = [{"token": "a", "logprob": -0.5, "bytes": [97]}, {"token": "b", "logprob": -1.5, "bytes": [98]}]
    chat_event = {
        "choices": [
            {
                "index": 0,
                "delta": {"content": "a"},
                "logprobs": {
                    "content": [{"token": "a", "logprob": -0.5, "bytes": [97], "top_logprobs": top}]
                },
                "finish_reason": "stop",
            }
        ]
    }
    text_event = {
        "choices": [
            {
                "index": 0,
                "text": "a",
                "logprobs": {
                    "tokens": ["a"],
                    "token_logprobs": [-0.5],
                    "top_logprobs": [{"a": -0.5, "b": -1.5}],
                },
                "finish_reason": "stop",
            }
        ]
    }

    async def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        event = text_event if "prompt" in body else chat_event
        return httpx.Response(200, stream=_Upstream(_sse(event, "[DONE]")))

    adapter = await _scripted(handler)
    chat = await _collect(adapter, _chat(logprobs=2))
    text = await _collect(adapter, GenerateRequest("remote", prompt="p", params=SamplingParams(logprobs=2)))
    await adapter.unload()
    assert (seen[0]["logprobs"], seen[0]["top_logprobs"], seen[1]["logprobs"]) == (True, 2, 2)
    expected = TokenLogprob("a", -0.5, b"a", (TopLogprob("a", -0.5, b"a"), TopLogprob("b", -1.5, b"b")))
    assert chat[0].logprobs == (expected,) and text[0].logprobs == (expected,)


async def test_tools_go_to_the_server_as_they_are_and_its_tool_call_deltas_come_back() -> None:
    """An OpenAI server calls tools itself: the request keeps its tools, history and choice."""
    seen: list[dict[str, Any]] = []
    first = {"index": 0, "id": "call_9", "type": "function", "function": {"name": "f", "arguments": ""}}
    events = _sse(
        {"choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [first]}}]},
        {
            "choices": [
                {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]}}
            ]
        },
        {
            "choices": [
                {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}}
            ]
        },
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        "[DONE]",
    )

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, stream=_Upstream(events))

    history = (
        ChatMessage("user", "go"),
        ChatMessage("assistant", "", (ToolCall("call_1", "f", "{}"),)),
        ChatMessage("tool", "done", tool_call_id="call_1"),
    )
    request = GenerateRequest(
        "remote",
        messages=history,
        tools=(Tool("f", "does f"),),
        tool_choice=ToolChoice("function", "f", parallel=False),
    )
    adapter = await _scripted(handler)
    chunks = await _collect(adapter, request)
    await adapter.unload()
    body = seen[0]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {"name": "f", "description": "does f", "parameters": json.loads(NO_PARAMETERS)},
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert body["parallel_tool_calls"] is False  # passed through only when turned off (OpenAI's default: on)
    assert (
        body["messages"][1]["tool_calls"][0]["id"] == "call_1"
        and body["messages"][2]["tool_call_id"] == "call_1"
    )
    deltas = [d for c in chunks for d in c.tool_calls]
    assert deltas == [
        ToolCallDelta(0, "call_9", "f", ""),
        ToolCallDelta(0, arguments='{"a"'),
        ToolCallDelta(0, arguments=": 1}"),
    ]
    assert chunks[-1].finish_reason == "tool_calls"


async def test_finish_chunks_carry_the_usage_the_server_sends_last() -> None:
    events = _sse(
        _delta("a", 0),
        _delta("b", 1),
        _delta("", 0, "stop"),
        _delta("", 1, "length"),
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 9}},
        "[DONE]",
    )

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Upstream(events))

    adapter = await _scripted(handler)
    chunks = await _collect(adapter, _chat(n=2))
    await adapter.unload()
    assert [(c.text, c.index, c.finish_reason) for c in chunks] == [
        ("a", 0, None),
        ("b", 1, None),
        ("", 0, "stop"),
        ("", 1, "length"),
    ]
    assert chunks[-1].usage is not None and (
        chunks[-1].usage.prompt_tokens,
        chunks[-1].usage.total_tokens,
    ) == (5, 14)


async def test_a_consumer_that_stops_closes_the_upstream_response() -> None:
    upstream = _Upstream(_sse(*[_delta(f"t{i} ") for i in range(200)], "[DONE]"), delay_s=0.002)

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=upstream)

    adapter = await _scripted(handler)
    stream = adapter.stream(_chat())
    assert [(await anext(stream)).text for _ in range(3)] == ["t0 ", "t1 ", "t2 "]
    await stream.aclose()
    sent = upstream.sent
    await asyncio.sleep(0.05)
    await adapter.unload()
    assert upstream.closed
    assert upstream.sent == sent < 10  # nothing more was pulled from the server


@pytest.mark.parametrize(
    ("status", "headers", "error", "retry_after", "attempts"),
    [
        (400, {}, InvalidInput, None, 1),
        (404, {}, EngineMisconfigured, None, 1),
        (429, {"retry-after": "7"}, EngineOverloaded, 7, 1),
        (503, {"retry-after": "2"}, EngineUnavailable, 2, 3),
        (504, {}, DeadlineExceeded, None, 1),
        (500, {}, InternalError, None, 1),
        (401, {}, EngineMisconfigured, None, 1),
        (403, {}, EngineMisconfigured, None, 1),
    ],
)
async def test_upstream_statuses_become_typed_errors_through_the_shared_table(
    status: int, headers: dict[str, str], error: type[AisfError], retry_after: int | None, attempts: int
) -> None:
    """Unavailable upstreams are retried (twice by default); the last error keeps the upstream's
    Retry-After. Not retried: the caller's mistakes, an overloaded upstream (its Retry-After goes to the
    caller; a retry would add to its load and spend the key's rate limit) and our own misconfiguration
    (refused credentials, a model the upstream lacks: 503 engine_misconfigured, never the caller's 404)."""
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(status, headers=headers, json={"error": {"message": "bad temperature"}})

    adapter = await _scripted(handler)
    with pytest.raises(error, match=f"HTTP {status}: bad temperature") as raised:
        await _collect(adapter, _chat())
    assert calls == attempts
    with pytest.raises(error):
        await adapter.embed(EmbedRequest("remote", ("x",)))
    await adapter.unload()
    assert type(raised.value) is error
    if retry_after is not None:
        assert raised.value.retry_after == retry_after


async def test_a_stale_pooled_connection_is_retried_then_engine_unavailable() -> None:
    attempts = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        if attempts in (1, 3, 4, 5):  # the server had closed the kept-alive connection
            raise httpx.ReadError("connection reset by peer")
        return httpx.Response(200, stream=_Upstream(_sse(_delta("a", finish="stop"), "[DONE]")))

    adapter = await _scripted(handler)
    assert [c.finish_reason for c in await _collect(adapter, _chat())] == [None, "stop"]
    with pytest.raises(EngineUnavailable, match="unreachable: ReadError"):
        await _collect(adapter, _chat())
    await adapter.unload()
    assert attempts == 5


async def test_a_stream_that_breaks_off_before_done_is_engine_unavailable() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Upstream(_sse(_delta("a"))))

    adapter = await _scripted(handler)
    with pytest.raises(EngineUnavailable, match="ended before \\[DONE\\]"):
        await _collect(adapter, _chat())
    await adapter.unload()


async def test_an_error_event_after_the_first_chunk_is_a_typed_error() -> None:
    error_event = {"object": "error", "message": "prompt too long", "code": 400}

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Upstream(_sse(_delta("a"), error_event, "[DONE]")))

    adapter = await _scripted(handler)
    with pytest.raises(InvalidInput, match="prompt too long"):
        await _collect(adapter, _chat())
    await adapter.unload()


async def test_an_unreachable_server_fails_the_load_and_a_missing_key_variable_too() -> None:
    with pytest.raises(ModelLoadFailed, match="unreachable"):
        await OpenAIRemoteAdapter().load(_spec("http://127.0.0.1:9/v1", timeout_s=2))
    with pytest.raises(ModelLoadFailed, match="AISF_TEST_UNSET_KEY is not set"):
        await OpenAIRemoteAdapter().load(_spec("http://127.0.0.1:9/v1", api_key_env="AISF_TEST_UNSET_KEY"))
