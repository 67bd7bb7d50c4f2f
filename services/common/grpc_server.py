"""Builds every aisf gRPC server the same way: interceptors, limits, health, reflection, ports."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from aisf.services.common.auth.grpc_guard import GrpcGuard
from aisf.services.common.grpc_errors import TypedErrors

Registrar = Callable[[aio.Server], None]


class _Registering:
    """What a generated `add_*Servicer_to_server` sees: it wraps each service's handlers in TypedErrors
    on their way to the real server."""

    def __init__(self, server: aio.Server, timeouts_s: tuple[float, float], guard: GrpcGuard | None) -> None:
        self._server = server
        self._timeouts_s = timeouts_s
        self._guard = guard

    def add_generic_rpc_handlers(self, handlers: Sequence[Any]) -> None:
        self._server.add_generic_rpc_handlers(
            [TypedErrors(h, *self._timeouts_s, guard=self._guard) for h in handlers]
        )

    def add_registered_method_handlers(self, service_name: str, handlers: dict[str, Any]) -> None:
        """grpc.aio does not use these yet (its generic handlers above serve every call)."""


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


@dataclass(slots=True)
class GrpcServer:
    server: aio.Server
    health: Any  # grpc_health.v1.health.aio.HealthServicer (untyped in grpc-stubs)
    ports: dict[str, int]
    service_names: Sequence[str]

    async def start(self) -> None:
        await self.server.start()
        for name in (*self.service_names, ""):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace_s: float) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)


def build_server(
    registrars: Sequence[Registrar],
    service_names: Sequence[str],
    addresses: Sequence[str],
    max_message_bytes: int,
    timeouts_s: tuple[float, float] = (60.0, 600.0),
    guard: GrpcGuard | None = None,
) -> GrpcServer:
    """Bind `addresses` (host:port with port 0 for a free one, or unix:path) and register services;
    `timeouts_s` are the deadlines of unary and streaming calls that bring none; `guard` admits callers
    by key (None: no keys). Health and reflection stay open."""
    server = aio.server(options=channel_options(max_message_bytes))
    registering = cast(
        aio.Server, _Registering(server, timeouts_s, guard)
    )  # has what the add_* functions call
    for register in registrars:
        register(registering)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    ports = {address: server.add_insecure_port(address) for address in addresses}
    return GrpcServer(server, health_servicer, ports, service_names)
