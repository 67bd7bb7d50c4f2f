"""Checks of LLM requests the engines rely on; messages start with the offending field's name."""

from __future__ import annotations

import json
import re

import jsonschema

from aisf.services.common.errors import InvalidInput
from aisf.services.common.llm_types import EmbedRequest, GenerateRequest

MAX_CHOICES = 16
MAX_STOP_STRINGS = 4
MAX_TOP_LOGPROBS = 20  # OpenAI's own bound
MAX_LOGIT_BIAS = 300  # OpenAI's own bound
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def validate_generate(request: GenerateRequest, context_length: int) -> None:
    if request.messages and request.prompt is not None:
        raise InvalidInput("messages: a request has either messages (chat) or a prompt (completion)")
    if request.prompt is None and not request.messages:
        raise InvalidInput("messages: must hold at least one message")
    if request.prompt is not None and not request.prompt:
        raise InvalidInput("prompt: must not be empty")
    p = request.params
    if p.max_tokens is not None and p.max_tokens < 1:
        raise InvalidInput(f"max_tokens: must be at least 1, got {p.max_tokens}")
    if p.max_tokens is not None and context_length and p.max_tokens > context_length:
        raise InvalidInput(
            f"max_tokens: {p.max_tokens} exceeds the context window of '{request.model_name}' "
            f"({context_length} tokens, prompt included)"
        )
    if not 0.0 <= p.temperature <= 2.0:
        raise InvalidInput(f"temperature: must be between 0 and 2, got {p.temperature}")
    if not 0.0 < p.top_p <= 1.0:
        raise InvalidInput(f"top_p: must be greater than 0 and at most 1, got {p.top_p}")
    if not 1 <= p.n <= MAX_CHOICES:
        raise InvalidInput(f"n: must be between 1 and {MAX_CHOICES}, got {p.n}")
    if len(p.stop) > MAX_STOP_STRINGS or any(not s for s in p.stop):
        raise InvalidInput(f"stop: at most {MAX_STOP_STRINGS} non-empty strings")
    for name, value in (("presence_penalty", p.presence_penalty), ("frequency_penalty", p.frequency_penalty)):
        if not -2.0 <= value <= 2.0:
            raise InvalidInput(f"{name}: must be between -2 and 2, got {value}")
    if len(p.logit_bias) > MAX_LOGIT_BIAS or any(not -100 <= v <= 100 or t < 0 for t, v in p.logit_bias):
        raise InvalidInput(f"logit_bias: at most {MAX_LOGIT_BIAS} token ids, each biased by -100 to 100")
    if p.logprobs is not None and not 0 <= p.logprobs <= MAX_TOP_LOGPROBS:
        raise InvalidInput(f"top_logprobs: must be between 0 and {MAX_TOP_LOGPROBS}, got {p.logprobs}")
    if p.response_format.type == "json_schema":
        _check_schema(p.response_format.schema, "response_format.json_schema.schema")
    _check_tools(request)


def _check_tools(request: GenerateRequest) -> None:
    names = [tool.name for tool in request.tools]
    for i, tool in enumerate(request.tools):
        if not _TOOL_NAME.fullmatch(tool.name):
            raise InvalidInput(
                f"tools[{i}].function.name: 1 to 64 of a-z, A-Z, 0-9, _ and -, got '{tool.name}'"
            )
        if names.count(tool.name) > 1:
            raise InvalidInput(f"tools[{i}].function.name: '{tool.name}' appears twice")
        _check_schema(tool.parameters, f"tools[{i}].function.parameters")
    choice = request.tool_choice
    if choice.mode in ("required", "function") and not request.tools:
        raise InvalidInput(f"tool_choice: '{choice.mode}' needs tools")
    if choice.mode == "function" and choice.name not in names:
        raise InvalidInput(f"tool_choice.function.name: no tool named '{choice.name}'")
    for i, message in enumerate(request.messages):
        if message.role == "tool" and not message.tool_call_id:
            raise InvalidInput(f"messages[{i}].tool_call_id: a tool message names the call it answers")
        for j, call in enumerate(message.tool_calls):
            try:
                arguments = json.loads(call.arguments or "{}")
            except ValueError:
                arguments = None
            if not isinstance(arguments, dict):
                raise InvalidInput(f"messages[{i}].tool_calls[{j}].function.arguments: must be a JSON object")


def _check_schema(text: str, where: str) -> None:
    """A schema (of a response format, of a tool's parameters): a JSON object that is a valid JSON
    Schema."""
    try:
        schema = json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"{where}: not JSON ({exc})") from None
    if not isinstance(schema, dict):
        raise InvalidInput(f"{where}: must be a JSON object")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidInput(f"{where}: not a valid JSON Schema ({exc.message})") from None


def validate_embed(request: EmbedRequest) -> None:
    if not request.inputs:
        raise InvalidInput("input: must hold at least one text")
    empty = [i for i, text in enumerate(request.inputs) if not text]
    if empty:
        raise InvalidInput(f"input[{empty[0]}]: must not be empty")
