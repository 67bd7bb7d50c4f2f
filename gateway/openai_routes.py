"""OpenAI-compatible REST (/v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models): a
translation of the router's aisf.llm.v1.LlmService, streamed as server-sent events."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from aisf.gateway.http_body import read_body
from aisf.gateway.openai_errors import OPENAI_ERROR_RESPONSES, OpenAIRoute
from aisf.gateway.sse import event_stream, sse_response
from aisf.llm.v1 import llm_pb2 as pb
from aisf.services.clients.router_client import RouterClient
from aisf.services.common import call_context
from aisf.services.common import llm_codec as codec
from aisf.services.common.errors import InternalError, InvalidInput, ModelNotFound
from aisf.services.common.llm_outputs import CacheMode, GenerationChunk, ModelCard
from aisf.services.common.marks import FALLBACK_HEADER
from aisf.services.common.openai_models import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from aisf.services.common.openai_responses import (
    CHAT,
    TEXT,
    Flavor,
    answer_body,
    embeddings_body,
    error_body,
    stream_events,
)

router = APIRouter(route_class=OpenAIRoute, responses=OPENAI_ERROR_RESPONSES)

# Request: `bypass` (neither read nor write the semantic cache) or `opt-in` (cache a sampled request).
# Response: `hit` when the answer was replayed from the cache.
CACHE_HEADER = "x-aisf-cache"
Model = TypeVar("Model", bound=BaseModel)


def _client(request: Request) -> RouterClient:
    client: RouterClient = request.app.state.router
    return client


def _json(body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), media_type="application/json", headers=headers)


async def _parse(request: Request, model: type[Model]) -> Model:
    body = await read_body(request, request.app.state.settings.max_request_bytes)
    return model.model_validate_json(body)


def _request_id() -> str:
    """The edge's one request id (edge_telemetry.bind_call: the caller's, else a new one)."""
    return call_context.request_id.get()


def _cache_mode(request: Request) -> CacheMode:
    value = request.headers.get(CACHE_HEADER, CacheMode.DEFAULT.value)
    try:
        return CacheMode(value.strip().lower())
    except ValueError:
        allowed = ", ".join(m.value for m in CacheMode)
        raise InvalidInput(f"{CACHE_HEADER} header: must be one of {allowed}, not '{value}'") from None


async def _decoded(
    messages: AsyncGenerator[pb.ChatCompletionResponse, None] | AsyncGenerator[pb.CompletionResponse, None],
) -> AsyncGenerator[GenerationChunk, None]:
    async with aclosing(messages):
        async for message in messages:
            yield codec.chunk_from_proto(message)


async def _after(
    first: GenerationChunk, rest: AsyncGenerator[GenerationChunk, None]
) -> AsyncGenerator[GenerationChunk, None]:
    async with aclosing(rest):
        yield first
        async for chunk in rest:
            yield chunk


async def _respond(
    chunks: AsyncGenerator[GenerationChunk, None], flavor: Flavor, stream: bool, usage: bool
) -> Response:
    """Waits for the first chunk, so an error before any token is a plain HTTP error, then streams
    (each token flushed as it comes) or folds the answer into one body."""
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        raise InternalError("the router ended the generation without an answer") from None
    except BaseException:
        await chunks.aclose()
        raise
    headers = {CACHE_HEADER: "hit"} if first.cached else {}
    if first.fallback:
        headers[FALLBACK_HEADER] = first.fallback
    rest = _after(first, chunks)
    if stream:
        return sse_response(event_stream(stream_events(rest, flavor, usage), error_body), headers)
    async with aclosing(rest):
        return _json(await answer_body(rest, flavor), headers)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    body = await _parse(request, ChatCompletionRequest)
    request_id = _request_id()
    message = codec.chat_request_to_proto(body.to_domain(request_id), _cache_mode(request))
    chunks = _decoded(_client(request).chat_completion(message, request_id, call_context.tenant.get()))
    return await _respond(chunks, CHAT, body.stream, body.include_usage)


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    body = await _parse(request, CompletionRequest)
    request_id = _request_id()
    message = codec.completion_request_to_proto(body.to_domain(request_id), _cache_mode(request))
    chunks = _decoded(_client(request).completion(message, request_id, call_context.tenant.get()))
    return await _respond(chunks, TEXT, body.stream, body.include_usage)


@router.post("/v1/embeddings")
async def embeddings(request: Request) -> Response:
    body = await _parse(request, EmbeddingRequest)
    reply = await _client(request).embed(codec.embed_request_to_proto(body.to_domain()), _request_id())
    return _json(embeddings_body(codec.embed_result_from_proto(reply), body.encoding_format))


def _card(card: ModelCard) -> dict[str, Any]:
    return {"id": card.name, "object": "model", "created": card.created, "owned_by": "aisf"}


async def _newest_cards(request: Request) -> dict[str, ModelCard]:
    cards = codec.model_cards_from_proto(await _client(request).list_models())
    return {c.name: c for c in sorted(cards, key=lambda c: int(c.version or 0))}


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    return _json({"object": "list", "data": [_card(c) for c in (await _newest_cards(request)).values()]})


@router.get("/v1/models/{model}")
async def retrieve_model(request: Request, model: str) -> Response:
    card = (await _newest_cards(request)).get(model)
    if card is None:
        raise ModelNotFound(f"model: '{model}' does not exist or is not a text or embedding model")
    return _json(_card(card))
