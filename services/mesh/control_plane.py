"""The control-plane role: the replica registry's gRPC service, and the loop that turns the live,
healthy replicas into the snapshot Envoys are served (on every registration, leave and probe round)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from grpc import aio
from prometheus_client import CollectorRegistry, Gauge

from aisf.mesh.v1 import mesh_service_pb2 as pb
from aisf.mesh.v1 import mesh_service_pb2_grpc as pb_grpc
from aisf.services.common.db.engine import Database
from aisf.services.common.grpc_server import Registrar
from aisf.services.common.settings import Settings
from aisf.services.mesh import ads
from aisf.services.mesh.envoy_resources import TYPES, MeshOptions, resources
from aisf.services.mesh.health_probes import HealthProbes
from aisf.services.mesh.registry import (
    ROLES,
    Replica,
    ReplicaRegistry,
    check_id,
    checked_models,
    checked_registration,
)
from aisf.services.mesh.snapshots import SnapshotCache

log = logging.getLogger(__name__)
SERVICE_NAME = "aisf.mesh.v1.MeshService"
TTL_HEARTBEATS = 3
"""A replica silent for this many heartbeat intervals leaves the endpoint set."""
SETTLE_HEARTBEATS = 10
"""After a start, this many intervals in which replicas silent since the last control plane went away
stay in (if their health checks pass): time for each to reconnect and register again."""


@dataclass(slots=True)
class MeshControlPlane:
    database: Database
    registry: ReplicaRegistry
    cache: SnapshotCache
    probes: HealthProbes
    options: MeshOptions
    heartbeat_s: float
    metrics: CollectorRegistry
    healthy: list[Replica] = field(default_factory=list)
    known: list[Replica] = field(default_factory=list)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _refreshing: asyncio.Lock = field(default_factory=asyncio.Lock)
    _loop: asyncio.Task[None] | None = None
    _served_models: frozenset[str] = frozenset()
    _replicas_gauge: Gauge | None = None
    _started: float | None = None

    @property
    def service_names(self) -> list[str]:
        return [SERVICE_NAME, ads.SERVICE_NAME]

    @property
    def registrars(self) -> list[Registrar]:
        return [register_mesh(MeshServicer(self)), ads.register(ads.AdsServicer(self.cache, self.metrics))]

    async def start(self) -> None:
        """The first snapshot is built before any Envoy is answered (a restart serves the registered
        replicas at once, never an empty set)."""
        self._replicas_gauge = Gauge(
            "aisf_mesh_replicas",
            "Registered replicas, by role and health",
            ["role", "health"],
            registry=self.metrics,
        )
        self._started = time.monotonic()
        await self.refresh()
        self._loop = asyncio.create_task(self._run())

    def nudge(self) -> None:
        self._wake.set()

    async def refresh(self) -> None:
        """One round: the live replicas, their health checks, the snapshot (one round at a time: a leave
        runs one of its own beside the loop's)."""
        async with self._refreshing:
            await self._refresh()

    async def _refresh(self) -> None:
        settling = (
            self._started is None or time.monotonic() - self._started < self.heartbeat_s * SETTLE_HEARTBEATS
        )
        self.known = await self.database.run(self.registry.live, settling)
        self.healthy = await self.probes.healthy(self.known)
        served = frozenset(m for r in self.healthy if r.role in ("router", "all") for m in r.models)
        lingering = self._served_models - served  # one more push with their cluster, no route
        self._served_models = served
        if self.cache.publish(resources(self.healthy, self.options, lingering)):
            log.info(
                "snapshot %s: %d of %d replicas healthy",
                self.cache.version(),
                len(self.healthy),
                len(self.known),
                extra={"snapshot_version": self.cache.version()},
            )
        self._count()

    async def close(self) -> None:
        """Stop changing the snapshot (before the server drains: replicas that cannot heartbeat to a
        stopping control plane must not leave Envoy's endpoints)."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        await self.probes.close()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.heartbeat_s)
            self._wake.clear()
            try:
                await self.refresh()
            except Exception:  # the database away for a moment: Envoys keep the last snapshot
                log.exception("mesh refresh failed; Envoys keep the last snapshot")

    def _count(self) -> None:
        gauge = self._replicas_gauge
        if gauge is None:
            return
        healthy = {r.replica_id for r in self.healthy}
        for role in ROLES:
            of_role = [r for r in self.known if r.role == role]
            gauge.labels(role, "healthy").set(sum(r.replica_id in healthy for r in of_role))
            gauge.labels(role, "unhealthy").set(sum(r.replica_id not in healthy for r in of_role))


class MeshServicer(pb_grpc.MeshServiceServicer):
    def __init__(self, plane: MeshControlPlane) -> None:
        self._plane = plane

    async def Register(self, request: pb.RegisterRequest, context: Any) -> pb.RegisterResponse:
        models = checked_registration(request.replica_id, request.role, request.address, list(request.models))
        plane = self._plane
        await plane.database.run(
            plane.registry.register, request.replica_id, request.role, request.address, models
        )
        log.info(
            "replica %s (%s) registered at %s",
            request.replica_id,
            request.role,
            request.address,
            extra={"replica_id": request.replica_id, "models": len(models)},
        )
        plane.nudge()
        return pb.RegisterResponse(heartbeat_interval_s=plane.heartbeat_s)

    async def Heartbeat(self, request: pb.HeartbeatRequest, context: Any) -> pb.HeartbeatResponse:
        check_id(request.replica_id)
        models = checked_models(list(request.models))
        plane = self._plane
        before = next((r for r in plane.known if r.replica_id == request.replica_id), None)
        await plane.database.run(plane.registry.heartbeat, request.replica_id, models)
        if before is None or before.models != models:
            plane.nudge()  # a model loaded or unloaded (or a replica the last round missed): route it now
        return pb.HeartbeatResponse(snapshot_version=plane.cache.version())

    async def Leave(self, request: pb.LeaveRequest, context: Any) -> pb.LeaveResponse:
        check_id(request.replica_id)
        plane = self._plane
        await plane.database.run(plane.registry.leave, request.replica_id)
        log.info("replica %s left", request.replica_id, extra={"replica_id": request.replica_id})
        await plane.refresh()  # out of the endpoint set before the replica starts to drain
        return pb.LeaveResponse()

    async def ListReplicas(self, request: pb.ListReplicasRequest, context: Any) -> pb.ListReplicasResponse:
        plane = self._plane
        healthy = {r.replica_id for r in plane.healthy}
        known = await plane.database.run(plane.registry.live)
        moment = datetime.now(UTC)
        return pb.ListReplicasResponse(
            replicas=[
                pb.Replica(
                    replica_id=r.replica_id,
                    role=r.role,
                    address=r.address,
                    models=r.models,
                    healthy=r.replica_id in healthy,
                    idle_ms=int((moment - r.last_seen).total_seconds() * 1000),
                )
                for r in known
            ],
            snapshot_version=plane.cache.version(),
            accepted=[
                pb.TypeVersion(type_url=t, version=v) for t, v in plane.cache.accepted().items() if t in TYPES
            ],
        )


def register_mesh(servicer: MeshServicer) -> Registrar:
    def add(server: aio.Server) -> None:
        pb_grpc.add_MeshServiceServicer_to_server(servicer, server)

    return add


def build_control_plane(
    settings: Settings, database: Database, metrics: CollectorRegistry
) -> MeshControlPlane:
    heartbeat_s = settings.mesh_heartbeat_s
    return MeshControlPlane(
        database=database,
        registry=ReplicaRegistry(database.engine, timedelta(seconds=heartbeat_s * TTL_HEARTBEATS)),
        cache=SnapshotCache(metrics),
        probes=HealthProbes(settings.mesh_probe_timeout_s),
        options=MeshOptions(
            listener_port=settings.mesh_envoy_port,
            http_listener_port=settings.mesh_envoy_http_port,
            retries=settings.mesh_retries,
            max_requests=settings.mesh_max_requests,
        ),
        heartbeat_s=heartbeat_s,
        metrics=metrics,
    )
