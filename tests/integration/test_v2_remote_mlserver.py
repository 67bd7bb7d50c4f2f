"""The v2_remote adapter against a real MLServer: aisf fronts an XGBoost model that MLServer serves."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.grpc as grpcclient
import xgboost
import yaml
from tritonclient.utils import InferenceServerException

from aisf.services.samples import tabular_training_data
from tests.support.mlserver import MLServerProcess, running_mlserver, write_xgboost_model
from tests.support.processes import AisfProcess, running_aisf

pytestmark = pytest.mark.integration

REMOTE = "tabular-xgb"  # the model's name inside MLServer
PROXY = "tabular-remote"  # the v2_remote model in aisf that points at it
LOCAL = "tabular-demo"  # served by aisf itself


@dataclass
class Stack:
    mlserver: MLServerProcess
    aisf: AisfProcess
    booster_json: Path


@contextmanager
def mlserver_behind_aisf(root: Path, sample_repository: Path) -> Iterator[Stack]:
    """MLServer serving tabular-demo's Booster file, and aisf serving it again through v2_remote."""
    booster_json = sample_repository / LOCAL / "1" / "model.json"
    write_xgboost_model(root / "mlserver", REMOTE, booster_json)
    repository = root / "aisf-models"
    shutil.copytree(sample_repository / LOCAL, repository / LOCAL)
    (repository / PROXY / "1").mkdir(parents=True)
    with ExitStack() as stack:
        mlserver = stack.enter_context(running_mlserver(root / "mlserver"))
        config = {
            "backend": "v2_remote",
            "parameters": {"url": mlserver.grpc_url, "remote_model": REMOTE, "timeout_s": 5},
        }
        (repository / PROXY / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        (root / "data").mkdir()
        aisf = stack.enter_context(running_aisf(repository, root / "data"))
        yield Stack(mlserver, aisf, booster_json)


@pytest.fixture(scope="module")
def stack(sample_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with mlserver_behind_aisf(tmp_path_factory.mktemp("remote"), sample_repository) as running:
        yield running


@pytest.fixture
def aisf_client(stack: Stack) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(stack.aisf.grpc_url)
    try:
        yield client
    finally:
        client.close()


def features(rows: int) -> npt.NDArray[np.float32]:
    data, _ = tabular_training_data()
    return np.ascontiguousarray(data[:rows], dtype=np.float32)


def xgboost_predicts(booster_json: Path, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    booster = xgboost.Booster()
    booster.load_model(str(booster_json))
    booster.set_param({"nthread": 1})
    return np.asarray(booster.inplace_predict(batch), dtype=np.float32).reshape(len(batch), 1)


def infer(
    client: grpcclient.InferenceServerClient, model: str, output: str, batch: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    tensor = grpcclient.InferInput("input__0", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    result = client.infer(model, [tensor], client_timeout=10)
    return np.asarray(result.as_numpy(output))


def test_remote_model_metadata_is_what_mlserver_declares(
    stack: Stack, aisf_client: grpcclient.InferenceServerClient
) -> None:
    direct = grpcclient.InferenceServerClient(stack.mlserver.grpc_url)
    try:
        declared = direct.get_model_metadata(REMOTE)
    finally:
        direct.close()
    proxied = aisf_client.get_model_metadata(PROXY)

    def tensors(items: object) -> list[tuple[str, str, list[int]]]:
        return [(t.name, t.datatype, list(t.shape)) for t in items]  # type: ignore[attr-defined]

    assert proxied.name == PROXY
    assert tensors(proxied.inputs) == tensors(declared.inputs) == [("input__0", "FP32", [-1, 4])]
    assert tensors(proxied.outputs) == tensors(declared.outputs) == [("predict", "FP32", [-1, 1])]
    assert proxied.platform == declared.platform == "xgboost"
    assert aisf_client.is_model_ready(PROXY)


@pytest.mark.parametrize("rows", [1, 32])
def test_remote_model_infers_like_xgboost_through_mlserver(
    stack: Stack, aisf_client: grpcclient.InferenceServerClient, rows: int
) -> None:
    batch = features(rows)
    expected = xgboost_predicts(stack.booster_json, batch)
    direct = grpcclient.InferenceServerClient(stack.mlserver.grpc_url)
    try:
        from_mlserver = infer(direct, REMOTE, "predict", batch)
    finally:
        direct.close()
    through_aisf = infer(aisf_client, PROXY, "predict", batch)

    assert through_aisf.dtype == np.float32 and through_aisf.shape == (rows, 1)
    np.testing.assert_array_equal(through_aisf, from_mlserver)
    np.testing.assert_allclose(through_aisf, expected, rtol=1e-6, atol=0)
    # aisf's own in-process XGBoost adapter agrees on the same Booster file.
    np.testing.assert_allclose(infer(aisf_client, LOCAL, "output__0", batch), expected, rtol=1e-6, atol=0)


def test_stopped_mlserver_makes_aisf_answer_unavailable_and_keep_serving_local_models(
    sample_repository: Path, tmp_path: Path
) -> None:
    batch = features(4)
    with mlserver_behind_aisf(tmp_path, sample_repository) as running:
        client = grpcclient.InferenceServerClient(running.aisf.grpc_url)
        try:
            assert infer(client, PROXY, "predict", batch).shape == (4, 1)
            running.mlserver.stop()

            for _ in range(2):  # the second call sees an already-broken channel, not a fresh failure
                started = time.monotonic()
                with pytest.raises(InferenceServerException) as failure:
                    infer(client, PROXY, "predict", batch)
                assert failure.value.status() == "StatusCode.UNAVAILABLE", failure.value.message()
                assert time.monotonic() - started < 5, "aisf should fail fast, not wait out the remote"

            assert not client.is_model_ready(PROXY), "readiness must follow the remote engine's health"
            assert client.is_model_ready(LOCAL)
            expected = xgboost_predicts(running.booster_json, batch)
            np.testing.assert_allclose(infer(client, LOCAL, "output__0", batch), expected, rtol=1e-6, atol=0)
            assert client.is_server_live()
        finally:
            client.close()
