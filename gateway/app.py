"""Builds the REST edge application around its gRPC clients (router, job service, files and batches)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from prometheus_client import CollectorRegistry

from aisf import __version__
from aisf.gateway import batch_routes, features_routes, jobs_routes, openai_routes, v2_routes
from aisf.gateway.auth import authenticate
from aisf.gateway.edge_telemetry import EdgeTelemetry, bind_call
from aisf.gateway.errors import install_error_handlers
from aisf.services.clients.batch_client import BatchClient
from aisf.services.clients.feature_client import FeatureClient
from aisf.services.clients.job_client import JobClient
from aisf.services.clients.router_client import RouterClient
from aisf.services.common import deadlines
from aisf.services.common.auth.authenticator import Authenticator
from aisf.services.common.settings import Settings


async def bind_deadline(request: Request) -> None:
    """A REST caller's deadline (X-Aisf-Timeout-Ms) reaches the router as the gRPC deadline."""
    header = request.headers.get(deadlines.TIMEOUT_HEADER)
    if header is not None:
        deadlines.bind(deadlines.parse_timeout_ms(header, f"{deadlines.TIMEOUT_HEADER} header"))


def create_app(
    settings: Settings,
    client: RouterClient,
    jobs: JobClient,
    batches: BatchClient,
    features: FeatureClient | None = None,
    registry: CollectorRegistry | None = None,
    authenticator: Authenticator | None = None,
) -> FastAPI:
    """`authenticator` None: no keys (AISF_AUTH=off)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await client.close()
        await jobs.close()
        await batches.close()
        if features is not None:
            await features.close()

    app = FastAPI(
        title="AI Serving Foundation",
        version=__version__,
        lifespan=lifespan,
        dependencies=[Depends(bind_call), Depends(authenticate), Depends(bind_deadline)],
        # FastAPI's own spans would stand beside the edge's (a second root per request, a span per
        # dependency): EdgeTelemetry makes the one server span and the metrics.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.add_middleware(EdgeTelemetry, registry=registry or CollectorRegistry())
    app.state.settings = settings
    app.state.router = client
    app.state.jobs = jobs
    app.state.batches = batches
    app.state.features = features
    app.state.authenticator = authenticator
    install_error_handlers(app)
    app.include_router(v2_routes.router)
    app.include_router(jobs_routes.router)
    app.include_router(openai_routes.router)  # LLM lane: OpenAI errors are route-scoped (openai_errors)
    app.include_router(batch_routes.router)  # the OpenAI Files and Batch APIs
    if features is not None:
        app.include_router(features_routes.router)  # Feast's feature-server API
    return app
