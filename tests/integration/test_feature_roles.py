"""The feature role on its own, a router reaching it over gRPC, and a Redis that goes away and comes back
(a real redis-server on a spare port, stopped and started again under a running aisf)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import redis
import tritonclient.grpc as triton

from aisf.feature.v1 import feature_service_pb2 as pb
from aisf.feature.v1 import feature_service_pb2_grpc as pb_grpc
from aisf.services.feature import repo_tools
from aisf.services.feature_samples import build_feature_repo, build_recsys_demo
from tests.support.features import materialized_repo
from tests.support.processes import AisfProcess, free_port, running_aisf

REDIS = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS is None, reason="needs redis-server (.ci/bootstrap installs it)")


class RedisServer:
    """redis-server on a spare port, its data kept on disk so a restart keeps the features."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert REDIS is not None
        self.process = subprocess.Popen(
            [
                REDIS,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with redis.Redis(port=self.port) as client:
                    if client.ping():
                        return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def feature_role(store: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AisfProcess]:
    repo = materialized_repo(tmp_path_factory.mktemp("features"), port=store.port, db=0)
    empty = tmp_path_factory.mktemp("no-models")
    env = {"AISF_FEATURE_REPO": str(repo)}
    with running_aisf(empty, tmp_path_factory.mktemp("data"), env=env, role="feature") as process:
        yield process


@pytest.fixture(scope="module")
def router_role(feature_role: AisfProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AisfProcess]:
    models = tmp_path_factory.mktemp("models")
    build_recsys_demo(models)
    env = {"AISF_FEATURE_ADDRESS": feature_role.grpc_url}
    with running_aisf(models, tmp_path_factory.mktemp("data"), env=env, role="router") as process:
        yield process


def _lookup(role: AisfProcess) -> pb.GetOnlineFeaturesResponse:
    with grpc.insecure_channel(role.grpc_url) as channel:
        request = pb.GetOnlineFeaturesRequest(features=["user_features:user_ctr"])
        request.entities["user_id"].int64_values.values.append(3)
        return pb_grpc.FeatureServiceStub(channel).GetOnlineFeatures(request, timeout=10)


def _rank(role: AisfProcess) -> np.ndarray:
    client = triton.InferenceServerClient(role.grpc_url)
    inputs = [triton.InferInput("user_id", [1], "INT64"), triton.InferInput("item_id", [4], "INT64")]
    inputs[0].set_data_from_numpy(np.asarray([3], dtype=np.int64))
    inputs[1].set_data_from_numpy(np.asarray([1, 2, 3, 4], dtype=np.int64))
    return client.infer("recsys-demo", inputs).as_numpy("output__0")


def test_the_feature_role_serves_alone_and_a_router_joins_features_over_grpc(
    feature_role: AisfProcess, router_role: AisfProcess
) -> None:
    assert feature_role.http_port == 0  # no REST edge in the feature role
    assert list(_lookup(feature_role).columns[1].statuses) == [pb.FIELD_STATUS_PRESENT]
    assert _rank(router_role).shape == (4, 1)


def test_a_dead_redis_is_unavailable_naming_the_store_and_recovers_without_a_restart(
    store: RedisServer, feature_role: AisfProcess, router_role: AisfProcess
) -> None:
    store.stop()
    try:
        with pytest.raises(grpc.RpcError) as failure:
            _lookup(feature_role)
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        assert f"redis://127.0.0.1:{store.port}/0" in (failure.value.details() or "")
        with pytest.raises(triton.InferenceServerException) as ranked:
            _rank(router_role)
        assert ranked.value.status() == "StatusCode.UNAVAILABLE"
        metrics = httpx.get(f"http://127.0.0.1:{feature_role.metrics_port}/metrics").text
        assert 'aisf_feature_lookups_total{outcome="feature_store_unavailable",store="redis"}' in metrics
    finally:
        store.start()
    deadline = time.monotonic() + 10
    while True:
        try:
            assert list(_lookup(feature_role).columns[1].statuses) == [pb.FIELD_STATUS_PRESENT]
            break
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert _rank(router_role).shape == (4, 1)


def test_features_apply_leaves_the_working_directory_where_it_was(tmp_path: Path) -> None:
    """Feast's apply moves into the repository for good; `aisf up` resolves its data dir after it."""
    repo = build_feature_repo(tmp_path / "repo")
    before = os.getcwd()
    repo_tools.apply(repo)
    assert os.getcwd() == before
    assert (repo / "data" / "registry.db").is_file()
