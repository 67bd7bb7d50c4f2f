"""OpenAI wire models of the REST edge: requests validated here and turned into domain requests.

Unknown fields are accepted and logged (clients send new fields first); fields that would change the
answer in a way aisf cannot honour (the deprecated function calling, audio, ...) are a 400, never ignored.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aisf.services.common.errors import InvalidInput
from aisf.services.common.llm_types import (
    NO_PARAMETERS,
    ChatMessage,
    EmbedRequest,
    GenerateRequest,
    ResponseFormat,
    Role,
    SamplingParams,
    Tool,
    ToolCall,
    ToolChoice,
)

log = logging.getLogger(__name__)

# Field -> values that mean "not used"; anything else asks for a feature aisf does not serve.
_CHAT_UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "functions": (None, []),
    "function_call": (None, "none"),
    "audio": (None,),
    "modalities": (None, ["text"]),
    "prediction": (None,),
    "reasoning_effort": (None,),
    "web_search_options": (None,),
}
_COMPLETION_UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "echo": (None, False),
    "best_of": (None, 1),
    "suffix": (None, ""),
}
# OpenAI's newer "developer" role is what older models call "system".
_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}


class _OpenAI(BaseModel):
    model_config = ConfigDict(extra="allow")

    def _checked(self, unsupported: dict[str, tuple[Any, ...]]) -> None:
        """400 for a feature aisf cannot honour; log the fields it merely ignores."""
        extra = self.model_extra or {}
        for name, unused in unsupported.items():
            if name in extra and extra[name] not in unused:
                raise InvalidInput(f"{name}: is not supported by aisf")
        ignored = sorted(set(extra) - set(unsupported))
        if ignored:
            log.info("ignored request fields", extra={"model": getattr(self, "model", ""), "fields": ignored})


class StreamOptions(_OpenAI):
    include_usage: bool = False


class _Sampling(_OpenAI):
    model: Annotated[str, Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    n: Annotated[int, Field(ge=1)] = 1
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # accepted; aisf's tenant comes from the caller's credentials
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None

    def _bias(self) -> tuple[tuple[int, float], ...]:
        bias = []
        for token, value in (self.logit_bias or {}).items():
            if not token.isdigit():
                raise InvalidInput(f"logit_bias: keys are token ids, got '{token}'")
            bias.append((int(token), float(value)))
        return tuple(sorted(bias))

    def _params(self, max_tokens: int | None) -> SamplingParams:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            stop=stop,
            seed=self.seed,
            n=self.n,
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            logit_bias=self._bias(),
        )

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ContentPart(_OpenAI):
    type: str
    text: str | None = None


class FunctionCallIn(_OpenAI):
    name: str
    arguments: str = "{}"


class ToolCallIn(_OpenAI):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessageIn(_OpenAI):
    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None

    def to_domain(self, index: int) -> ChatMessage:
        where = f"messages[{index}]"
        if self.role == "function":
            raise InvalidInput(f"{where}.role: 'function' messages are the deprecated API; use 'tool'")
        role = _ROLES.get(self.role)
        if role is None:
            raise InvalidInput(f"{where}.role: must be one of {sorted(_ROLES)}, got '{self.role}'")
        if (self.model_extra or {}).get("function_call"):
            raise InvalidInput(f"{where}.function_call: the deprecated API; use tool_calls")
        calls = tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in self.tool_calls or [])
        if calls and role != "assistant":
            raise InvalidInput(f"{where}.tool_calls: only assistant messages carry tool calls")
        if self.content is None and not calls:
            raise InvalidInput(f"{where}.content: is required (unless the message carries tool_calls)")
        return ChatMessage(role, self._text(where), calls, self.tool_call_id or "")

    def _text(self, where: str) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        for j, part in enumerate(self.content):
            if part.type != "text" or part.text is None:
                raise InvalidInput(f"{where}.content[{j}].type: only text is supported, not '{part.type}'")
        return "".join(part.text or "" for part in self.content)


class FunctionIn(_OpenAI):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolIn(_OpenAI):
    type: Literal["function"]
    function: FunctionIn

    def to_domain(self) -> Tool:
        spec = self.function
        parameters = json.dumps(spec.parameters) if spec.parameters is not None else NO_PARAMETERS
        return Tool(spec.name, spec.description or "", parameters)


class NamedFunction(_OpenAI):
    name: str


class NamedToolChoice(_OpenAI):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(_OpenAI):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    description: str | None = None
    schema_: Annotated[dict[str, Any] | None, Field(alias="schema")] = None
    strict: bool | None = None


class ResponseFormatIn(_OpenAI):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    def to_domain(self) -> ResponseFormat:
        if self.type != "json_schema":
            return ResponseFormat(self.type)
        if self.json_schema is None or self.json_schema.schema_ is None:
            raise InvalidInput("response_format.json_schema.schema: is required for type json_schema")
        spec = self.json_schema
        return ResponseFormat("json_schema", json.dumps(spec.schema_), spec.name, bool(spec.strict))


class ChatCompletionRequest(_Sampling):
    messages: Annotated[list[ChatMessageIn], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    response_format: ResponseFormatIn | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    tools: list[ToolIn] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None  # OpenAI's default: true

    def to_domain(self, request_id: str) -> GenerateRequest:
        self._checked(_CHAT_UNSUPPORTED)
        params = self._params(self.max_completion_tokens or self.max_tokens)
        if self.response_format is not None:
            params = replace(params, response_format=self.response_format.to_domain())
        if self.top_logprobs is not None and not self.logprobs:
            raise InvalidInput("top_logprobs: needs logprobs set to true")
        if self.logprobs:
            params = replace(params, logprobs=self.top_logprobs or 0)
        choice, parallel = self.tool_choice, self.parallel_tool_calls is not False
        if isinstance(choice, NamedToolChoice):
            tool_choice = ToolChoice("function", choice.function.name, parallel)
        else:
            tool_choice = ToolChoice(choice or "auto", parallel=parallel)
        return GenerateRequest(
            model_name=self.model,
            messages=tuple(m.to_domain(i) for i, m in enumerate(self.messages)),
            params=params,
            request_id=request_id,
            tools=tuple(tool.to_domain() for tool in self.tools or []),
            tool_choice=tool_choice,
        )


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None  # the legacy API's bound

    def to_domain(self, request_id: str) -> GenerateRequest:
        self._checked(_COMPLETION_UNSUPPORTED)
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            raise InvalidInput("prompt: give one prompt per request (batches of prompts are not supported)")
        prompt = self.prompt if isinstance(self.prompt, str) else self.prompt[0]
        params = replace(self._params(self.max_tokens), logprobs=self.logprobs)
        return GenerateRequest(model_name=self.model, prompt=prompt, params=params, request_id=request_id)


class EmbeddingRequest(_OpenAI):
    model: Annotated[str, Field(min_length=1)]
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None

    def to_domain(self) -> EmbedRequest:
        self._checked({})
        if self.dimensions is not None:
            raise InvalidInput("dimensions: is not supported (the model's own size is returned)")
        texts = (self.input,) if isinstance(self.input, str) else tuple(self.input)
        return EmbedRequest(self.model, texts)
