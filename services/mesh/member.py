"""A replica's side of the mesh: register with the control plane once serving, heartbeat with the
models it has ready (at once when they change), register again when the control plane forgot it, and
leave before draining so Envoy stops sending it calls while in-flight ones finish."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable

from aisf.services.clients.mesh_client import MeshClient
from aisf.services.common.errors import AisfError, ReplicaNotFound
from aisf.services.common.settings import WILDCARD_HOSTS, Settings
from aisf.services.mesh.registry import split_address

log = logging.getLogger(__name__)


def advertised_address(settings: Settings, grpc_port: int) -> str:
    """Where Envoy should reach this process; a malformed AISF_MESH_ADVERTISE_ADDRESS stops the start
    (the control plane would refuse every registration)."""
    if settings.mesh_advertise_address:
        split_address(settings.mesh_advertise_address, "mesh_advertise_address")
        return settings.mesh_advertise_address
    host = settings.host
    if host in WILDCARD_HOSTS:
        host = socket.gethostbyname(socket.gethostname())
    return f"[{host}]:{grpc_port}" if ":" in host else f"{host}:{grpc_port}"


def replica_id(settings: Settings, role: str) -> str:
    return settings.mesh_replica_id or f"{role}-{socket.gethostname()}-{os.getpid()}"


class MeshMember:
    def __init__(
        self,
        client: MeshClient,
        replica: str,
        role: str,
        address: str,
        models: Callable[[], list[str]],
    ) -> None:
        self._client = client
        self._id, self._role, self._address = replica, role, address
        self._models = models
        self._interval_s = 1.0
        self._registered = False
        self._reachable = True
        self._nudge = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Join in the background: a control plane that is down never holds up serving."""
        self._task = asyncio.create_task(self._run())

    def nudge(self) -> None:
        """The models changed: heartbeat now."""
        self._nudge.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._registered:
            try:
                await self._client.leave(self._id)
            except AisfError as error:
                log.warning(
                    "could not leave the mesh (%s); Envoy drops this replica when heartbeats stop", error
                )
        await self._client.close()

    async def _run(self) -> None:
        while True:
            try:
                if not self._registered:
                    self._interval_s = await self._client.register(
                        self._id, self._role, self._address, self._models()
                    )
                    self._registered = True
                    log.info(
                        "joined the mesh as %s at %s", self._id, self._address, extra={"replica_id": self._id}
                    )
                else:
                    await self._client.heartbeat(self._id, self._models())
                self._reached()
            except ReplicaNotFound:
                self._registered = False  # the control plane forgot us (expired): register again now
                continue
            except AisfError as error:
                self._unreached(error)
            except Exception:  # never let the loop die: the replica would silently leave the mesh
                log.exception("mesh heartbeat failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudge.wait(), self._interval_s)
            self._nudge.clear()

    def _reached(self) -> None:
        if not self._reachable:
            log.info("the mesh control plane answers again")
        self._reachable = True

    def _unreached(self, error: AisfError) -> None:
        if self._reachable:  # once per outage, not once a heartbeat
            log.warning("the mesh control plane refused or missed a call (%s); retrying", error.message)
        self._reachable = False
