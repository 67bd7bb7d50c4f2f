"""What every internal gRPC client shares: one channel, typed errors in, request id and deadline out (the
caller's remaining deadline when it has one, else the client's default)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from grpc import aio

from aisf.services.common import call_context, deadlines, tracing
from aisf.services.common.grpc_errors import error_from_rpc
from aisf.services.common.grpc_server import channel_options

Reply = TypeVar("Reply")


class GrpcClient:
    def __init__(
        self,
        target: str,
        max_message_bytes: int,
        timeout_s: float,
        options: Sequence[tuple[str, int]] = (),
    ) -> None:
        options, spans = [*channel_options(max_message_bytes), *options], tracing.client_interceptors()
        self._channel = aio.insecure_channel(target, options=options, interceptors=spans or None)
        self._timeout_s = timeout_s

    async def close(self) -> None:
        await self._channel.close(None)

    async def _call(
        self, method: Callable[..., Awaitable[Reply]], request: Any, request_id: str = "", model: str = ""
    ) -> Reply:
        """`model`: the model the call is for, in metadata too (a mesh routes on it)."""
        pairs = call_context.outgoing(request_id)
        if model:
            pairs.append((call_context.MODEL_KEY, model))
        metadata = tuple(pairs) or None
        try:
            return await method(request, timeout=deadlines.timeout_or(self._timeout_s), metadata=metadata)
        except aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None

    async def _read(
        self,
        method: Callable[..., Any],
        request: Any,
        timeout_s: float | None,
        metadata: tuple[tuple[str, str], ...] | None = None,
    ) -> AsyncGenerator[Any, None]:
        """Yield a server stream's messages (`timeout_s` None: as long as it lasts, e.g. a watch); closing
        the generator cancels the call."""
        timeout = None if timeout_s is None else deadlines.timeout_or(timeout_s)
        if metadata is None:
            metadata = tuple(call_context.outgoing()) or None
        call = method(request, timeout=timeout, metadata=metadata)
        try:
            async for message in call:
                yield message
        except aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        finally:
            call.cancel()
