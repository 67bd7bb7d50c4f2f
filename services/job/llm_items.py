"""LLM work as job items: an OpenAI request body (JSON) checked at submit, run through the router's LLM
dataplane by a worker, answered with the OpenAI response body (JSON) a direct call would have got."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing

import orjson
from pydantic import ValidationError

from aisf.llm.v1 import llm_pb2 as pb
from aisf.services.clients.router_client import RouterClient
from aisf.services.common import llm_codec as codec
from aisf.services.common.errors import InvalidInput
from aisf.services.common.llm_outputs import CacheMode, GenerationChunk
from aisf.services.common.llm_types import EmbedRequest, GenerateRequest
from aisf.services.common.openai_models import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from aisf.services.common.openai_responses import CHAT, TEXT, answer_body, embeddings_body
from aisf.services.job.model import JobKind

_MODELS: dict[JobKind, type[ChatCompletionRequest] | type[CompletionRequest]] = {
    JobKind.CHAT: ChatCompletionRequest,
    JobKind.COMPLETION: CompletionRequest,
}


def _validation_message(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


def parse_body(kind: JobKind, body: bytes, model: str) -> GenerateRequest | EmbedRequest:
    """The domain request of one item (its `model` field is the job's); InvalidInput naming the field."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidInput("body: must be a JSON object")
    document["model"] = model
    if document.get("stream"):
        raise InvalidInput("stream: a job's answers are stored whole; leave stream unset")
    try:
        if kind is JobKind.EMBEDDING:
            return EmbeddingRequest.model_validate(document).to_domain()
        return _MODELS[kind].model_validate(document).to_domain("")
    except ValidationError as exc:
        raise InvalidInput(_validation_message(exc)) from None


def encoding_of(body: bytes) -> str:
    """An embeddings body's encoding_format (float unless it asks for base64)."""
    value = orjson.loads(body).get("encoding_format", "float")
    return "base64" if value == "base64" else "float"


async def run_item(
    router: RouterClient, kind: JobKind, body: bytes, model: str, version: str, request_id: str, tenant: str
) -> bytes:
    """One item through the router; typed errors propagate (the activity decides: retry, or the item's
    own error)."""
    request = parse_body(kind, body, model)
    if isinstance(request, EmbedRequest):
        message = codec.embed_request_to_proto(EmbedRequest(model, request.inputs, version))
        result = codec.embed_result_from_proto(await router.embed(message, request_id))
        return orjson.dumps(embeddings_body(result, encoding_of(body)))
    generate = GenerateRequest(
        model, version, request.messages, request.prompt, request.params, request_id, tenant
    )
    stream: AsyncGenerator[pb.ChatCompletionResponse, None] | AsyncGenerator[pb.CompletionResponse, None]
    if kind is JobKind.CHAT:
        chat = codec.chat_request_to_proto(generate, CacheMode.DEFAULT)
        stream = router.chat_completion(chat, request_id, tenant)
    else:
        completion = codec.completion_request_to_proto(generate, CacheMode.DEFAULT)
        stream = router.completion(completion, request_id, tenant)
    async with aclosing(stream) as messages:
        answer = await answer_body(_decoded(messages), CHAT if kind is JobKind.CHAT else TEXT)
    return orjson.dumps(answer)


async def _decoded(
    messages: AsyncIterator[pb.ChatCompletionResponse] | AsyncIterator[pb.CompletionResponse],
) -> AsyncIterator[GenerationChunk]:
    async for message in messages:
        yield codec.chunk_from_proto(message)
