"""The HTTP side of the error table: one FastAPI handler for every typed error (V2 `{"error": ...}`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from aisf.services.common.errors import AisfError

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """The V2 error body: `{"error": "<what went wrong, naming the field>"}`."""

    error: str


_MEANINGS = {
    400: "Invalid request (the message names the field)",
    401: "No API key, or an unknown or revoked one (Authorization: Bearer <key>)",
    403: "The key may not do this: a role it lacks, a model outside its scope, another tenant's resource",
    404: "Unknown model, version or resource",
    409: "Conflicts with the current state",
    413: "Request body over the size limit",
    429: "Overloaded: the model's queue is full (see Retry-After)",
    500: "Internal error",
    503: "Not ready, engine unavailable or circuit open (see Retry-After)",
    504: "The request's deadline passed",
    507: "The engine ran out of memory",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error statuses a route answers, with the V2 error body."""
    return {status: {"model": ErrorBody, "description": _MEANINGS[status]} for status in statuses}


# What every V2 and job route may answer.
ERROR_RESPONSES = error_responses(400, 401, 403, 404, 500, 503)


def error_response(error: AisfError) -> JSONResponse:
    headers = error.http_headers()
    return JSONResponse({"error": error.message}, status_code=error.http_status, headers=headers)


async def _aisf_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AisfError)
    log.info(
        "request rejected", extra={"path": request.url.path, "reason": exc.reason, "detail": exc.message}
    )
    return error_response(exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    return JSONResponse({"error": f"{where}: {first['msg']}"}, status_code=400)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("request failed", extra={"path": request.url.path}, exc_info=exc)
    return JSONResponse({"error": "internal error"}, status_code=500)


def _documented_without_422(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI documents a 422 for every route with parameters; the edge answers such errors 400 with its
    own body (documented per route), so the schema must not promise one."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            schemas = schema.get("components", {}).get("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


def install_error_handlers(app: FastAPI) -> None:
    app.openapi = _documented_without_422(app)  # type: ignore[method-assign]
    app.add_exception_handler(AisfError, _aisf_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
