"""Runs the REST edge under uvicorn inside the caller's event loop."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import uvicorn
from prometheus_client import CollectorRegistry

from aisf.gateway.app import create_app
from aisf.services.clients.batch_client import BatchClient
from aisf.services.clients.feature_client import FeatureClient
from aisf.services.clients.job_client import JobClient
from aisf.services.clients.router_client import RouterClient
from aisf.services.common.auth.authenticator import Authenticator
from aisf.services.common.settings import Settings


@dataclass(slots=True)
class GatewayRuntime:
    server: uvicorn.Server
    task: asyncio.Task[None]
    http_port: int

    async def stop(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def start_gateway(
    settings: Settings,
    registry: CollectorRegistry,
    router_target: str,
    job_target: str,
    feature_target: str = "",
    authenticator: Authenticator | None = None,
) -> GatewayRuntime:
    limit = settings.max_request_bytes
    app = create_app(
        settings,
        RouterClient(router_target, limit, settings.request_timeout_s, settings.stream_timeout_s),
        JobClient(job_target, limit),
        BatchClient(job_target, limit),
        FeatureClient(feature_target, limit, settings.request_timeout_s) if feature_target else None,
        registry,
        authenticator,
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) or None,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("REST edge stopped during start-up")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return GatewayRuntime(server, task, port)
