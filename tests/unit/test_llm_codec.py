"""aisf.llm.v1 messages round-trip to the domain types unchanged; bad enums are rejected by field."""

from __future__ import annotations

import pytest

from aisf.llm.v1 import llm_pb2 as pb
from aisf.services.common import llm_codec as codec
from aisf.services.common.errors import InvalidInput
from aisf.services.common.llm_outputs import CacheMode, EmbedResult, GenerationChunk, ModelCard, ModelKind
from aisf.services.common.llm_types import (
    ChatMessage,
    EmbedRequest,
    EmbedResponse,
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
    Usage,
)

# Values a float32 holds exactly: the wire keeps them as they are.
LOGPROB = TokenLogprob("h", -0.5, b"h", (TopLogprob("h", -0.5, b"h"), TopLogprob("\ufffd", -1.25, b"\xc3")))
SCHEMA = ResponseFormat("json_schema", '{"type": "object"}', "answer", strict=True)
PARAMS = SamplingParams(
    max_tokens=7,
    temperature=0.7,
    top_p=0.9,
    stop=("\n", "END"),
    seed=42,
    n=2,
    response_format=SCHEMA,
    logprobs=3,
    presence_penalty=0.5,
    frequency_penalty=-1.25,
    logit_bias=((7, -100.0), (300, 2.5)),
)


@pytest.mark.parametrize("mode", list(CacheMode))
def test_a_chat_request_survives_the_wire_with_tenant_and_request_id(mode: CacheMode) -> None:
    messages = tuple(ChatMessage(role, f"{role} says") for role in ("system", "user", "assistant", "tool"))
    request = GenerateRequest("m", "3", messages=messages, params=PARAMS)
    wire = pb.ChatCompletionRequest.FromString(codec.chat_request_to_proto(request, mode).SerializeToString())
    decoded, decoded_mode = codec.chat_request_from_proto(wire, "acme", "rid-1")
    assert decoded == GenerateRequest(
        "m", "3", messages=messages, params=PARAMS, request_id="rid-1", tenant="acme"
    )
    assert decoded_mode is mode


def test_a_completion_request_keeps_defaults_when_fields_are_unset() -> None:
    request = GenerateRequest("m", prompt="Once upon")
    wire = codec.completion_request_to_proto(request, CacheMode.DEFAULT)
    wire.params.ClearField("temperature")
    decoded, _ = codec.completion_request_from_proto(wire, "", "")
    assert decoded.params == SamplingParams()
    assert decoded.prompt == "Once upon"


def test_an_unspecified_role_is_rejected_naming_the_message() -> None:
    wire = pb.ChatCompletionRequest(model="m", messages=[pb.ChatMessage(role=pb.ROLE_USER), pb.ChatMessage()])
    with pytest.raises(InvalidInput, match=r"^messages\[1\]\.role: "):
        codec.chat_request_from_proto(wire, "", "")


@pytest.mark.parametrize(
    "chunk",
    [
        GenerationChunk("id", "m", "1", 1700000000, choice=TokenChunk("hi", 1)),
        GenerationChunk("id", "m", "1", 1700000000, choice=TokenChunk("", 0, "length")),
        GenerationChunk("id", "m", "1", 1700000000, usage=Usage(5, 9), cached=True),
        GenerationChunk("id", "m", "1", 1700000000, choice=TokenChunk("hé", 0, logprobs=(LOGPROB, LOGPROB))),
        GenerationChunk(
            "id",
            "m",
            "1",
            1700000000,
            choice=TokenChunk("", 0, "tool_calls", tool_calls=(ToolCallDelta(0, "call_1", "f", '{"a": 1}'),)),
        ),
    ],
)
def test_generation_chunks_round_trip(chunk: GenerationChunk) -> None:
    for kind in (pb.ChatCompletionResponse, pb.CompletionResponse):
        wire = kind.FromString(codec.chunk_to_proto(chunk, kind).SerializeToString())
        assert codec.chunk_from_proto(wire) == chunk


def test_embeddings_and_model_cards_round_trip() -> None:
    request = EmbedRequest("e", ("a", "b"), "2")
    assert codec.embed_request_from_proto(codec.embed_request_to_proto(request)) == request
    result = EmbedResult("e", "2", EmbedResponse([[0.5, -1.0], [0.25, 2.0]], Usage(4)))
    assert codec.embed_result_from_proto(codec.embed_result_to_proto(result)) == result
    cards = [ModelCard("g", "1", ModelKind.GENERATIVE, 5, 512), ModelCard("e", "2", ModelKind.EMBEDDING, 6)]
    assert codec.model_cards_from_proto(codec.model_cards_to_proto(cards)) == cards


@pytest.mark.parametrize("form", [ResponseFormat(), ResponseFormat("json_object"), SCHEMA])
def test_every_response_format_survives_the_wire(form: ResponseFormat) -> None:
    request = GenerateRequest("m", prompt="p", params=SamplingParams(response_format=form))
    wire = pb.CompletionRequest.FromString(
        codec.completion_request_to_proto(request, CacheMode.DEFAULT).SerializeToString()
    )
    assert codec.completion_request_from_proto(wire, "", "")[0].params.response_format == form


def test_an_unknown_response_format_type_is_rejected_naming_the_field() -> None:
    wire = codec.completion_request_to_proto(GenerateRequest("m", prompt="p"), CacheMode.DEFAULT)
    wire.params.response_format.type = 99  # type: ignore[assignment]
    with pytest.raises(InvalidInput, match="response_format.type"):
        codec.completion_request_from_proto(wire, "", "")


@pytest.mark.parametrize(
    "choice", [ToolChoice(), ToolChoice("none"), ToolChoice("required"), ToolChoice("function", "f")]
)
def test_tools_calls_and_results_survive_the_wire(choice: ToolChoice) -> None:
    messages = (
        ChatMessage("user", "weather?"),
        ChatMessage("assistant", "", (ToolCall("call_1", "f", '{"city": "Paris"}'),)),
        ChatMessage("tool", "sunny", tool_call_id="call_1"),
    )
    tools = (Tool("f", "the weather", '{"type": "object"}'), Tool("g"))
    request = GenerateRequest("m", messages=messages, tools=tools, tool_choice=choice)
    wire = pb.ChatCompletionRequest.FromString(
        codec.chat_request_to_proto(request, CacheMode.DEFAULT).SerializeToString()
    )
    assert codec.chat_request_from_proto(wire, "", "")[0] == request
