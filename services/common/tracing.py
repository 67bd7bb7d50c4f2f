"""OpenTelemetry traces across every hop (REST edge → router → engine; job service → Temporal workflow →
activity → router), W3C trace context in gRPC metadata, HTTP headers and Temporal headers. Off by
default: then nothing here runs on a request's path beyond one flag test."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import lru_cache
from typing import Any

from grpc import aio
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from aisf import __version__
from aisf.services.common.settings import Settings

log = logging.getLogger(__name__)

_state = {"enabled": False}
tracer = trace.get_tracer("aisf", __version__)


def enabled() -> bool:
    return _state["enabled"]


def configure_tracing(settings: Settings, role: str) -> TracerProvider | None:
    """Install the process's tracer provider as configured; the caller shuts it down (flushing spans)."""
    if settings.tracing == "off":
        return None
    exporter: SpanExporter
    if settings.tracing == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint)  # http:// is plaintext, https:// TLS
    else:
        exporter = ConsoleSpanExporter()
    resource = Resource.create({"service.name": f"aisf-{role}", "service.version": __version__})
    provider = TracerProvider(
        resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.tracing_sample))
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _state["enabled"] = True
    log.info("tracing on", extra={"exporter": settings.tracing, "sample": settings.tracing_sample})
    return provider


def capture() -> dict[str, str]:
    """The current trace context, to resume later (e.g. when the outbox starts a job's workflow)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@contextmanager
def resumed(carrier: Mapping[str, str] | None) -> Iterator[None]:
    """Run the block inside a captured trace context (none captured: as it is)."""
    if not carrier:
        yield
        return
    token = otel_context.attach(propagate.extract(carrier))
    try:
        yield
    finally:
        otel_context.detach(token)


_PROPAGATED = frozenset(("traceparent", "tracestate", "baggage"))


def _metadata_carrier(metadata: Iterable[tuple[str, str | bytes]] | None) -> dict[str, str]:
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in metadata or () if k in _PROPAGATED}


@contextmanager
def server_span(
    name: str, kind: SpanKind, carrier: Mapping[str, str], attributes: Mapping[str, Any]
) -> Iterator[Span]:
    """A span continuing the caller's trace (carrier: its headers or metadata)."""
    parent = propagate.extract(carrier)
    with tracer.start_as_current_span(
        name, context=parent, kind=kind, attributes=dict(attributes), record_exception=False
    ) as span:
        yield span


@lru_cache(maxsize=512)
def _rpc_naming(method: str) -> tuple[str, dict[str, str]]:
    name = method.lstrip("/")
    service, _, rpc = name.partition("/")
    return name, {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc}


def grpc_server_span(
    method: str, metadata: Iterable[tuple[str, str | bytes]] | None
) -> AbstractContextManager[Span]:
    """The server span of one call, continuing the trace its metadata carries (on every call: kept lean)."""
    name, attributes = _rpc_naming(method)
    parent = propagate.extract(_metadata_carrier(metadata))
    # The handler sets the status itself (the typed error's reason and message); the AbortError that
    # ends an aborted call must not overwrite it.
    return tracer.start_as_current_span(
        name,
        context=parent,
        kind=SpanKind.SERVER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    )


def failed(span: Span, reason: str, message: str = "") -> None:
    span.set_attribute("aisf.reason", reason)
    span.set_status(Status(StatusCode.ERROR, message or reason))


def _outgoing(details: aio.ClientCallDetails, span: Span) -> aio.ClientCallDetails:
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    metadata = aio.Metadata(*(details.metadata or ()), *carrier.items())
    return aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


def _client_span(details: aio.ClientCallDetails) -> Span:
    method = details.method.decode() if isinstance(details.method, bytes) else str(details.method)
    name, attributes = _rpc_naming(method)
    return tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)


async def _answered(span: Span, call: Any) -> Any:
    """The one answer of a call, with its span ended (and marked when the call failed)."""
    try:
        return await call
    except aio.AioRpcError as error:
        failed(span, error.code().name.lower(), error.details() or "")
        raise
    finally:
        span.end()


# One class per kind of call: grpc.aio files an interceptor under the first kind it is an instance of.
class _UnaryClientSpans(aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_unary(
        self, continuation: Any, details: aio.ClientCallDetails, request: Any
    ) -> Any:
        span = _client_span(details)
        return await _answered(span, await continuation(_outgoing(details, span), request))


class _UploadClientSpans(aio.StreamUnaryClientInterceptor):  # type: ignore[type-arg]
    """Client streams in, one answer out (file uploads)."""

    async def intercept_stream_unary(
        self, continuation: Any, details: aio.ClientCallDetails, requests: Any
    ) -> Any:
        span = _client_span(details)
        return await _answered(span, await continuation(_outgoing(details, span), requests))


class _StreamClientSpans(aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_stream(
        self, continuation: Any, details: aio.ClientCallDetails, request: Any
    ) -> Any:
        span = _client_span(details)
        call = await continuation(_outgoing(details, span), request)
        call.add_done_callback(lambda _: span.end())  # the stream's end, however it ends
        return call


def client_interceptors() -> list[Any]:
    """For every internal gRPC channel: a client span per call, its context in the call's metadata."""
    return [_UnaryClientSpans(), _UploadClientSpans(), _StreamClientSpans()] if enabled() else []


_UNTRACED = nullcontext()


def span(described: Callable[[], tuple[str, Mapping[str, str | int]]]) -> AbstractContextManager[Any]:
    """A child span of the current one around a block (an engine call); nothing when tracing is off or
    the trace is not sampled. `described` gives its name and attributes, built only when it is made."""
    if not enabled() or not trace.get_current_span().is_recording():
        return _UNTRACED
    name, attributes = described()
    return tracer.start_as_current_span(name, attributes=dict(attributes))
