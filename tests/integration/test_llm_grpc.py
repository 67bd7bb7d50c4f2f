"""gRPC clients get the LLM lane through aisf.llm.v1.LlmService: streams, embeddings, errors, cancel."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import grpc
import pytest

from aisf.llm.v1 import llm_pb2 as pb
from aisf.llm.v1 import llm_pb2_grpc as pb_grpc
from aisf.services.llm_samples import CONTEXT_LENGTH
from tests.support.llm import scrape
from tests.support.processes import AisfProcess

pytestmark = pytest.mark.integration

MODEL = "llm-demo"
HELLO = [pb.ChatMessage(role=pb.ROLE_USER, content="hello world")]


@pytest.fixture(scope="module")
def stub(aisf_server: AisfProcess) -> Iterator[pb_grpc.LlmServiceStub]:
    with grpc.insecure_channel(aisf_server.grpc_url) as channel:
        yield pb_grpc.LlmServiceStub(channel)


def test_a_chat_streams_choices_then_usage(stub: pb_grpc.LlmServiceStub) -> None:
    request = pb.ChatCompletionRequest(model=MODEL, messages=HELLO, params=pb.SamplingParams(max_tokens=8))
    replies = list(stub.ChatCompletion(request, timeout=30))
    pieces = [r for r in replies if r.HasField("choice")]
    # Streamed (pieces a slower reader has not taken yet arrive merged), the last one ending the choice.
    assert len(pieces) >= 2 and pieces[-1].choice.finish_reason == pb.FINISH_REASON_LENGTH
    assert not replies[-1].HasField("choice") and replies[-1].usage.completion_tokens == 8
    assert {(r.model, r.model_version) for r in replies} == {(MODEL, "1")} and len(
        {r.id for r in replies}
    ) == 1


def test_a_completion_with_temperature_zero_repeats_itself(stub: pb_grpc.LlmServiceStub) -> None:
    params = pb.SamplingParams(max_tokens=10, temperature=0.0)
    request = pb.CompletionRequest(model=MODEL, prompt="the", params=params)

    def text() -> str:
        return "".join(r.choice.text for r in stub.Completion(request, timeout=30))

    assert text() == text() != ""


def test_embeddings_and_model_listing(stub: pb_grpc.LlmServiceStub) -> None:
    embedded = stub.Embed(pb.EmbedRequest(model=MODEL, inputs=["a", "b c"]), timeout=30)
    assert len(embedded.embeddings) == 2 and embedded.model_version == "1"
    cards = {m.name: m for m in stub.ListModels(pb.ListModelsRequest(), timeout=30).models}
    assert cards[MODEL].kind == pb.MODEL_KIND_GENERATIVE and cards[MODEL].context_length == CONTEXT_LENGTH


@pytest.mark.parametrize(
    ("request_", "status", "detail"),
    [
        (pb.ChatCompletionRequest(model="nope", messages=HELLO), grpc.StatusCode.NOT_FOUND, "unknown model"),
        (pb.ChatCompletionRequest(model=MODEL), grpc.StatusCode.INVALID_ARGUMENT, "messages:"),
        (
            pb.ChatCompletionRequest(model=MODEL, messages=[pb.ChatMessage(content="no role")]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "messages[0].role:",
        ),
        (
            pb.ChatCompletionRequest(model=MODEL, messages=HELLO, params=pb.SamplingParams(max_tokens=-2)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "max_tokens:",
        ),
    ],
)
def test_bad_requests_end_the_stream_with_a_typed_status(
    stub: pb_grpc.LlmServiceStub, request_: pb.ChatCompletionRequest, status: grpc.StatusCode, detail: str
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        list(stub.ChatCompletion(request_, timeout=30))
    assert raised.value.code() == status and detail in raised.value.details()


def test_cancelling_the_call_stops_the_engine(stub: pb_grpc.LlmServiceStub, aisf_server: AisfProcess) -> None:
    labels = {"model": MODEL, "version": "1"}
    params = pb.SamplingParams(max_tokens=480, n=16)
    before = scrape(aisf_server.metrics_port, "aisf_llm_engine_tokens_total", **labels)
    call = stub.ChatCompletion(
        pb.ChatCompletionRequest(model=MODEL, messages=HELLO, params=params), timeout=60
    )
    for _ in range(5):
        next(call)
    call.cancel()
    deadline = time.monotonic() + 10
    while scrape(aisf_server.metrics_port, "aisf_llm_generations_in_flight", **labels) != 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stopped_at = scrape(aisf_server.metrics_port, "aisf_llm_engine_tokens_total", **labels)
    time.sleep(0.5)
    assert scrape(aisf_server.metrics_port, "aisf_llm_engine_tokens_total", **labels) == stopped_at
    # 16 x 480 tokens were asked for; the server may run ahead of a slow reader by what HTTP/2 flow
    # control lets it send, but not to the end.
    assert 0 < stopped_at - before < 16 * 480 / 2


def test_speculative_decoding_counters_are_exported(
    stub: pb_grpc.LlmServiceStub, aisf_server: AisfProcess
) -> None:
    labels = {"model": MODEL, "version": "1"}
    proposed = scrape(aisf_server.metrics_port, "aisf_llm_speculative_total", **labels, stat="proposed")
    request = pb.ChatCompletionRequest(model=MODEL, messages=HELLO, params=pb.SamplingParams(max_tokens=32))
    list(stub.ChatCompletion(request, timeout=30))
    assert (
        scrape(aisf_server.metrics_port, "aisf_llm_speculative_total", **labels, stat="proposed") > proposed
    )
    assert scrape(aisf_server.metrics_port, "aisf_llm_speculative_total", **labels, stat="accepted") > 0


def test_a_structured_output_over_grpc_is_json_of_the_schema(stub: pb_grpc.LlmServiceStub) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    form = pb.ResponseFormat(
        type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, json_schema=json.dumps(schema), name="s"
    )
    params = pb.SamplingParams(max_tokens=32, temperature=0.8, seed=3, response_format=form)
    replies = stub.ChatCompletion(
        pb.ChatCompletionRequest(model=MODEL, messages=HELLO, params=params), timeout=30
    )
    answer = json.loads("".join(r.choice.text for r in replies))
    assert set(answer) <= {"ok"} and isinstance(answer["ok"], bool)


def test_a_schema_that_is_not_json_is_invalid_argument_naming_it(stub: pb_grpc.LlmServiceStub) -> None:
    form = pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, json_schema="{not json")
    params = pb.SamplingParams(max_tokens=4, response_format=form)
    with pytest.raises(grpc.RpcError) as raised:
        list(
            stub.ChatCompletion(
                pb.ChatCompletionRequest(model=MODEL, messages=HELLO, params=params), timeout=30
            )
        )
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "response_format.json_schema.schema" in (raised.value.details() or "")


def test_logprobs_over_grpc_come_on_each_choice_piece(stub: pb_grpc.LlmServiceStub) -> None:
    params = pb.SamplingParams(max_tokens=6, temperature=0.0, logprobs=1)
    replies = list(
        stub.ChatCompletion(pb.ChatCompletionRequest(model=MODEL, messages=HELLO, params=params), timeout=30)
    )
    entries = [e for r in replies if r.HasField("choice") for e in r.choice.logprobs]
    assert len(entries) == 6 and all(len(e.top_logprobs) == 1 and e.logprob <= 0 for e in entries)
    assert "".join(e.token for e in entries) == "".join(r.choice.text for r in replies)


def test_a_required_tool_call_over_grpc(stub: pb_grpc.LlmServiceStub) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 10}},
        "required": ["city"],
    }
    request = pb.ChatCompletionRequest(
        model=MODEL,
        messages=HELLO,
        params=pb.SamplingParams(max_tokens=100, seed=2),
        tools=[pb.Tool(name="get_weather", parameters_json=json.dumps(schema))],
        tool_choice=pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED),
    )
    replies = list(stub.ChatCompletion(request, timeout=30))
    ended = next(r for r in replies if r.HasField("choice") and r.choice.finish_reason)
    assert ended.choice.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    (call,) = ended.choice.tool_calls
    assert call.name == "get_weather" and call.id and isinstance(json.loads(call.arguments)["city"], str)
