"""The gRPC side of the error table: AisfError -> status + trailers, and back for clients."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc import aio
from opentelemetry import trace

from aisf.services.common import call_context, deadlines, tracing
from aisf.services.common.auth.grpc_guard import GrpcGuard, Metadata
from aisf.services.common.auth.permissions import Rule, rule_for
from aisf.services.common.errors import AisfError, Code, InvalidInput

log = logging.getLogger(__name__)

REASON_KEY = "aisf-reason"
RETRY_AFTER_KEY = "retry-after"

_STATUS_BY_CODE = {Code(s.value[0]): s for s in grpc.StatusCode}


def grpc_status(code: Code) -> grpc.StatusCode:
    return _STATUS_BY_CODE[code]


def error_from_rpc(error: aio.AioRpcError | grpc.RpcError) -> AisfError:
    """Rebuild the typed error a server raised, from its status code and aisf-reason trailer."""
    status = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    code = Code(status.value[0])
    trailers: Any = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    reason = next((str(value) for key, value in trailers or () if key == REASON_KEY), "")
    wait = next((str(value) for key, value in trailers or () if key == RETRY_AFTER_KEY), "")
    details = error.details() if hasattr(error, "details") else str(error)
    retry_after = int(wait) if wait.isdigit() else None
    return AisfError.class_for(reason, code)(details or status.name.lower(), retry_after)


async def abort_with(context: aio.ServicerContext[Any, Any], error: AisfError) -> None:
    trailers: list[tuple[str, str]] = [(REASON_KEY, error.reason)]
    if error.retry_after is not None:
        trailers.append((RETRY_AFTER_KEY, str(error.retry_after)))
    context.set_trailing_metadata(tuple(trailers))
    await context.abort(grpc_status(error.code), error.message)


def _rejected(method: str, error: AisfError) -> None:
    tracing.failed(trace.get_current_span(), error.reason, error.message)
    log.info("request rejected", extra={"rpc": method, "reason": error.reason, "detail": error.message})


async def _crashed(method: str, context: aio.ServicerContext[Any, Any], exc: Exception) -> None:
    log.error("request failed", extra={"rpc": method}, exc_info=exc)
    tracing.failed(trace.get_current_span(), "internal", type(exc).__name__)
    await context.abort(
        grpc.StatusCode.INTERNAL, f"internal error (request id {call_context.request_id.get() or 'none'})"
    )


class _Malformed:
    """Stands in for a request whose bytes did not parse, so the handler can answer INVALID_ARGUMENT
    (grpcio itself would answer INTERNAL)."""

    def __init__(self, problem: str) -> None:
        self.problem = problem


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    parse = deserializer

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as exc:
            return _Malformed(str(exc) or type(exc).__name__)

    return deserialize


def _checked(request: Any) -> Any:
    if isinstance(request, _Malformed):
        raise InvalidInput(f"request is not a valid protobuf message: {request.problem}")
    return request


async def _checked_stream(requests: AsyncIterator[Any], gate: _Gate | None = None) -> AsyncIterator[Any]:
    async for request in requests:
        yield _checked(request) if gate is None else gate.check(_checked(request))


class TypedErrors(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Wraps a service's handlers: maps typed errors once for every service, binds the caller's request
    id (to the logs) and deadline (to every downstream wait and call; a call without one gets the
    server's default), and with keys on, admits the caller (`guard`, under the method's rule). Applied
    when a service registers, not per call as a server interceptor would be (that cost every request
    ~20-30 us of coroutines and handler objects)."""

    def __init__(
        self,
        inner: Any,
        unary_timeout_s: float = 60.0,
        stream_timeout_s: float = 600.0,
        guard: GrpcGuard | None = None,
    ) -> None:
        self._inner = inner
        self._unary_timeout_s = unary_timeout_s
        self._stream_timeout_s = stream_timeout_s
        self._guard = guard
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = self._inner.service(handler_call_details)
            if handler is None:  # not cached: a client naming random methods must not grow the cache
                return None
            wrapped = self._wrapped[method] = self._wrap(handler, method)
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler[Any, Any], method: str) -> grpc.RpcMethodHandler[Any, Any]:
        parse = _lenient(handler.request_deserializer)
        unary, streams = self._unary_timeout_s, self._stream_timeout_s
        gate = _Gate(self._guard, rule_for(method)) if self._guard is not None else None
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _unary(handler.unary_unary, method, unary, gate), parse, handler.response_serializer
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _uploading(handler.stream_unary, method, streams, gate), parse, handler.response_serializer
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _streaming(handler.unary_stream, method, streams, gate, stream_in=False),
                parse,
                handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                _streaming(handler.stream_stream, method, streams, gate, stream_in=True),
                parse,
                handler.response_serializer,
            )
        return handler


class _Gate:
    """One method's admission: the guard and the method's rule, looked up once."""

    def __init__(self, guard: GrpcGuard, rule: Rule) -> None:
        self.guard = guard
        self.rule = rule

    async def admit(self, metadata: Metadata | None) -> None:
        await self.guard.admit(metadata, self.rule)

    def check(self, request: Any) -> Any:
        principal = call_context.principal.get()
        if principal is not None:
            self.rule.check(principal, request)
        return request


def _bind_call(context: aio.ServicerContext[Any, Any], default_timeout_s: float) -> Metadata | None:
    """Bind the call's context and deadline; its metadata, read once for every use of the call."""
    metadata = context.invocation_metadata()
    call_context.bind(metadata)
    left = context.time_remaining()
    deadlines.bind(default_timeout_s if left is None else left)
    return metadata


def _unary(
    behavior: Callable[..., Any], method: str, timeout_s: float, gate: _Gate | None, stream_in: bool = False
) -> Callable[..., Awaitable[Any]]:
    async def answer(request: Any, context: aio.ServicerContext[Any, Any], metadata: Metadata | None) -> Any:
        try:
            if gate is not None:
                await gate.admit(metadata)
                if not stream_in:  # a stream's messages are checked as they arrive (_checked_stream)
                    gate.check(_checked(request))
            return await behavior(request if stream_in else _checked(request), context)
        except AisfError as error:
            _rejected(method, error)
            await abort_with(context, error)
        except aio.AbortError:
            raise
        except Exception as exc:
            await _crashed(method, context, exc)

    async def call(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        metadata = _bind_call(context, timeout_s)
        if not tracing.enabled():
            return await answer(request, context, metadata)
        with tracing.grpc_server_span(method, metadata):
            return await answer(request, context, metadata)

    return call


def _uploading(
    behavior: Callable[..., Any], method: str, timeout_s: float, gate: _Gate | None
) -> Callable[..., Awaitable[Any]]:
    """A client stream in, one answer out (file uploads): its errors map as a unary call's do."""
    return _unary(
        lambda requests, context: behavior(_checked_stream(requests, gate), context),
        method,
        timeout_s,
        gate,
        stream_in=True,
    )


def _streaming(
    behavior: Callable[..., Any], method: str, timeout_s: float, gate: _Gate | None, stream_in: bool
) -> Callable[..., AsyncIterator[Any]]:
    async def answer(
        request: Any, context: aio.ServicerContext[Any, Any], metadata: Metadata | None
    ) -> AsyncIterator[Any]:
        try:
            if gate is not None:
                await gate.admit(metadata)
            if stream_in:
                incoming = _checked_stream(request, gate)
            else:
                incoming = _checked(request)
                if gate is not None:
                    gate.check(incoming)
            async for item in behavior(incoming, context):
                yield item
        except AisfError as error:
            _rejected(method, error)
            await abort_with(context, error)
        except aio.AbortError:
            raise
        except Exception as exc:
            await _crashed(method, context, exc)

    async def call(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        metadata = _bind_call(context, timeout_s)
        if not tracing.enabled():
            async for item in answer(request, context, metadata):
                yield item
            return
        with tracing.grpc_server_span(method, metadata):
            async for item in answer(request, context, metadata):
                yield item

    return call
