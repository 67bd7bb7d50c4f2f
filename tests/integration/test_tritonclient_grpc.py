"""tritonclient.grpc, unchanged, works against aisf as it does against Triton."""

from __future__ import annotations

import queue
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio
import xgboost
from tritonclient.utils import InferenceServerException

from tests.support.processes import AisfProcess, running_aisf

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(aisf_server: AisfProcess) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(aisf_server.grpc_url) as triton:
        yield triton


def _input(name: str, array: np.ndarray, datatype: str) -> grpcclient.InferInput:  # type: ignore[type-arg]
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def test_server_health_and_metadata(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata(as_json=True)
    assert metadata["name"] == "aisf"
    assert "model_repository" in metadata["extensions"]


def test_model_metadata_and_config_describe_tabular_demo(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_model_ready("tabular-demo")
    assert client.is_model_ready("tabular-demo", "1")
    assert not client.is_model_ready("tabular-demo", "7")
    assert not client.is_model_ready("no-such-model")
    metadata = client.get_model_metadata("tabular-demo", as_json=True)
    assert metadata["inputs"] == [{"name": "input__0", "datatype": "FP32", "shape": ["-1", "4"]}]
    assert metadata["versions"] == ["1"]
    config = client.get_model_config("tabular-demo", as_json=True)["config"]
    assert config["max_batch_size"] == 64
    assert config["input"][0]["dims"] == ["4"]
    assert config["backend"] == "xgboost"
    assert "dynamic_batching" in config


def test_infer_matches_xgboost_and_reports_statistics(
    client: grpcclient.InferenceServerClient, sample_repository: Path
) -> None:
    features = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    before = client.get_inference_statistics("tabular-demo", as_json=True)["model_stats"][0]
    result = client.infer(
        "tabular-demo",
        [_input("input__0", features, "FP32")],
        outputs=[grpcclient.InferRequestedOutput("output__0")],
        request_id="req-7",
    )
    booster = xgboost.Booster(model_file=str(sample_repository / "tabular-demo" / "1" / "model.json"))
    np.testing.assert_allclose(
        result.as_numpy("output__0")[:, 0], booster.inplace_predict(features), rtol=1e-6
    )
    assert result.get_response().id == "req-7"
    after = client.get_inference_statistics("tabular-demo", as_json=True)["model_stats"][0]
    assert int(after["inference_count"]) == int(before.get("inference_count", 0)) + 5
    assert (
        int(after["inference_stats"]["success"]["count"])
        == int(before["inference_stats"]["success"].get("count", 0)) + 1
    )
    assert int(after["inference_stats"]["compute_infer"]["ns"]) > 0
    assert any(b["batch_size"] == "5" for b in after["batch_stats"])


def test_bytes_tensors_round_trip(client: grpcclient.InferenceServerClient) -> None:
    text = np.array([["héllo".encode(), b"\x00bin"], [b"", b"world"]], dtype=np.object_)
    result = client.infer("string-identity", [_input("text", text, "BYTES")])
    assert result.as_numpy("echo").tolist() == text.tolist()


def test_fp16_tensors_and_requested_output_filtering(client: grpcclient.InferenceServerClient) -> None:
    values = np.arange(16, dtype=np.float16).reshape(2, 8) / 4
    result = client.infer(
        "fp16-double", [_input("x", values, "FP16")], outputs=[grpcclient.InferRequestedOutput("doubled")]
    )
    assert [o.name for o in result.get_response().outputs] == ["doubled"]
    np.testing.assert_array_equal(result.as_numpy("doubled"), values * 2)


def test_async_stream_infer_answers_every_request(client: grpcclient.InferenceServerClient) -> None:
    answers: queue.Queue[tuple[object, object]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for i in range(6):
            features = np.full((1, 4), i, dtype=np.float32)
            client.async_stream_infer(
                "tabular-demo", [_input("input__0", features, "FP32")], request_id=str(i)
            )
        client.async_stream_infer("no-such-model", [_input("input__0", np.zeros((1, 4), np.float32), "FP32")])
        received = [answers.get(timeout=10) for _ in range(7)]
    finally:
        client.stop_stream()
    ids = sorted(r.get_response().id for r, e in received if e is None)  # type: ignore[attr-defined]
    assert ids == [str(i) for i in range(6)]
    errors = [e for _, e in received if e is not None]
    assert len(errors) == 1 and "unknown model 'no-such-model'" in str(errors[0])


def test_repository_index_lists_every_model(client: grpcclient.InferenceServerClient) -> None:
    index = client.get_model_repository_index(as_json=True)["models"]
    assert {m["name"] for m in index} >= {"tabular-demo", "vision-demo", "string-identity", "fp16-double"}
    assert all(m["state"] == "READY" for m in index)


def test_unload_and_load_model_at_run_time(sample_repository: Path, tmp_path: Path) -> None:
    repository = tmp_path / "models"
    shutil.copytree(sample_repository / "tabular-demo", repository / "tabular-demo")
    with running_aisf(repository, tmp_path / "data") as server:
        with grpcclient.InferenceServerClient(server.grpc_url) as triton:
            triton.unload_model("tabular-demo")
            assert not triton.is_model_ready("tabular-demo")
            with pytest.raises(InferenceServerException, match="not ready"):
                triton.infer("tabular-demo", [_input("input__0", np.zeros((1, 4), np.float32), "FP32")])
            triton.load_model("tabular-demo")
            assert triton.is_model_ready("tabular-demo")
            index = triton.get_model_repository_index(as_json=True)["models"]
            assert index == [{"name": "tabular-demo", "version": "1", "state": "READY"}]
            with pytest.raises(InferenceServerException, match="unknown model 'ghost'"):
                triton.load_model("ghost")


def test_unimplemented_rpcs_answer_unimplemented_with_a_message(
    client: grpcclient.InferenceServerClient,
) -> None:
    with pytest.raises(InferenceServerException) as raised:
        client.get_cuda_shared_memory_status()
    assert raised.value.status() == "StatusCode.UNIMPLEMENTED"
    assert "CUDA shared memory is not supported" in str(raised.value.message())


async def test_asyncio_client_infers_concurrently(aisf_server: AisfProcess) -> None:
    import asyncio

    async with grpcclient_aio.InferenceServerClient(aisf_server.grpc_url) as triton:
        rows = [np.full((1, 4), i / 10, dtype=np.float32) for i in range(32)]
        inputs = []
        for row in rows:
            tensor = grpcclient_aio.InferInput("input__0", [1, 4], "FP32")
            tensor.set_data_from_numpy(row)
            inputs.append(tensor)
        results = await asyncio.gather(*(triton.infer("tabular-demo", [t]) for t in inputs))
    assert all(r.as_numpy("output__0").shape == (1, 1) for r in results)


def test_the_vision_pipeline_takes_encoded_images_and_names_a_bad_one(
    client: grpcclient.InferenceServerClient,
) -> None:
    rng = np.random.default_rng(4)
    jpegs = [
        cv2.imencode(".jpg", rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))[1].tobytes() for _ in range(2)
    ]
    images = np.array([[j] for j in jpegs], dtype=np.object_)
    result = client.infer("vision-pipeline", [_input("IMAGE", images, "BYTES")])
    labels = result.as_numpy("labels")
    assert labels.shape == (2, 3) and labels[0][0].startswith(b"class-")
    assert result.as_numpy("scores").shape == (2, 3)
    config = client.get_model_config("vision-preprocess", as_json=True)["config"]
    assert config["parameters"]["decoder_chosen"]["string_value"] == "opencv (cpu)"
    assert client.get_model_metadata("vision-pipeline", as_json=True)["platform"] == "ensemble"
    bad = np.array([[jpegs[0]], [b"not an image"]], dtype=np.object_)
    with pytest.raises(InferenceServerException, match="INVALID_ARGUMENT.*batch index 1: not a JPEG or PNG"):
        client.infer("vision-pipeline", [_input("IMAGE", bad, "BYTES")])
