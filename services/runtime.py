"""Runs one role, or every role in one process (--role all), until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, start_http_server

from aisf.gateway.server import GatewayRuntime, start_gateway
from aisf.services.common.settings import Role, Settings
from aisf.services.router.server import RouterRuntime, start_router

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Endpoints:
    rest: str
    grpc: str
    metrics: str

    def describe(self) -> str:
        parts = [
            f"{name} {url}"
            for name, url in (("REST", self.rest), ("gRPC", self.grpc), ("metrics", self.metrics))
            if url
        ]
        return "aisf ready: " + "  ".join(parts)


def _display_host(host: str) -> str:
    return "localhost" if host in ("0.0.0.0", "::", "") else host


async def run(settings: Settings, role: Role, announce: Callable[[Endpoints], None]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    registry = CollectorRegistry()
    metrics_server, metrics_thread = start_http_server(settings.metrics_port, settings.host, registry)
    host = _display_host(settings.host)
    router: RouterRuntime | None = None
    gateway: GatewayRuntime | None = None
    try:
        if role in ("all", "router"):
            router = await start_router(settings, registry, unix_socket=role == "all")
        if role in ("all", "gateway"):
            target = (
                router.socket_address
                if router
                else (settings.router_address or f"127.0.0.1:{settings.grpc_port}")
            )
            gateway = await start_gateway(settings, target)
        announce(
            Endpoints(
                rest=f"http://{host}:{gateway.http_port}" if gateway else "",
                grpc=f"{host}:{router.grpc_port}" if router else "",
                metrics=f"http://{host}:{metrics_server.server_port}/metrics",
            )
        )
        await stop.wait()
        log.info("shutting down", extra={"grace_s": settings.shutdown_grace_s})
    finally:
        if gateway is not None:
            await gateway.stop()
        if router is not None:
            await router.stop(settings.shutdown_grace_s)
        metrics_server.shutdown()
        metrics_thread.join(timeout=2)
