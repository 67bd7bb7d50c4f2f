"""Builds the REST edge application around a router client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from aisf import __version__
from aisf.gateway import v2_routes
from aisf.gateway.errors import install_error_handlers
from aisf.gateway.router_client import RouterClient
from aisf.services.common.settings import Settings


def create_app(settings: Settings, client: RouterClient) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await client.close()

    app = FastAPI(title="AI Serving Foundation", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.router = client
    install_error_handlers(app)
    app.include_router(v2_routes.router)
    return app
