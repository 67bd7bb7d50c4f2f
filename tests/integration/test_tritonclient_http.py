"""tritonclient.http, unchanged, works against the aisf REST edge (JSON and binary tensors)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
import xgboost
from tritonclient.utils import InferenceServerException

from tests.support.processes import AisfProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(aisf_server: AisfProcess) -> Iterator[httpclient.InferenceServerClient]:
    triton = httpclient.InferenceServerClient(aisf_server.http_url)
    yield triton
    triton.close()


def _input(name: str, array: np.ndarray, datatype: str, binary: bool) -> httpclient.InferInput:  # type: ignore[type-arg]
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def test_server_and_model_endpoints(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.get_server_metadata()["name"] == "aisf"
    assert client.is_model_ready("tabular-demo")
    assert not client.is_model_ready("no-such-model")
    # Numbers, as the V2 REST spec and Triton send them (the landed main sent strings: "-1", "3", ...).
    assert client.get_model_metadata("vision-demo")["inputs"][0]["shape"] == [-1, 3, 64, 64]
    config = client.get_model_config("vision-demo")
    assert config["max_batch_size"] == 8 and config["input"][0]["dims"] == [3, 64, 64]
    names = {m["name"] for m in client.get_model_repository_index()}
    assert {"tabular-demo", "vision-demo"} <= names


@pytest.mark.parametrize(
    ("binary_in", "binary_out"), [(True, True), (False, False), (True, False), (False, True)]
)
def test_infer_with_json_and_binary_tensors_matches_xgboost(
    client: httpclient.InferenceServerClient, sample_repository: Path, binary_in: bool, binary_out: bool
) -> None:
    features = np.random.default_rng(2).normal(size=(3, 4)).astype(np.float32)
    result = client.infer(
        "tabular-demo",
        [_input("input__0", features, "FP32", binary_in)],
        outputs=[httpclient.InferRequestedOutput("output__0", binary_data=binary_out)],
    )
    booster = xgboost.Booster(model_file=str(sample_repository / "tabular-demo" / "1" / "model.json"))
    np.testing.assert_allclose(
        result.as_numpy("output__0")[:, 0], booster.inplace_predict(features), rtol=1e-6
    )


def test_vision_model_infers_a_batch(client: httpclient.InferenceServerClient) -> None:
    images = np.random.default_rng(3).random((2, 3, 64, 64), dtype=np.float32)
    probabilities = client.infer("vision-demo", [_input("input", images, "FP32", True)]).as_numpy(
        "probabilities"
    )
    assert probabilities.shape == (2, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("binary", [True, False])
def test_bytes_and_fp16_tensors(client: httpclient.InferenceServerClient, binary: bool) -> None:
    text = np.array([[b"alpha", "βeta".encode()]], dtype=np.object_)
    echoed = client.infer("string-identity", [_input("text", text, "BYTES", binary)]).as_numpy("echo")
    assert echoed.tolist() == text.tolist()
    values = np.linspace(-4, 4, 8, dtype=np.float16).reshape(1, 8)
    result = client.infer(
        "fp16-double",
        [_input("x", values, "FP16", binary)],
        outputs=[httpclient.InferRequestedOutput("same", binary_data=binary)],
    )
    np.testing.assert_array_equal(result.as_numpy("same"), values)
    assert result.as_numpy("doubled") is None


def test_statistics_count_rest_requests(client: httpclient.InferenceServerClient) -> None:
    before = client.get_inference_statistics("fp16-double")["model_stats"][0]
    client.infer("fp16-double", [_input("x", np.ones((3, 8), np.float16), "FP16", True)])
    after = client.get_inference_statistics("fp16-double")["model_stats"][0]
    assert int(after["inference_count"]) == int(before.get("inference_count", 0)) + 3
    everything = client.get_inference_statistics()["model_stats"]
    assert {s["name"] for s in everything} >= {"tabular-demo", "fp16-double"}


def test_unknown_model_is_an_error_not_a_crash(client: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.infer("nope", [_input("x", np.zeros((1, 4), np.float32), "FP32", True)])
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.get_model_metadata("nope")
