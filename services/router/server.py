"""Assembles and runs the inference-router service: repository, dataplane, gRPC services."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from aisf.adapters.registry import AdapterRegistry
from aisf.services.common.db.engine import open_database
from aisf.services.common.db.model_store import ModelStore
from aisf.services.common.grpc_server import GrpcServer, build_server
from aisf.services.common.metrics import InferenceMetrics
from aisf.services.common.settings import Settings
from aisf.services.router import repository_servicer, v2_servicer
from aisf.services.router.dataplane import Dataplane
from aisf.services.router.repository import ModelRepository


@dataclass(slots=True)
class RouterRuntime:
    grpc: GrpcServer
    dataplane: Dataplane
    repository: ModelRepository
    grpc_port: int
    socket_address: str

    async def stop(self, grace_s: float) -> None:
        self.dataplane.mark_stopping()
        await self.grpc.stop(grace_s)
        await self.repository.close()


async def start_router(
    settings: Settings,
    metrics: CollectorRegistry,
    adapters: AdapterRegistry | None = None,
    unix_socket: bool = False,
) -> RouterRuntime:
    """Load the repository, then serve on host:grpc_port (and on a Unix socket for co-located roles)."""
    store = ModelStore(open_database(settings.resolved_database_url()))
    repository = ModelRepository(
        settings.model_repository, adapters or AdapterRegistry.from_entry_points(), store
    )
    dataplane = Dataplane(repository, InferenceMetrics(metrics))
    tcp = f"{settings.host}:{settings.grpc_port}"
    addresses = [tcp]
    socket_address = ""
    if unix_socket:
        path = settings.router_socket()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        socket_address = f"unix://{path}"
        addresses.append(socket_address)
    grpc = build_server(
        [v2_servicer.register(dataplane), repository_servicer.register(store)],
        [v2_servicer.SERVICE_NAME, repository_servicer.SERVICE_NAME],
        addresses,
        settings.max_request_bytes,
    )
    await repository.load_all()
    await grpc.start()
    dataplane.mark_started()
    return RouterRuntime(grpc, dataplane, repository, grpc.ports[tcp], socket_address)
