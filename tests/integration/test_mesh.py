"""The mesh with real processes on loopback: `aisf serve --role control-plane`, router replicas that
join it, and a real Envoy fed over ADS, under a steady tritonclient load; then a bad snapshot that
Envoy NACKs, with the ADS server in this process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format
from prometheus_client import CollectorRegistry
from tritonclient.grpc import service_pb2

from aisf.mesh.v1 import mesh_service_pb2 as mesh_pb
from aisf.mesh.v1 import mesh_service_pb2_grpc as mesh_grpc
from aisf.services.clients.mesh_client import MeshClient
from aisf.services.clients.router_client import RouterClient
from aisf.services.common.errors import InvalidInput, ReplicaIdTaken, ReplicaNotFound
from aisf.services.common.grpc_server import build_server
from aisf.services.mesh import ads
from aisf.services.mesh.envoy_resources import ROUTE, TYPES, MeshOptions, resources
from aisf.services.mesh.registry import Replica
from aisf.services.mesh.snapshots import SnapshotCache
from aisf.services.samples import build_tabular_demo
from tests.support.envoy import EnvoyProcess, running_envoy
from tests.support.llm import scrape
from tests.support.models import build_string_identity
from tests.support.processes import AisfProcess, free_port, running_aisf
from tests.support.steady_load import ROW, SteadyLoad, inferences

pytestmark = pytest.mark.integration

HEARTBEAT_S = 0.5


@dataclass
class Mesh:
    envoy: EnvoyProcess
    envoy_port: int
    control_grpc_port: int
    control_dir: Path
    stack: ExitStack
    repositories: dict[str, Path]
    env: dict[str, str]
    control: AisfProcess | None = None
    replicas: dict[str, AisfProcess] = field(default_factory=dict)
    gateway: AisfProcess | None = None
    rest_port: int = 0

    def start_control_plane(self) -> AisfProcess:
        self.control = self.stack.enter_context(
            running_aisf(
                self.repositories["a"],
                self.control_dir,
                args=["--grpc-port", str(self.control_grpc_port)],
                env=self.env,
                role="control-plane",
            )
        )
        return self.control

    def start_replica(self, name: str, repository: str, data: Path) -> AisfProcess:
        env = {
            **self.env,
            "AISF_MESH_ADDRESS": f"127.0.0.1:{self.control_grpc_port}",
            "AISF_MESH_REPLICA_ID": name,
        }
        self.replicas[name] = replica = self.stack.enter_context(
            running_aisf(self.repositories[repository], data, env=env, role="router")
        )
        return replica


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("mesh")
    a, b = root / "models-a", root / "models-b"
    build_tabular_demo(a)
    build_string_identity(a)
    build_tabular_demo(b)
    envoy_port, rest_port, control_port = free_port(), free_port(), free_port()
    env = {
        "AISF_MESH_HEARTBEAT_S": str(HEARTBEAT_S),
        "AISF_MESH_ENVOY_PORT": str(envoy_port),
        "AISF_MESH_ENVOY_HTTP_PORT": str(rest_port),
    }
    with ExitStack() as stack:
        control_dir = root / "control"
        placeholder = Mesh(None, envoy_port, control_port, control_dir, stack, {"a": a, "b": b}, env)  # type: ignore[arg-type]
        placeholder.start_control_plane()
        placeholder.envoy = stack.enter_context(running_envoy(f"127.0.0.1:{control_port}", root))
        placeholder.start_replica("router-a", "a", root / "a")
        placeholder.start_replica("router-b", "b", root / "b")
        placeholder.rest_port = rest_port
        placeholder.gateway = stack.enter_context(
            running_aisf(
                a,
                root / "gateway",
                env={
                    **env,
                    "AISF_MESH_ADDRESS": f"127.0.0.1:{control_port}",
                    "AISF_MESH_REPLICA_ID": "gateway-1",
                    "AISF_ROUTER_ADDRESS": f"127.0.0.1:{envoy_port}",  # its calls balance through Envoy too
                },
                role="gateway",
            )
        )
        yield placeholder


def _snapshot_version(mesh: Mesh) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{mesh.control_grpc_port}") as channel:
        answer = mesh_grpc.MeshServiceStub(channel).ListReplicas(mesh_pb.ListReplicasRequest(), timeout=5)
    return str(answer.snapshot_version)


def _routers(mesh: Mesh, *names: str) -> set[str]:
    return {mesh.replicas[n].grpc_url for n in names}


def test_calls_through_envoy_reach_every_replica_and_model_routes_only_its_servers(mesh: Mesh) -> None:
    mesh.envoy.wait_hosts("aisf-router", _routers(mesh, "router-a", "router-b"))
    mesh.envoy.wait_hosts("aisf-model-string-identity", _routers(mesh, "router-a"))
    before = {name: inferences(r.grpc_url) for name, r in mesh.replicas.items()}
    with grpcclient.InferenceServerClient(f"127.0.0.1:{mesh.envoy_port}") as client:
        for _ in range(200):
            tensor = grpcclient.InferInput("input__0", [1, 4], "FP32")
            tensor.set_data_from_numpy(ROW)
            client.infer("tabular-demo", [tensor])
        # router-b lacks string-identity: the aisf-model header takes every call to router-a.
        text = np.array([[b"hello"]], dtype=np.object_)
        for _ in range(40):
            tensor = grpcclient.InferInput("text", [1, 1], "BYTES")
            tensor.set_data_from_numpy(text)
            answer = client.infer("string-identity", [tensor], headers={"aisf-model": "string-identity"})
            assert answer.as_numpy("echo").tolist() == [[b"hello"]]
    served = {name: inferences(r.grpc_url) - before[name] for name, r in mesh.replicas.items()}
    assert sum(served.values()) == 200 and min(served.values()) > 20, served


def test_rest_through_envoy_reaches_a_gateway_whose_calls_reach_the_routers_through_envoy(mesh: Mesh) -> None:
    assert mesh.gateway is not None
    mesh.envoy.wait_hosts("aisf-gateway", {mesh.gateway.http_url})
    body = {"inputs": [{"name": "input__0", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    with httpx.Client(base_url=f"http://127.0.0.1:{mesh.rest_port}", timeout=10) as rest:
        assert rest.get("/v2/health/ready").status_code == 200
        answers = [rest.post("/v2/models/string-identity/infer", json=_text_body()) for _ in range(20)]
        assert {a.status_code for a in answers} == {200}  # router-b lacks it: the gateway names the model
        answer = rest.post("/v2/models/tabular-demo/infer", json=body)
    assert answer.status_code == 200 and answer.json()["outputs"][0]["name"] == "output__0"


def _text_body() -> dict[str, object]:
    return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1, 1], "data": ["hi"]}]}


async def test_aisf_clients_name_the_model_so_envoy_takes_their_calls_to_its_servers(mesh: Mesh) -> None:
    """The gateway and the job workers call routers through Envoy: router-b lacks string-identity,
    and no call may land there."""
    client = RouterClient(f"127.0.0.1:{mesh.envoy_port}", 1 << 22)
    request = service_pb2.ModelInferRequest(
        model_name="string-identity",
        inputs=[
            {"name": "text", "datatype": "BYTES", "shape": [1, 1], "contents": {"bytes_contents": [b"hi"]}}
        ],
    )
    try:
        answers = await asyncio.gather(*(client.infer(request) for _ in range(40)))
    finally:
        await client.close()
    assert {a.model_name for a in answers} == {"string-identity"}


def test_a_replica_killed_mid_load_costs_no_request_and_moves_the_snapshot(mesh: Mesh) -> None:
    version = _snapshot_version(mesh)
    with SteadyLoad(mesh.envoy_port) as load:
        time.sleep(1.5)
        mesh.replicas["router-b"].process.kill()  # SIGKILL: no leave, no drain
        killed = time.monotonic()
        gone_after_s = mesh.envoy.wait_hosts("aisf-router", _routers(mesh, "router-a"))
        time.sleep(1.0)
    assert load.errors == [] and load.done > 100
    assert _snapshot_version(mesh) != version
    assert time.monotonic() - killed > gone_after_s
    mesh.replicas.pop("router-b")


def test_a_new_replica_receives_traffic_within_5_s(mesh: Mesh, tmp_path: Path) -> None:
    with SteadyLoad(mesh.envoy_port) as load:
        started = mesh.start_replica("router-c", "b", tmp_path / "c")
        ready = time.monotonic()
        while inferences(started.grpc_url) == 0:
            assert time.monotonic() - ready < 5, mesh.control.log_text()[-3000:]  # type: ignore[union-attr]
            time.sleep(0.1)
    assert load.errors == []


def test_envoy_routes_on_while_the_control_plane_restarts_then_resubscribes(mesh: Mesh) -> None:
    assert mesh.control is not None
    version = _snapshot_version(mesh)
    with SteadyLoad(mesh.envoy_port) as load:
        mesh.control.stop()
        time.sleep(3 * HEARTBEAT_S * 2)  # every replica's registration expires meanwhile
        mesh.start_control_plane()
        deadline = time.monotonic() + 20
        while scrape(mesh.control.metrics_port, "aisf_mesh_xds_streams") != 1:
            assert time.monotonic() < deadline, mesh.envoy.log_text()[-3000:]
            time.sleep(0.1)
        time.sleep(2 * HEARTBEAT_S)
    assert load.errors == [] and load.done > 100
    assert _snapshot_version(mesh) == version  # the same replicas: the same content, the same version
    mesh.envoy.wait_hosts("aisf-router", _routers(mesh, "router-a", "router-c"))


async def test_bad_registrations_are_typed_errors_and_leave_the_snapshot_alone(mesh: Mesh) -> None:
    assert mesh.control is not None
    client = MeshClient(f"127.0.0.1:{mesh.control_grpc_port}")
    try:
        version = (await client.replicas()).snapshot_version
        with pytest.raises(InvalidInput, match="^address: 'nowhere' is not host:port"):
            await client.register("r-bad", "router", "nowhere", [])
        with pytest.raises(ReplicaIdTaken, match="^replica_id: 'router-a' is live at"):
            await client.register("router-a", "router", "127.0.0.1:1", [])
        with pytest.raises(ReplicaNotFound, match="^replica_id: 'ghost'"):
            await client.heartbeat("ghost", [])
        with pytest.raises(InvalidInput, match=r"^models\[0\]: "):
            await client.heartbeat("router-a", [""])
        listed = await client.replicas()
        assert listed.snapshot_version == version
        assert {r.replica_id for r in listed.replicas if r.healthy} == {"router-a", "router-c", "gateway-1"}
    finally:
        await client.close()
    log = mesh.control.log_text()
    assert log.count("address: 'nowhere' is not host:port") == 1  # logged once, as a rejection
    assert "Traceback" not in log


# --- a bad snapshot, with the ADS server in this process ---


async def _accepted_everything(cache: SnapshotCache, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while any(cache.accepted().get(t) != (s.version if (s := cache.served(t)) else None) for t in TYPES):
        assert time.monotonic() < deadline, f"accepted {cache.accepted()}"
        await asyncio.sleep(0.05)


@pytest.fixture()
async def in_process_plane(
    tmp_path: Path,
) -> AsyncIterator[tuple[SnapshotCache, CollectorRegistry, EnvoyProcess]]:
    metrics = CollectorRegistry()
    cache = SnapshotCache(metrics)
    upstream = [Replica("r", "router", "127.0.0.1:1", ("m",), datetime.now(UTC))]
    cache.publish(resources(upstream, MeshOptions(listener_port=free_port())))
    server = build_server(
        [ads.register(ads.AdsServicer(cache, metrics))], [ads.SERVICE_NAME], ["127.0.0.1:0"], 1 << 22
    )
    await server.start()
    port = server.ports["127.0.0.1:0"]
    started = running_envoy(f"127.0.0.1:{port}", tmp_path)
    try:
        envoy = await asyncio.to_thread(started.__enter__)  # this loop must go on answering Envoy
        try:
            await _accepted_everything(cache)
            yield cache, metrics, envoy
        finally:
            await asyncio.to_thread(started.__exit__, None, None, None)
    finally:
        await server.stop(0)


async def test_a_route_naming_an_unknown_cluster_is_nacked_and_the_last_good_snapshot_stays(
    in_process_plane: tuple[SnapshotCache, CollectorRegistry, EnvoyProcess], caplog: pytest.LogCaptureFixture
) -> None:
    cache, metrics, envoy = in_process_plane
    good = cache.served(ROUTE)
    assert good is not None and envoy.route_version() == good.version
    built = resources([], MeshOptions())
    (routes,) = built[ROUTE]
    shape = json_format.MessageToDict(routes)
    shape["virtualHosts"][0]["routes"][0]["route"]["cluster"] = "no-such-cluster"
    built[ROUTE] = [json_format.ParseDict(shape, route_pb2.RouteConfiguration())]
    built = {ROUTE: built[ROUTE]}  # only the routes change
    cache.publish(built)
    bad = cache._newest[ROUTE].version  # noqa: SLF001  (the version Envoy is about to reject)
    deadline = time.monotonic() + 20
    while metrics.get_sample_value("aisf_mesh_xds_rejections_total", {"type": "routes"}) != 1:
        assert time.monotonic() < deadline, envoy.log_text()[-3000:]
        await asyncio.sleep(0.05)
    assert cache.served(ROUTE) == good  # the last good one, for every Envoy that subscribes from now on
    assert envoy.route_version() == good.version  # Envoy kept it too
    assert envoy.stat("cluster_manager.cds.update_rejected") == 0
    assert f"an Envoy rejected the routes snapshot {bad}" in caplog.text
    assert "no-such-cluster" in caplog.text  # Envoy's reason, in the log
    await asyncio.sleep(1)  # no push loop: nothing more was rejected
    assert metrics.get_sample_value("aisf_mesh_xds_rejections_total", {"type": "routes"}) == 1


def test_with_keys_replicas_join_with_the_roles_token_and_a_stranger_is_refused(tmp_path: Path) -> None:
    build_tabular_demo(tmp_path / "models")
    token, port = "mesh-test-token-0123456789abcdef", free_port()
    env = {"AISF_AUTH": "keys", "AISF_INTERNAL_TOKEN": token, "AISF_MESH_HEARTBEAT_S": str(HEARTBEAT_S)}
    joining = {**env, "AISF_MESH_ADDRESS": f"127.0.0.1:{port}", "AISF_MESH_REPLICA_ID": "keyed"}
    with (
        running_aisf(
            tmp_path / "models", tmp_path / "cp", ["--grpc-port", str(port)], env, role="control-plane"
        ),
        running_aisf(tmp_path / "models", tmp_path / "r", env=joining, role="router"),
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        stub = mesh_grpc.MeshServiceStub(channel)
        roles = (("authorization", f"Bearer {token}"),)
        deadline = time.monotonic() + 20
        while not any(
            r.healthy for r in stub.ListReplicas(mesh_pb.ListReplicasRequest(), metadata=roles).replicas
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        stranger = mesh_pb.RegisterRequest(replica_id="evil", role="router", address="127.0.0.1:1")
        with pytest.raises(grpc.RpcError) as refused:
            stub.Register(stranger, timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        listed = stub.ListReplicas(mesh_pb.ListReplicasRequest(), metadata=roles)
        assert [r.replica_id for r in listed.replicas] == ["keyed"]
