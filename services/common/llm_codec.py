"""aisf.llm.v1 messages <-> LLM domain types; the only place the LLM lane touches protobuf."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar, get_args

from aisf.llm.v1 import llm_pb2 as pb
from aisf.services.common.errors import InvalidInput
from aisf.services.common.llm_outputs import CacheMode, EmbedResult, GenerationChunk, ModelCard, ModelKind
from aisf.services.common.llm_types import (
    NO_PARAMETERS,
    ChatMessage,
    EmbedRequest,
    EmbedResponse,
    FinishReason,
    GenerateRequest,
    ResponseFormat,
    ResponseFormatType,
    Role,
    SamplingParams,
    TokenChunk,
    TokenLogprob,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolChoiceMode,
    TopLogprob,
    Usage,
)

_ROLES: dict[Role, pb.Role.ValueType] = {
    "system": pb.ROLE_SYSTEM,
    "user": pb.ROLE_USER,
    "assistant": pb.ROLE_ASSISTANT,
    "tool": pb.ROLE_TOOL,
}
_ROLE_NAMES = {value: name for name, value in _ROLES.items()}
_CACHE_MODES = {
    CacheMode.DEFAULT: pb.CACHE_MODE_UNSPECIFIED,
    CacheMode.BYPASS: pb.CACHE_MODE_BYPASS,
    CacheMode.OPT_IN: pb.CACHE_MODE_OPT_IN,
}
_CACHE_MODE_NAMES = {value: name for name, value in _CACHE_MODES.items()}
_FINISH: dict[str, pb.FinishReason.ValueType] = {
    "stop": pb.FINISH_REASON_STOP,
    "length": pb.FINISH_REASON_LENGTH,
    "tool_calls": pb.FINISH_REASON_TOOL_CALLS,
}
_FINISH_NAMES: dict[int, FinishReason] = {value: name for name, value in _FINISH.items()}  # type: ignore[misc]
_TOOL_MODES: dict[ToolChoiceMode, pb.ToolChoiceMode.ValueType] = {
    "auto": pb.TOOL_CHOICE_MODE_UNSPECIFIED,
    "none": pb.TOOL_CHOICE_MODE_NONE,
    "required": pb.TOOL_CHOICE_MODE_REQUIRED,
    "function": pb.TOOL_CHOICE_MODE_FUNCTION,
}
_TOOL_MODE_NAMES = {value: name for name, value in _TOOL_MODES.items()}
_KINDS = {ModelKind.GENERATIVE: pb.MODEL_KIND_GENERATIVE, ModelKind.EMBEDDING: pb.MODEL_KIND_EMBEDDING}
_KIND_NAMES = {value: name for name, value in _KINDS.items()}
assert set(_ROLES) == set(get_args(Role))

Chunk = TypeVar("Chunk", pb.ChatCompletionResponse, pb.CompletionResponse)


_FORMATS: dict[ResponseFormatType, pb.ResponseFormatType.ValueType] = {
    "text": pb.RESPONSE_FORMAT_TYPE_UNSPECIFIED,
    "json_object": pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT,
    "json_schema": pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
}
_FORMAT_NAMES = {value: name for name, value in _FORMATS.items()}


def _params_to_proto(params: SamplingParams) -> pb.SamplingParams:
    form = params.response_format
    return pb.SamplingParams(
        max_tokens=params.max_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        stop=params.stop,
        seed=params.seed,
        n=params.n,
        response_format=pb.ResponseFormat(
            type=_FORMATS[form.type], json_schema=form.schema, name=form.name, strict=form.strict
        ),
        logprobs=params.logprobs,
        presence_penalty=params.presence_penalty,
        frequency_penalty=params.frequency_penalty,
        logit_bias=dict(params.logit_bias),
    )


def _format_from_proto(form: pb.ResponseFormat) -> ResponseFormat:
    kind = _FORMAT_NAMES.get(form.type)
    if kind is None:
        raise InvalidInput(f"params.response_format.type: unknown value {form.type}")
    return ResponseFormat(kind, form.json_schema, form.name, form.strict)


def _params_from_proto(params: pb.SamplingParams) -> SamplingParams:
    # float32 on the wire: round so 0.7 stays 0.7 (it keys the semantic cache).
    return SamplingParams(
        max_tokens=params.max_tokens if params.HasField("max_tokens") else None,
        temperature=round(params.temperature, 6) if params.HasField("temperature") else 1.0,
        top_p=round(params.top_p, 6) if params.HasField("top_p") else 1.0,
        stop=tuple(params.stop),
        seed=params.seed if params.HasField("seed") else None,
        n=params.n or 1,
        response_format=_format_from_proto(params.response_format),
        logprobs=params.logprobs if params.HasField("logprobs") else None,
        presence_penalty=round(params.presence_penalty, 6),
        frequency_penalty=round(params.frequency_penalty, 6),
        logit_bias=tuple(sorted((int(k), round(v, 6)) for k, v in params.logit_bias.items())),
    )


def _message_to_proto(message: ChatMessage) -> pb.ChatMessage:
    return pb.ChatMessage(
        role=_ROLES[message.role],
        content=message.content,
        tool_calls=[pb.ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in message.tool_calls],
        tool_call_id=message.tool_call_id,
    )


def chat_request_to_proto(request: GenerateRequest, cache: CacheMode) -> pb.ChatCompletionRequest:
    tools = request.tools
    return pb.ChatCompletionRequest(
        model=request.model_name,
        model_version=request.model_version,
        messages=[_message_to_proto(m) for m in request.messages],
        params=_params_to_proto(request.params),
        cache_mode=_CACHE_MODES[cache],
        tools=[pb.Tool(name=t.name, description=t.description, parameters_json=t.parameters) for t in tools],
        tool_choice=pb.ToolChoice(
            mode=_TOOL_MODES[request.tool_choice.mode],
            function_name=request.tool_choice.name,
            single_call=not request.tool_choice.parallel,
        ),
    )


def completion_request_to_proto(request: GenerateRequest, cache: CacheMode) -> pb.CompletionRequest:
    return pb.CompletionRequest(
        model=request.model_name,
        model_version=request.model_version,
        prompt=request.prompt or "",
        params=_params_to_proto(request.params),
        cache_mode=_CACHE_MODES[cache],
    )


def _message_from_proto(index: int, message: pb.ChatMessage) -> ChatMessage:
    role = _ROLE_NAMES.get(message.role)
    if role is None:
        raise InvalidInput(f"messages[{index}].role: must be one of {sorted(_ROLES)}")
    calls = tuple(ToolCall(c.id, c.name, c.arguments) for c in message.tool_calls)
    return ChatMessage(role, message.content, calls, message.tool_call_id)


def _tool_choice_from_proto(choice: pb.ToolChoice) -> ToolChoice:
    mode = _TOOL_MODE_NAMES.get(choice.mode)
    if mode is None:
        raise InvalidInput(f"tool_choice.mode: unknown value {choice.mode}")
    return ToolChoice(mode, choice.function_name, parallel=not choice.single_call)


def _tool_from_proto(tool: pb.Tool) -> Tool:
    return Tool(tool.name, tool.description, tool.parameters_json or NO_PARAMETERS)


def chat_request_from_proto(
    message: pb.ChatCompletionRequest, tenant: str, request_id: str
) -> tuple[GenerateRequest, CacheMode]:
    request = GenerateRequest(
        model_name=message.model,
        model_version=message.model_version,
        messages=tuple(_message_from_proto(i, m) for i, m in enumerate(message.messages)),
        params=_params_from_proto(message.params),
        request_id=request_id,
        tenant=tenant,
        tools=tuple(_tool_from_proto(t) for t in message.tools),
        tool_choice=_tool_choice_from_proto(message.tool_choice),
    )
    return request, _CACHE_MODE_NAMES.get(message.cache_mode, CacheMode.DEFAULT)


def completion_request_from_proto(
    message: pb.CompletionRequest, tenant: str, request_id: str
) -> tuple[GenerateRequest, CacheMode]:
    request = GenerateRequest(
        model_name=message.model,
        model_version=message.model_version,
        prompt=message.prompt,
        params=_params_from_proto(message.params),
        request_id=request_id,
        tenant=tenant,
    )
    return request, _CACHE_MODE_NAMES.get(message.cache_mode, CacheMode.DEFAULT)


def _usage_to_proto(usage: Usage) -> pb.Usage:
    return pb.Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)


def _usage_from_proto(usage: pb.Usage) -> Usage:
    return Usage(usage.prompt_tokens, usage.completion_tokens)


def chunk_to_proto(chunk: GenerationChunk, kind: type[Chunk]) -> Chunk:
    message = kind(
        id=chunk.id,
        model=chunk.model,
        model_version=chunk.model_version,
        created=chunk.created,
        cached=chunk.cached,
        fallback=chunk.fallback,
    )
    if chunk.choice is not None:
        message.choice.index = chunk.choice.index
        message.choice.text = chunk.choice.text
        finish = chunk.choice.finish_reason or ""
        message.choice.finish_reason = _FINISH.get(finish, pb.FINISH_REASON_UNSPECIFIED)
        message.choice.logprobs.extend(
            pb.TokenLogprob(
                token=entry.token,
                logprob=entry.logprob,
                raw=entry.raw,
                top_logprobs=[pb.TopLogprob(token=t.token, logprob=t.logprob, raw=t.raw) for t in entry.top],
            )
            for entry in chunk.choice.logprobs
        )
        message.choice.tool_calls.extend(
            pb.ToolCallDelta(index=d.index, id=d.id, name=d.name, arguments=d.arguments)
            for d in chunk.choice.tool_calls
        )
    if chunk.usage is not None:
        message.usage.CopyFrom(_usage_to_proto(chunk.usage))
    return message


def chunk_from_proto(message: pb.ChatCompletionResponse | pb.CompletionResponse) -> GenerationChunk:
    choice = None
    if message.HasField("choice"):
        finish = _FINISH_NAMES.get(message.choice.finish_reason)
        logprobs = tuple(
            TokenLogprob(
                e.token,
                e.logprob,
                e.raw,
                tuple(TopLogprob(t.token, t.logprob, t.raw) for t in e.top_logprobs),
            )
            for e in message.choice.logprobs
        )
        calls = tuple(ToolCallDelta(d.index, d.id, d.name, d.arguments) for d in message.choice.tool_calls)
        choice = TokenChunk(
            message.choice.text, message.choice.index, finish, logprobs=logprobs, tool_calls=calls
        )
    return GenerationChunk(
        id=message.id,
        model=message.model,
        model_version=message.model_version,
        created=message.created,
        choice=choice,
        usage=_usage_from_proto(message.usage) if message.HasField("usage") else None,
        cached=message.cached,
        fallback=message.fallback,
    )


def embed_request_to_proto(request: EmbedRequest) -> pb.EmbedRequest:
    return pb.EmbedRequest(
        model=request.model_name, model_version=request.model_version, inputs=request.inputs
    )


def embed_request_from_proto(message: pb.EmbedRequest) -> EmbedRequest:
    return EmbedRequest(message.model, tuple(message.inputs), message.model_version)


def embed_result_to_proto(result: EmbedResult) -> pb.EmbedResponse:
    return pb.EmbedResponse(
        model=result.model,
        model_version=result.model_version,
        embeddings=[pb.Embedding(values=v) for v in result.response.vectors],
        usage=_usage_to_proto(result.response.usage),
    )


def embed_result_from_proto(message: pb.EmbedResponse) -> EmbedResult:
    vectors = [list(e.values) for e in message.embeddings]
    response = EmbedResponse(vectors, _usage_from_proto(message.usage))
    return EmbedResult(message.model, message.model_version, response)


def model_cards_to_proto(cards: Iterable[ModelCard]) -> pb.ListModelsResponse:
    return pb.ListModelsResponse(
        models=[
            pb.ModelCard(
                name=c.name,
                version=c.version,
                kind=_KINDS[c.kind],
                created=c.created,
                context_length=c.context_length,
            )
            for c in cards
        ]
    )


def model_cards_from_proto(message: pb.ListModelsResponse) -> list[ModelCard]:
    return [
        ModelCard(m.name, m.version, _KIND_NAMES[m.kind], m.created, m.context_length)
        for m in message.models
        if m.kind in _KIND_NAMES
    ]
