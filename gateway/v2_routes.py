"""KServe V2 REST (with Triton's repository, statistics and config extensions) over the router's gRPC."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from aisf.gateway.http_body import read_body
from aisf.gateway.router_client import RouterClient
from aisf.gateway.v2_rest_codec import (
    BINARY_CONTENT,
    HEADER_LENGTH,
    JSON_CONTENT,
    encode_response,
    parse_index_body,
    parse_request,
)
from aisf.router.v1 import model_repository_pb2 as repo_pb
from aisf.services.common import v2_codec

router = APIRouter()


def _client(request: Request) -> RouterClient:
    client: RouterClient = request.app.state.router
    return client


def _json(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


def _health(ok: bool) -> Response:
    return Response(status_code=200 if ok else 503)


@router.get("/v2")
async def server_metadata(request: Request) -> dict[str, Any]:
    return _json(await _client(request).server_metadata())


@router.get("/v2/health/live")
async def server_live(request: Request) -> Response:
    return _health(await _client(request).server_live())


@router.get("/v2/health/ready")
async def server_ready(request: Request) -> Response:
    return _health(await _client(request).server_ready())


@router.get("/v2/models/stats")
async def all_model_statistics(request: Request) -> dict[str, Any]:
    return _json(await _client(request).model_statistics("", ""))


@router.get("/v2/models/{model}")
@router.get("/v2/models/{model}/versions/{version}")
async def model_metadata(request: Request, model: str, version: str = "") -> dict[str, Any]:
    return _json(await _client(request).model_metadata(model, version))


@router.get("/v2/models/{model}/ready")
@router.get("/v2/models/{model}/versions/{version}/ready")
async def model_ready(request: Request, model: str, version: str = "") -> Response:
    return _health(await _client(request).model_ready(model, version))


@router.get("/v2/models/{model}/config")
@router.get("/v2/models/{model}/versions/{version}/config")
async def model_config(request: Request, model: str, version: str = "") -> dict[str, Any]:
    return _json((await _client(request).model_config(model, version)).config)


@router.get("/v2/models/{model}/stats")
@router.get("/v2/models/{model}/versions/{version}/stats")
async def model_statistics(request: Request, model: str, version: str = "") -> dict[str, Any]:
    return _json(await _client(request).model_statistics(model, version))


@router.post("/v2/models/{model}/infer")
@router.post("/v2/models/{model}/versions/{version}/infer")
async def infer(request: Request, model: str, version: str = "") -> Response:
    body = await read_body(request, request.app.state.settings.max_request_bytes)
    domain, binary = parse_request(model, version, body, request.headers.get(HEADER_LENGTH))
    reply = await _client(request).infer(
        v2_codec.request_to_proto(domain), request.headers.get("x-request-id", "")
    )
    content, header_length = encode_response(v2_codec.response_from_proto(reply), binary)
    if header_length is None:
        return Response(content, media_type=JSON_CONTENT)
    return Response(content, media_type=BINARY_CONTENT, headers={HEADER_LENGTH: str(header_length)})


@router.post("/v2/repository/index")
async def repository_index(request: Request) -> JSONResponse:
    body = await read_body(request, 64 * 1024)
    index = await _client(request).repository_index(parse_index_body(body).ready)
    return JSONResponse([_json(m) for m in index.models])


@router.post("/v2/repository/models/{model}/load")
async def load_model(request: Request, model: str) -> Response:
    await _client(request).load_model(model)
    return Response(status_code=200)


@router.post("/v2/repository/models/{model}/unload")
async def unload_model(request: Request, model: str) -> Response:
    await _client(request).unload_model(model)
    return Response(status_code=200)


@router.get("/v1/repository/events")
async def model_events(
    request: Request,
    model: str = "",
    page_size: Annotated[int, Query(ge=0, le=1000)] = 100,
    page_token: str = "",
) -> dict[str, Any]:
    query = repo_pb.ListModelEventsRequest(model_name=model, page_size=page_size, page_token=page_token)
    return _json(await _client(request).model_events(query))
