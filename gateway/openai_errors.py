"""OpenAI's error shape for the /v1 OpenAI routes only (V2 keeps `{"error": "..."}`): a route class
maps typed and validation errors, so the app-wide V2 handlers never see them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from aisf.services.common.errors import AisfError, InternalError
from aisf.services.common.openai_responses import error_body

log = logging.getLogger(__name__)
# pydantic tags union members in error locations (`prompt.str`); those are not fields.
_UNION_TAGS = {"str", "int", "float", "bool"}


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorBody(BaseModel):
    """OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`."""

    error: OpenAIErrorDetail


_MEANINGS = {
    400: "Invalid request (`param` names the field)",
    401: "No API key, or an unknown or revoked one",
    403: "The key may not use this model or resource",
    404: "Unknown model",
    413: "Request body over the size limit",
    429: "Overloaded: the model's queue is full (see Retry-After)",
    500: "Internal error",
    503: "Engine unavailable or circuit open (see Retry-After)",
    504: "The request's deadline passed",
}
# What the OpenAI routes may answer, for the OpenAPI document.
OPENAI_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": OpenAIErrorBody, "description": meaning} for status, meaning in _MEANINGS.items()
}


def error_response(error: AisfError) -> JSONResponse:
    headers = error.http_headers()
    return JSONResponse(error_body(error), status_code=error.http_status, headers=headers)


def _param(location: tuple[int | str, ...]) -> str:
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in _UNION_TAGS or "[" in part or "-" in part:
            continue
        else:
            text += f".{part}" if text else part
    return text


def validation_response(exc: ValidationError) -> JSONResponse:
    first = exc.errors()[0]
    if first["type"] == "json_invalid":
        message, param = f"request body is not valid JSON: {first['ctx']['error']}", None
    else:
        param = _param(tuple(first["loc"])) or None
        message = f"{param}: {first['msg']}" if param else str(first["msg"])
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}
    return JSONResponse(body, status_code=400)


class OpenAIRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except AisfError as exc:
                log.info(
                    "request rejected",
                    extra={"path": request.url.path, "reason": exc.reason, "detail": exc.message},
                )
                return error_response(exc)
            except ValidationError as exc:
                return validation_response(exc)
            except Exception as exc:
                log.error("request failed", extra={"path": request.url.path}, exc_info=exc)
                return error_response(InternalError("internal error"))

        return handle
