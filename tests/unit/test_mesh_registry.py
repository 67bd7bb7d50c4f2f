"""The mesh's replica registry: address and registration checks (typed errors naming the field), and
register / heartbeat / leave / expiry on the metadata database (SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aisf.services.common.db.engine import Database, open_database
from aisf.services.common.errors import InvalidInput, ReplicaIdTaken, ReplicaNotFound
from aisf.services.common.settings import Settings
from aisf.services.mesh.member import advertised_address
from aisf.services.mesh.registry import ReplicaRegistry, checked_registration, split_address
from tests.support.databases import fresh_database

TTL = timedelta(seconds=0.5)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with fresh_database(request.param, tmp_path) as url:
        opened = open_database(url, threads=2)
        yield opened
        opened.close()


@pytest.fixture()
def registry(database: Database) -> ReplicaRegistry:
    return ReplicaRegistry(database.engine, TTL)


@pytest.mark.parametrize(
    ("address", "host", "port"),
    [
        ("127.0.0.1:8001", "127.0.0.1", 8001),
        ("[::1]:9000", "::1", 9000),
        ("aisf-router-0.aisf.svc.cluster.local:8001", "aisf-router-0.aisf.svc.cluster.local", 8001),
        ("localhost:1", "localhost", 1),
    ],
)
def test_addresses_split_into_host_and_port(address: str, host: str, port: int) -> None:
    assert split_address(address) == (host, port)


@pytest.mark.parametrize(
    "address",
    [
        "",
        "127.0.0.1",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "host:http",
        "[::zz]:80",
        "::1:80",
        "bad host:80",
        "-lead.example:80",
        "999.1.1.1:80",
        ":8001",
    ],
)
def test_malformed_addresses_are_invalid_input_naming_the_field(address: str) -> None:
    with pytest.raises(InvalidInput, match="^address: "):
        split_address(address)


@given(st.text(max_size=80))
def test_any_text_is_an_address_or_invalid_input_never_another_error(text: str) -> None:
    try:
        host, port = split_address(text)
    except InvalidInput:
        return
    assert 0 < port < 65536 and host


_LABEL = r"[a-z]([a-z0-9-]{0,18}[a-z0-9])?"  # a DNS label: no '-' at either end


@given(st.from_regex(rf"{_LABEL}(\.{_LABEL}){{0,3}}", fullmatch=True), st.integers(1, 65535))
def test_a_dns_name_and_port_round_trip(host: str, port: int) -> None:
    assert split_address(f"{host}:{port}") == (host, port)


def test_registration_checks_name_the_field() -> None:
    with pytest.raises(InvalidInput, match="^replica_id: "):
        checked_registration("has space", "router", "127.0.0.1:1", [])
    with pytest.raises(InvalidInput, match="^role: "):
        checked_registration("r1", "worker", "127.0.0.1:1", [])  # a worker serves nothing to route to
    with pytest.raises(InvalidInput, match=r"^models\[1\]: "):
        checked_registration("r1", "router", "127.0.0.1:1", ["ok", "bad\nname"])
    assert checked_registration("r1", "router", "127.0.0.1:1", ["b", "a", "b"]) == ("a", "b")


def test_a_registered_replica_is_live_with_its_models(registry: ReplicaRegistry) -> None:
    registry.register("r1", "router", "127.0.0.1:8001", ("a", "b"))
    (replica,) = registry.live()
    assert (replica.replica_id, replica.address, replica.models) == ("r1", "127.0.0.1:8001", ("a", "b"))
    registry.heartbeat("r1", ("c",))
    assert registry.live()[0].models == ("c",)


def test_the_same_id_at_another_address_is_taken_while_the_first_lives(registry: ReplicaRegistry) -> None:
    registry.register("r1", "router", "127.0.0.1:8001", ())
    registry.register("r1", "router", "127.0.0.1:8001", ())  # the same replica again: a refresh
    with pytest.raises(ReplicaIdTaken, match="^replica_id: 'r1' is live at 127.0.0.1:8001"):
        registry.register("r1", "router", "127.0.0.1:9999", ())
    time.sleep(TTL.total_seconds() + 0.1)
    registry.register("r1", "router", "127.0.0.1:9999", ())  # the first stopped: the id is free again
    assert registry.live()[0].address == "127.0.0.1:9999"


def test_a_heartbeat_for_an_unknown_or_expired_replica_is_not_found(registry: ReplicaRegistry) -> None:
    with pytest.raises(ReplicaNotFound, match="^replica_id: 'ghost'"):
        registry.heartbeat("ghost", ())
    registry.register("r1", "router", "127.0.0.1:8001", ())
    time.sleep(TTL.total_seconds() + 0.1)
    assert registry.live() == []
    with pytest.raises(ReplicaNotFound):
        registry.heartbeat("r1", ())


def test_a_settling_control_plane_still_sees_replicas_silent_while_it_was_away(
    registry: ReplicaRegistry,
) -> None:
    registry.register("r1", "router", "127.0.0.1:8001", ())
    time.sleep(TTL.total_seconds() + 0.1)
    assert registry.live() == []
    assert [r.replica_id for r in registry.live(settling=True)] == ["r1"]


def test_leave_removes_at_once_and_twice_is_not_found(registry: ReplicaRegistry) -> None:
    registry.register("r1", "router", "127.0.0.1:8001", ())
    registry.leave("r1")
    assert registry.live() == []
    with pytest.raises(ReplicaNotFound):
        registry.leave("r1")


def test_a_replica_advertises_its_bound_host_or_a_checked_address_of_its_own() -> None:
    assert advertised_address(Settings(host="127.0.0.1"), 8001) == "127.0.0.1:8001"
    assert advertised_address(Settings(host="::1"), 8001) == "[::1]:8001"
    given = Settings(mesh_advertise_address="10.1.2.3:8001")
    assert advertised_address(given, 9999) == "10.1.2.3:8001"
    with pytest.raises(InvalidInput, match="^mesh_advertise_address: '10.1.2.3' is not host:port"):
        advertised_address(Settings(mesh_advertise_address="10.1.2.3"), 8001)
