"""Domain types of the LLM lane: chat/completion requests, sampling, streamed token chunks, embeddings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "cancelled", "error", "tool_calls"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON object, as text


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant's calls
    tool_call_id: str = ""  # a tool message: the call it answers


NO_PARAMETERS = '{"type": "object", "properties": {}}'


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call; `parameters` is its JSON Schema, as text."""

    name: str
    description: str = ""
    parameters: str = NO_PARAMETERS


ToolChoiceMode = Literal["auto", "none", "required", "function"]


@dataclass(frozen=True, slots=True)
class ToolChoice:
    mode: ToolChoiceMode = "auto"
    name: str = ""  # mode "function": the one to call
    parallel: bool = True  # OpenAI's parallel_tool_calls: a choice may make several calls


ResponseFormatType = Literal["text", "json_object", "json_schema"]


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    """What the output must be: free text, any JSON object, or JSON valid for `schema` (JSON text)."""

    type: ResponseFormatType = "text"
    schema: str = ""
    name: str = ""
    strict: bool = False


@dataclass(frozen=True, slots=True)
class SamplingParams:
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1
    response_format: ResponseFormat = ResponseFormat()
    # None: no log probabilities; k: each generated token's, with its k most likely alternatives.
    logprobs: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, added to its logit), sorted by id

    @property
    def deterministic(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """Exactly one of `messages` (chat) or `prompt` (completion) is set."""

    model_name: str
    model_version: str = ""
    messages: tuple[ChatMessage, ...] = ()
    prompt: str | None = None
    params: SamplingParams = SamplingParams()
    request_id: str = ""
    tenant: str = ""
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = ToolChoice()


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class TopLogprob:
    token: str
    logprob: float
    raw: bytes  # the token's bytes (a token may hold part of a UTF-8 character)


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token's log probability and the most likely alternatives at its position."""

    token: str
    logprob: float
    raw: bytes
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of the choice's `index`-th tool call: its id and name come first, arguments after."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class TokenChunk:
    """A piece of generated text for choice `index`; the last chunk of a choice has a finish_reason
    and the usage so far."""

    text: str
    index: int = 0
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    logprobs: tuple[TokenLogprob, ...] = ()  # of the tokens whose text this chunk carries
    tool_calls: tuple[ToolCallDelta, ...] = ()
    pieces: int = 1  # tokens' pieces merged into this chunk (an engine ahead of a slower reader)


@dataclass(frozen=True, slots=True)
class EmbedRequest:
    model_name: str
    inputs: tuple[str, ...]
    model_version: str = ""


@dataclass(frozen=True, slots=True)
class EmbedResponse:
    vectors: list[list[float]] = field(default_factory=list)
    usage: Usage = Usage()
