"""The replicas of the mesh, kept in the metadata database so every control-plane replica (and one that
restarts) sees the same set at once: register, heartbeat, leave, and the live set."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from aisf.services.common.db.engine import aware
from aisf.services.common.db.tables import MeshReplicaRow
from aisf.services.common.errors import InvalidInput, ReplicaIdTaken, ReplicaNotFound

ROLES = ("router", "job", "feature", "pii", "all", "gateway")
"""Roles that join the mesh: the gRPC roles at their gRPC port, gateways at their REST port."""
_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_MAX_MODELS = 10_000
_MAX_MODEL_NAME = 255
_FORGET_AFTER = 20
"""Rows silent for this many time-to-lives are deleted; until then a restarted control plane still
health-checks them (settling), and a late heartbeat finds its row."""


@dataclass(frozen=True, slots=True)
class Replica:
    replica_id: str
    role: str
    address: str
    models: tuple[str, ...]
    last_seen: datetime

    @property
    def host(self) -> str:
        return split_address(self.address)[0]

    @property
    def port(self) -> int:
        return split_address(self.address)[1]


def split_address(address: str, field: str = "address") -> tuple[str, int]:
    """host and port of `host:port` or `[v6]:port`; raises InvalidInput naming `field`."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidInput(f"{field}: {address!r} is not host:port with a port in 1-65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidInput(f"{field}: {address!r} has a malformed IPv6 literal") from None
        return host, int(port_text)
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        if not _HOSTNAME.fullmatch(host) or host.replace(".", "").isdigit():
            raise InvalidInput(f"{field}: {address!r} names no valid host") from None
    return host, int(port_text)


def checked_registration(replica_id: str, role: str, address: str, models: list[str]) -> tuple[str, ...]:
    """Raise InvalidInput naming the first bad field of a registration; the models, deduplicated."""
    check_id(replica_id)
    if role not in ROLES:
        raise InvalidInput(f"role: {role!r} is not one of {', '.join(ROLES)}")
    split_address(address)
    return checked_models(models)


def check_id(replica_id: str) -> None:
    if not _ID.fullmatch(replica_id):
        raise InvalidInput("replica_id: 1-128 letters, digits, '.', '_' or '-'")


def checked_models(models: list[str]) -> tuple[str, ...]:
    if len(models) > _MAX_MODELS:
        raise InvalidInput(f"models: at most {_MAX_MODELS} names")
    for index, name in enumerate(models):
        if not name or len(name) > _MAX_MODEL_NAME or not name.isprintable():
            raise InvalidInput(f"models[{index}]: a model name of 1-{_MAX_MODEL_NAME} printable characters")
    return tuple(sorted(set(models)))


class ReplicaRegistry:
    """Blocking calls (run them on the database's threads); `ttl` is how long a replica stays without a
    heartbeat."""

    def __init__(self, engine: Engine, ttl: timedelta) -> None:
        self._engine = engine
        self._ttl = ttl

    def register(self, replica_id: str, role: str, address: str, models: tuple[str, ...]) -> None:
        now = datetime.now(UTC)
        with Session(self._engine) as session, session.begin():
            row = session.get(MeshReplicaRow, replica_id, with_for_update=True)
            if row is None:
                session.add(
                    MeshReplicaRow(
                        replica_id=replica_id,
                        role=role,
                        address=address,
                        models="\n".join(models),
                        registered_at=now,
                        last_seen=now,
                    )
                )
                return
            if row.address != address and self._alive(row, now):
                raise ReplicaIdTaken(
                    f"replica_id: '{replica_id}' is live at {row.address}; pick another id or wait "
                    f"{self._ttl.total_seconds():g} s after it stops"
                )
            if row.address != address:
                row.registered_at = now
            row.role, row.address, row.models, row.last_seen = role, address, "\n".join(models), now

    def heartbeat(self, replica_id: str, models: tuple[str, ...]) -> None:
        now = datetime.now(UTC)
        with Session(self._engine) as session, session.begin():
            row = session.get(MeshReplicaRow, replica_id, with_for_update=True)
            if row is None or not self._alive(row, now):
                raise ReplicaNotFound(f"replica_id: '{replica_id}' is not registered (or expired): register")
            row.models, row.last_seen = "\n".join(models), now

    def leave(self, replica_id: str) -> None:
        with Session(self._engine) as session, session.begin():
            if session.execute(
                delete(MeshReplicaRow).where(MeshReplicaRow.replica_id == replica_id)
            ).rowcount:  # type: ignore[attr-defined]
                return
        raise ReplicaNotFound(f"replica_id: '{replica_id}' is not registered")

    def live(self, settling: bool = False) -> list[Replica]:
        """The replicas heard from within the time-to-live, by id; forgets long-silent ones. `settling`
        (a control plane just started): every one not yet forgotten, since none could heartbeat while
        no control plane ran; the health checks tell which still serve."""
        now = datetime.now(UTC)
        window = self._ttl * (_FORGET_AFTER if settling else 1)
        with Session(self._engine) as session, session.begin():
            session.execute(
                delete(MeshReplicaRow).where(MeshReplicaRow.last_seen < now - self._ttl * _FORGET_AFTER)
            )
            rows = session.scalars(
                select(MeshReplicaRow)
                .where(MeshReplicaRow.last_seen >= now - window)
                .order_by(MeshReplicaRow.replica_id)
            ).all()
            return [
                Replica(
                    row.replica_id,
                    row.role,
                    row.address,
                    tuple(row.models.split("\n")) if row.models else (),
                    aware(row.last_seen),
                )
                for row in rows
            ]

    def _alive(self, row: MeshReplicaRow, now: datetime) -> bool:
        return aware(row.last_seen) >= now - self._ttl
