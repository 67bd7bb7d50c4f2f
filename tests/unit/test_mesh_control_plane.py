"""The control plane's endpoint set over a real database and a real gRPC health service: a restarted
control plane settles before it drops silent replicas, health checks take a replica out and back."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2
from prometheus_client import CollectorRegistry

from aisf.services.common.db.engine import Database, open_database
from aisf.services.common.grpc_server import GrpcServer, build_server
from aisf.services.common.settings import Settings
from aisf.services.mesh.control_plane import SETTLE_HEARTBEATS, TTL_HEARTBEATS, build_control_plane
from aisf.services.mesh.health_probes import HealthProbes
from aisf.services.mesh.registry import Replica, ReplicaRegistry

HEARTBEAT_S = 0.1


@pytest.fixture()
def database(tmp_path: Path) -> Iterator[Database]:
    opened = open_database(f"sqlite:///{tmp_path / 'meta.db'}", threads=2)
    yield opened
    opened.close()


@pytest.fixture()
async def replica() -> AsyncIterator[GrpcServer]:
    """A replica's gRPC server: only its health service."""
    server = build_server([], [], ["127.0.0.1:0"], 1 << 20)
    await server.start()
    yield server
    await server.stop(0)


def _settings(heartbeat_s: float = HEARTBEAT_S) -> Settings:
    return Settings(mesh_heartbeat_s=heartbeat_s, mesh_probe_timeout_s=0.5)


def _register(database: Database, server: GrpcServer) -> None:
    registry = ReplicaRegistry(database.engine, timedelta(seconds=60 * TTL_HEARTBEATS))
    registry.register("r1", "router", f"127.0.0.1:{server.ports['127.0.0.1:0']}", ("m",))


async def test_a_restarted_control_plane_keeps_replicas_silent_while_it_was_away_until_it_settles(
    database: Database, replica: GrpcServer
) -> None:
    _register(database, replica)
    await asyncio.sleep(HEARTBEAT_S * TTL_HEARTBEATS + 0.1)  # expired while no control plane ran
    plane = build_control_plane(_settings(), database, CollectorRegistry())
    await plane.start()
    try:
        assert [r.replica_id for r in plane.healthy] == ["r1"]  # the first snapshot already has it
        await asyncio.sleep(HEARTBEAT_S * (TTL_HEARTBEATS + 1))
        await plane.refresh()
        assert [r.replica_id for r in plane.healthy] == ["r1"]  # a time-to-live on: still settling
        await asyncio.sleep(HEARTBEAT_S * SETTLE_HEARTBEATS)
        await plane.refresh()
        assert plane.healthy == []  # settled, and it never heartbeated: gone
    finally:
        await plane.close()


async def test_three_failed_health_checks_take_a_replica_out_and_one_pass_brings_it_back(
    database: Database, replica: GrpcServer
) -> None:
    _register(database, replica)
    plane = build_control_plane(_settings(heartbeat_s=60), database, CollectorRegistry())
    await plane.start()  # its loop's next round is a minute away: the test drives the rounds
    try:
        await replica.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        for expected in (["r1"], ["r1"], []):
            _register(database, replica)  # it keeps heartbeating: only the checks fail
            await plane.refresh()
            assert [r.replica_id for r in plane.healthy] == expected
        await replica.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await plane.refresh()
        assert [r.replica_id for r in plane.healthy] == ["r1"]
    finally:
        await plane.close()


class _Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802  (the handler's API)
        self.send_response(200 if self.path == "/v2/health/ready" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


async def test_a_gateway_that_left_starts_over_when_one_comes_back_at_its_address() -> None:
    """A replica at an address seen before is new: in only once it answers, whatever the last one did."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ready)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    address = f"127.0.0.1:{server.server_address[1]}"
    gateway = Replica("g1", "gateway", address, (), datetime.now(UTC))
    probes = HealthProbes(timeout_s=0.5)
    try:
        assert await probes.healthy([gateway]) == [gateway]
        assert await probes.healthy([]) == []  # it left
        server.shutdown()
        server.server_close()
        again = Replica("g2", "gateway", address, (), datetime.now(UTC))
        assert await probes.healthy([again]) == []  # nothing answers there: not in on the old one's pass
    finally:
        await probes.close()
