"""Safe rollout on a real aisf: a canary split changed by a reload that drops no request, and a shadow
that is compared, reported on both transports and promoted."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml

from aisf.router.v1 import model_control_pb2 as control_pb
from aisf.router.v1 import model_control_pb2_grpc as control_grpc
from tests.support.processes import AisfProcess
from tests.support.python_models import slow_echo

pytestmark = pytest.mark.integration


def _versions(root: Path, name: str, **config: object) -> Path:
    model_dir = slow_echo(root, name, delay_s=0.0)
    shutil.copytree(model_dir / "1", model_dir / "2")
    settings = yaml.safe_load((model_dir / "config.yaml").read_text())
    settings.update({"version_policy": {"all": True}, **config})
    (model_dir / "config.yaml").write_text(yaml.safe_dump(settings))
    return model_dir


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("traffic-models")
    _versions(
        root, "canary", traffic={"routes": [{"version": 1, "weight": 100}, {"version": 2, "weight": 0}]}
    )
    # The latency gate is the unit tests' (test_shadow_gates): on a loaded CI machine one slow copy among 60
    # decides a p99, and this test is about reporting and promoting.
    shadow = {"version": "2", "sample": 1.0, "promote": {"min_compared": 50, "max_p99_ratio": 1000}}
    _versions(root, "shadowed", shadow=shadow)
    return root


def _x(value: float) -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput("x", [1, 2], "FP32")
    tensor.set_data_from_numpy(np.full((1, 2), value, np.float32))
    return [tensor]


def _set_traffic(models: Path, weights: tuple[int, int]) -> None:
    path = models / "canary" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["traffic"] = {
        "routes": [{"version": 1, "weight": weights[0]}, {"version": 2, "weight": weights[1]}]
    }
    path.write_text(yaml.safe_dump(config))


def test_moving_the_canary_split_by_reload_under_load_drops_no_request(
    server: AisfProcess, models: Path
) -> None:
    """Four clients call without pause while the split moves 100/0 -> 50/50 -> 0/100 -> 100/0 by
    RepositoryModelLoad: every request is answered, and the versions follow the split."""
    versions: list[str] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def client() -> None:
        with grpcclient.InferenceServerClient(server.grpc_url) as triton:
            while not stop.is_set():
                try:
                    answer = triton.infer("canary", _x(1.0))
                    versions.append(answer.get_response().model_version)
                except BaseException as exc:
                    failures.append(exc)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    with grpcclient.InferenceServerClient(server.grpc_url) as admin:
        seen: list[set[str]] = []
        for weights in ((50, 50), (0, 100), (100, 0)):
            time.sleep(0.5)
            _set_traffic(models, weights)
            admin.load_model("canary")
            time.sleep(0.05)  # requests routed before the reload returned may still be answering
            mark = len(versions)
            time.sleep(0.5)
            seen.append(set(versions[mark:]))
    stop.set()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]
    assert len(versions) > 100
    assert seen[0] == {"1", "2"} and seen[1] == {"2"} and seen[2] == {"1"}


def test_a_shadow_is_reported_on_both_transports_and_promoted(
    server: AisfProcess, rest: httpx.Client
) -> None:
    with grpcclient.InferenceServerClient(server.grpc_url) as triton:
        for i in range(60):
            assert triton.infer("shadowed", _x(float(i))).get_response().model_version == "1"
    deadline = time.monotonic() + 10
    while (report := rest.get("/v2/models/shadowed/shadow").json())["compared"] < 60:
        assert time.monotonic() < deadline, report
        time.sleep(0.05)
    assert report["agreed"] == 60 and report["agreement"] == 1.0 and report["shadow_model_version"] == "2"
    assert report["promotable"] is True and report["live_p99_ms"] > 0, report
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = control_grpc.ModelControlServiceStub(channel)
        reply = stub.GetShadowReport(control_pb.GetShadowReportRequest(model_name="shadowed"), timeout=10)
    assert reply.report.compared == 60 and reply.report.promotable
    assert rest.get("/v2/models/canary/shadow").status_code == 404  # no shadow configured
    promoted = rest.post("/v2/models/shadowed/shadow/promote", json={})
    assert promoted.status_code == 200 and promoted.json()["promoted"] is True
    assert rest.post("/v2/models/shadowed/shadow/promote", json={}).status_code == 409  # already
    with grpcclient.InferenceServerClient(server.grpc_url) as triton:
        assert triton.infer("shadowed", _x(1.0)).get_response().model_version == "2"
    status = rest.get("/v2/models/shadowed/status").json()
    assert status["traffic"] == [{"model_name": "", "model_version": "2", "weight": 1.0}]
