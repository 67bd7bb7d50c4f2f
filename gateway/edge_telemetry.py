"""What the REST edge records per request: requests and latency by route template (never the raw path:
ids in paths would make one series per job), the request's server span (continuing the caller's W3C
trace context), and the caller's request id and tenant, which every gRPC call made for the request
carries on (call_context)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from time import perf_counter_ns
from typing import Any

from fastapi import Request
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aisf.services.common import call_context, tracing
from aisf.services.common.errors import InvalidInput

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0)
UNMATCHED = "unmatched"


# What gRPC metadata can carry on (printable ASCII): HTTP allows more, and one bad byte would fail every
# internal call made for the request.
_REQUEST_ID = re.compile(r"[!-~]{1,128}")
_TENANT = re.compile(r"[ -~]{1,128}")


async def bind_call(request: Request) -> None:
    """A caller without a usable request id gets one, so its log lines on every hop still join up."""
    headers = request.headers
    given = headers.get(call_context.REQUEST_ID_KEY, "")
    call_context.request_id.set(given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex)
    tenant = headers.get(call_context.TENANT_KEY, "")
    if tenant and not _TENANT.fullmatch(tenant):
        raise InvalidInput(f"{call_context.TENANT_KEY} header: up to 128 printable ASCII characters")
    call_context.tenant.set(tenant)


class EdgeTelemetry:
    """Pure ASGI, so a streamed (SSE) response is timed to its last byte and nothing is buffered."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self._app = app
        self._requests = Counter(
            "aisf_http_requests",
            "REST edge requests by route template and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self._seconds = Histogram(
            "aisf_http_request_duration_seconds",
            "REST edge time to the response's last byte",
            ["route", "method"],
            buckets=_BUCKETS,
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = perf_counter_ns()
        status = 500  # what the client sees when the app raises before it answers

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        method = str(scope.get("method", ""))
        try:
            if tracing.enabled():
                await self._traced(scope, receive, sending, method, lambda: status)
            else:
                await self._app(scope, receive, sending)
        finally:
            template = _template(scope)
            self._requests.labels(template, method, str(status)).inc()
            self._seconds.labels(template, method).observe((perf_counter_ns() - started) / 1e9)

    async def _traced(
        self, scope: Scope, receive: Receive, send: Send, method: str, status: Callable[[], int]
    ) -> None:
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
        attributes = {"http.request.method": method, "url.path": str(scope.get("path", ""))}
        with tracing.server_span(
            f"{method} {scope.get('path', '')}", SpanKind.SERVER, carrier, attributes
        ) as span:
            try:
                await self._app(scope, receive, send)
            finally:
                template = _template(scope)
                span.update_name(f"{method} {template}")
                span.set_attribute("http.route", template)
                span.set_attribute("http.response.status_code", status())
                if status() >= 500:
                    span.set_status(Status(StatusCode.ERROR))


def _template(scope: Scope) -> str:
    route: Any = scope.get("route")
    return str(getattr(route, "path", UNMATCHED))
