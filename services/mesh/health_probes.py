"""The control plane's own gRPC health checks of each registered replica: a replica that heartbeats but
no longer answers (a wedged event loop, a server already draining) leaves the endpoint set too."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import httpx
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aisf.services.mesh.registry import Replica

log = logging.getLogger(__name__)


class HealthProbes:
    def __init__(self, timeout_s: float, failures_to_eject: int = 3) -> None:
        self._timeout_s = timeout_s
        self._failures_to_eject = failures_to_eject
        self._channels: dict[str, aio.Channel] = {}
        self._failures: dict[str, int] = {}
        self._passing: set[str] = set()
        self._http: httpx.AsyncClient | None = None

    async def healthy(self, replicas: Sequence[Replica]) -> list[Replica]:
        """The replicas in the endpoint set: in from their first SERVING answer, out after
        `failures_to_eject` failed checks in a row."""
        await self._forget({r.address for r in replicas})
        answers = await asyncio.gather(*(self._serving(r) for r in replicas))
        passing = []
        for replica, serving in zip(replicas, answers, strict=True):
            address = replica.address
            if serving:
                self._failures[address] = 0
                self._passing.add(address)
            else:
                failures = self._failures[address] = self._failures.get(address, 0) + 1
                if failures >= self._failures_to_eject and address in self._passing:
                    self._passing.discard(address)
                    log.warning(
                        "replica %s failed %d health checks in a row: out of the endpoint set",
                        replica.replica_id,
                        failures,
                        extra={"replica_id": replica.replica_id, "address": address},
                    )
            if address in self._passing:
                passing.append(replica)
        return passing

    async def close(self) -> None:
        await self._forget(set())
        if self._http is not None:
            await self._http.aclose()

    async def _serving(self, replica: Replica) -> bool:
        if replica.role == "gateway":  # the REST edge: KServe V2's readiness
            return await self._ready_over_http(replica.address)
        channel = self._channels.get(replica.address)
        if channel is None:
            channel = self._channels[replica.address] = aio.insecure_channel(replica.address)
        try:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=self._timeout_s
            )
        except aio.AioRpcError:
            return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

    async def _ready_over_http(self, address: str) -> bool:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._timeout_s)
        try:
            return (await self._http.get(f"http://{address}/v2/health/ready")).status_code == 200
        except httpx.HTTPError:
            return False

    async def _forget(self, keep: set[str]) -> None:
        """Drop what is known of addresses no longer registered (gRPC ones have a channel, HTTP ones not)."""
        for address in {*self._channels, *self._failures, *self._passing} - keep:
            channel = self._channels.pop(address, None)
            if channel is not None:
                await channel.close(None)
            self._failures.pop(address, None)
            self._passing.discard(address)
