"""KServe V2 REST (with Triton's repository, statistics and config extensions) over the router's gRPC,
and the operator's view of a model under faults (status, breaker, shadow)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from google.protobuf.message import Message
from pydantic import BaseModel, ConfigDict, ValidationError

from aisf.gateway.errors import ERROR_RESPONSES, error_responses
from aisf.gateway.http_body import read_body
from aisf.gateway.proto_json import to_json
from aisf.router.v1 import model_control_pb2 as control_pb
from aisf.router.v1 import model_repository_pb2 as repo_pb
from aisf.services.clients.router_client import RouterClient
from aisf.services.common import v2_codec
from aisf.services.common.errors import InvalidInput, ModelNotReady
from aisf.services.common.marks import FALLBACK_HEADER, FALLBACK_PARAMETER
from aisf.services.common.v2_json import (
    BINARY_CONTENT,
    HEADER_LENGTH,
    JSON_CONTENT,
    encode_response,
    parse_index_body,
    parse_request,
)

router = APIRouter(responses=ERROR_RESPONSES)


def _client(request: Request) -> RouterClient:
    client: RouterClient = request.app.state.router
    return client


def _json(message: Message) -> dict[str, Any]:
    return to_json(message)


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
    """200 when ready; an unknown model or version is a 404 and a loaded but unready one a 503, each
    with the V2 error body saying which."""
    client = _client(request)
    if await client.model_ready(model, version):
        return Response(status_code=200)
    await client.model_metadata(model, version)  # raises the typed error of an unknown model/version
    raise ModelNotReady(f"model '{model}'{f' version {version}' if version else ''} is not ready")


@router.get("/v2/models/{model}/config")
@router.get("/v2/models/{model}/versions/{version}/config")
async def model_config(request: Request, model: str, version: str = "") -> dict[str, Any]:
    return _json((await _client(request).model_config(model, version)).config)


@router.get("/v2/models/{model}/stats")
@router.get("/v2/models/{model}/versions/{version}/stats")
async def model_statistics(request: Request, model: str, version: str = "") -> dict[str, Any]:
    return _json(await _client(request).model_statistics(model, version))


@router.post("/v2/models/{model}/infer", responses=error_responses(413, 429, 504, 507))
@router.post("/v2/models/{model}/versions/{version}/infer", responses=error_responses(413, 429, 504, 507))
async def infer(request: Request, model: str, version: str = "") -> Response:
    body = await read_body(request, request.app.state.settings.max_request_bytes)
    domain, binary = parse_request(model, version, body, request.headers.get(HEADER_LENGTH))
    reply = await _client(request).infer(v2_codec.request_to_proto(domain))  # request id: call_context
    response = v2_codec.response_from_proto(reply)
    content, header_length = encode_response(response, binary)
    headers = {}
    if FALLBACK_PARAMETER in response.parameters:
        headers[FALLBACK_HEADER] = str(response.parameters[FALLBACK_PARAMETER])
    if header_length is None:
        return Response(content, media_type=JSON_CONTENT, headers=headers)
    headers[HEADER_LENGTH] = str(header_length)
    return Response(content, media_type=BINARY_CONTENT, headers=headers)


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


# --- operating a model under faults (aisf.router.v1.ModelControlService) ---


class BreakerBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["auto", "forced_open", "forced_closed"]
    version: str = ""


class PromoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    force: bool = False


_MODES = {
    "auto": control_pb.BREAKER_MODE_AUTO,
    "forced_open": control_pb.BREAKER_MODE_FORCED_OPEN,
    "forced_closed": control_pb.BREAKER_MODE_FORCED_CLOSED,
}


def _body(model: type[BaseModel], body: bytes) -> Any:
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidInput(f"{where}: {first['msg']}") from None


@router.get("/v2/models/{model}/status")
async def model_status(request: Request, model: str) -> dict[str, Any]:
    """Each loaded version's circuit breaker, queue depth and engine calls in flight, and the split."""
    return _json(await _client(request).model_status(model))


@router.post("/v2/models/{model}/breaker")
async def set_breaker(request: Request, model: str) -> dict[str, Any]:
    """`{"mode": "forced_open" | "forced_closed" | "auto", "version": ""}` (empty: every version)."""
    body: BreakerBody = _body(BreakerBody, await read_body(request, 64 * 1024))
    return _json(await _client(request).set_breaker_mode(model, body.version, _MODES[body.mode]))


@router.get("/v2/models/{model}/shadow")
async def shadow_report(request: Request, model: str) -> dict[str, Any]:
    """Agreement, latencies and errors of the model's shadow, and whether it passes its gates."""
    return _json(await _client(request).shadow_report(model))


@router.post("/v2/models/{model}/shadow/promote", responses=error_responses(409))
async def promote_shadow(request: Request, model: str) -> dict[str, Any]:
    """Make the shadow live once its report passes every gate (`{"force": true}` skips them)."""
    body: PromoteBody = _body(PromoteBody, await read_body(request, 64 * 1024))
    return _json(await _client(request).promote_shadow(model, body.force))
