"""Pipelines served as models: the sample vision pipeline end to end, DAG checks at load time, branches that
run at once, conditions, and a bad image that fails only its own request."""

from __future__ import annotations

import asyncio
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from aisf.services.common.errors import InvalidInput, ModelLoadFailed
from aisf.services.common.tensors import InferRequest, Tensor
from aisf.services.router.repository import ModelState
from aisf.services.samples import build_vision_demo, build_vision_pipeline
from tests.support.dataplanes import Router, routing


def _jpeg(seed: int, size: tuple[int, int] = (120, 160)) -> bytes:
    image = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    return bytes(cv2.imencode(".jpg", image)[1].tobytes())


def _png(seed: int) -> bytes:
    image = np.random.default_rng(seed).integers(0, 255, (90, 70, 3), dtype=np.uint8)
    return bytes(cv2.imencode(".png", image)[1].tobytes())


def _images(model: str, *images: bytes) -> InferRequest:
    data = np.array([[b] for b in images], dtype=object)
    return InferRequest(model, "", [Tensor("IMAGE", "BYTES", data.shape, data)])


@pytest.fixture
def vision_models(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    build_vision_demo(root)
    build_vision_pipeline(root)
    return root


def _score(router: Router, name: str) -> float:
    value = router.registry.get_sample_value(
        "aisf_pipeline_steps_total", {"model": "vision-pipeline", **_step(name)}
    )
    return value or 0.0


def _step(name: str) -> dict[str, str]:
    return {"step": name, "outcome": "success"}


async def test_the_vision_pipeline_answers_what_its_steps_answer_back_to_back(vision_models: Path) -> None:
    images = (_jpeg(1), _png(2), _jpeg(3, (480, 640)))
    async with routing(vision_models) as router:
        answer = await router.dataplane.infer(_images("vision-pipeline", *images))
        pixels = await router.dataplane.infer(_images("vision-preprocess", *images))
        probabilities = await router.dataplane.infer(
            InferRequest(
                "vision-demo", "", [Tensor("input", "FP32", pixels.outputs[0].shape, pixels.outputs[0].data)]
            )
        )
        model = router.dataplane.model("vision-pipeline")
        assert model.platform == "ensemble"
        assert [(t.name, t.datatype, t.shape) for t in model.inputs] == [("IMAGE", "BYTES", (-1, 1))]
        assert [(t.name, t.datatype, t.shape) for t in model.outputs] == [
            ("labels", "BYTES", (-1, 3)),
            ("scores", "FP32", (-1, 3)),
        ]
        assert _score(router, "preprocess") == _score(router, "top-k") == 1.0
        assert (
            router.dataplane.statistics("vision-demo")[0].inference_count == 6
        )  # 3 via the pipeline, 3 direct
        decoder = router.dataplane.model("vision-preprocess").details["decoder_chosen"]
    expected = probabilities.outputs[0].data
    best = np.argsort(-expected, axis=1)[:, :3]
    outputs = {t.name: t.data for t in answer.outputs}
    np.testing.assert_allclose(outputs["scores"], np.take_along_axis(expected, best, axis=1), rtol=1e-6)
    assert outputs["labels"][0][0] == f"class-{best[0][0]}".encode()
    assert outputs["labels"].shape == (3, 3)
    assert decoder == "opencv (cpu)"  # no GPU here: OpenCV is the faster CPU path


async def test_a_bad_image_fails_only_its_own_request_naming_its_batch_index(vision_models: Path) -> None:
    corrupt = _jpeg(5)[:300] + b"\x00" * 200  # a real JPEG header, then garbage
    async with routing(vision_models) as router:
        good, bad = await asyncio.gather(
            router.dataplane.infer(_images("vision-pipeline", _jpeg(6), _jpeg(7))),
            router.dataplane.infer(_images("vision-pipeline", _jpeg(8), corrupt)),
            return_exceptions=True,
        )
    assert not isinstance(good, BaseException)
    assert good.outputs[0].shape == (2, 3)
    assert isinstance(bad, InvalidInput)
    assert "step 'preprocess'" in bad.message and "input 'IMAGE': batch index 1: " in bad.message


@pytest.mark.parametrize(
    ("image", "why"),
    [
        (b"GIF89a" + b"\x00" * 40, "not a JPEG or PNG image"),
        (b"", "empty image"),
        (
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x00\x00\x00\x00\x10" + b"\x00" * 20,
            "zero-size PNG",
        ),
        # A 100,000 x 100,000 PNG (40 GB decoded) is refused from its header, before anything decodes it.
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x01\x86\xa0\x00\x01\x86\xa0" + b"\x00" * 20, "max_pixels"),
    ],
)
async def test_unusable_images_are_invalid_input_naming_the_index(
    vision_models: Path, image: bytes, why: str
) -> None:
    async with routing(vision_models) as router:
        with pytest.raises(InvalidInput, match=f"batch index 2: .*{why}"):
            await router.dataplane.infer(_images("vision-pipeline", _jpeg(1), _jpeg(2), image))


def _python_model(root: Path, name: str, datatype: str, dims: list[int], source: str) -> None:
    folder = root / name
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.py").write_text(source)
    tensor = {"datatype": datatype, "dims": dims}
    (folder / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "backend": "python",
                "max_batch_size": 8,
                "inputs": [{"name": "x", **tensor}],
                "outputs": [{"name": "y", **tensor}],
            }
        )
    )


_DOUBLE = "class Model:\n    def infer(self, inputs, parameters):\n        return {'y': inputs['x'] * 2}\n"
_SAME = "class Model:\n    def infer(self, inputs, parameters):\n        return {'y': inputs['x']}\n"


def _pipeline(root: Path, name: str, pipeline: dict[str, object], code: str = "", instances: int = 1) -> None:
    folder = root / name
    (folder / "1").mkdir(parents=True)
    if code:
        (folder / "1" / "steps.py").write_text(code)
    config = {"backend": "pipeline", "instance_count": instances, "pipeline": pipeline}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture
def tensor_models(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    _python_model(root, "double", "FP32", [4], _DOUBLE)
    _python_model(root, "same", "FP32", [4], _SAME)
    _python_model(root, "wide", "FP32", [5], _DOUBLE)
    _python_model(root, "int-in", "INT64", [4], _DOUBLE)
    return root


def _chain(second: str, wire: str = "first.y") -> dict[str, object]:
    return {
        "inputs": ["x"],
        "steps": [
            {"name": "first", "model": "double", "inputs": {"x": "x"}},
            {"name": "second", "model": second, "inputs": {"x": wire}},
        ],
        "outputs": {"y": "second.y"},
    }


@pytest.mark.parametrize(
    ("pipeline", "message"),
    [
        (_chain("nowhere"), "step 'second' calls model 'nowhere': unknown model 'nowhere'"),
        (
            _chain("double", "first.z"),
            "step 'second' input 'x': step 'first' has no output 'z'; it has \\['y'\\]",
        ),
        (_chain("double", "third.y"), "step 'second' input 'x': 'third.y' names no step 'third'"),
        (_chain("double", "loose"), "'loose' is neither a pipeline input"),
        (
            _chain("int-in"),
            "step 'second' input 'x' takes INT64 \\[-1, 4\\] but 'first.y' is FP32 \\[-1, 4\\]",
        ),
        (_chain("wide"), "step 'second' input 'x' takes FP32 \\[-1, 5\\] but 'first.y' is FP32 \\[-1, 4\\]"),
        (
            {
                "inputs": ["x"],
                "steps": [
                    {"name": "a", "model": "double", "inputs": {"x": "b.y"}},
                    {"name": "b", "model": "double", "inputs": {"x": "a.y"}},
                ],
                "outputs": {"y": "b.y"},
            },
            "steps form a cycle: a -> b -> a",
        ),
        (
            {
                "inputs": ["x", "unused"],
                "steps": [{"name": "a", "model": "double", "inputs": {"x": "x"}}],
                "outputs": {"y": "a.y"},
            },
            "pipeline input\\(s\\) \\['unused'\\] feed no step",
        ),
        (
            {
                "inputs": ["x"],
                "steps": [{"name": "a", "model": "double", "inputs": {"w": "x"}}],
                "outputs": {"y": "a.y"},
            },
            "step 'a' input 'w' is not an input of model 'double'",
        ),
    ],
)
async def test_a_malformed_pipeline_is_refused_at_load_naming_the_step_and_tensor(
    tensor_models: Path, pipeline: dict[str, object], message: str
) -> None:
    _pipeline(tensor_models, "flow", pipeline)
    async with routing(tensor_models) as router:
        entry = next(e for e in router.repository.index() if e.name == "flow")
        assert entry.state == ModelState.UNAVAILABLE
        with pytest.raises(ModelLoadFailed, match=message):
            await router.repository.load("flow")


_BRANCHES = """
import threading
import numpy as np

# Both branches wait here for each other: run one after the other, the first would time out.
meeting = threading.Barrier(2, timeout=5)


def left(inputs, parameters):
    meeting.wait()
    return {"out": inputs["y"] + 1}


def right(inputs, parameters):
    meeting.wait()
    return {"out": inputs["y"] - 1}


def join(inputs, parameters):
    return {"sum": inputs["a"] + inputs["b"]}


def is_big(inputs, parameters):
    return {"big": np.array([bool(inputs["y"].sum() > 100)])}
"""

_FOUR = [{"name": "out", "datatype": "FP32", "dims": [-1, 4]}]


async def test_independent_branches_run_at_the_same_time_and_fan_in(tensor_models: Path) -> None:
    _pipeline(
        tensor_models,
        "diamond",
        {
            "inputs": ["x"],
            "steps": [
                {"name": "first", "model": "double", "inputs": {"x": "x"}},
                {"name": "left", "function": "steps.py:left", "inputs": {"y": "first.y"}, "outputs": _FOUR},
                {"name": "right", "function": "steps.py:right", "inputs": {"y": "first.y"}, "outputs": _FOUR},
                {
                    "name": "join",
                    "function": "steps.py:join",
                    "inputs": {"a": "left.out", "b": "right.out"},
                    "outputs": [{"name": "sum", "datatype": "FP32", "dims": [-1, 4]}],
                },
            ],
            "outputs": {"sum": "join.sum"},
        },
        _BRANCHES,
        instances=2,
    )
    async with routing(tensor_models) as router:
        rows = np.arange(8, dtype=np.float32).reshape(2, 4)
        answer = await router.dataplane.infer(InferRequest("diamond", "", [Tensor.from_numpy("x", rows)]))
    np.testing.assert_array_equal(answer.outputs[0].data, rows * 4)


async def test_a_condition_picks_the_branch_and_the_output_takes_the_one_produced(
    tensor_models: Path,
) -> None:
    _pipeline(
        tensor_models,
        "choose",
        {
            "inputs": ["x"],
            "steps": [
                {
                    "name": "gate",
                    "function": "steps.py:is_big",
                    "inputs": {"y": "x"},
                    "function_inputs": [{"name": "y", "datatype": "FP32", "dims": [-1, 4]}],
                    "outputs": [{"name": "big", "datatype": "BOOL", "dims": [1]}],
                },
                {"name": "big", "model": "double", "inputs": {"x": "x"}, "when": "gate.big"},
                {"name": "small", "model": "same", "inputs": {"x": "x"}, "unless": "gate.big"},
            ],
            "outputs": {"y": ["big.y", "small.y"]},
        },
        _BRANCHES,
    )
    async with routing(tensor_models) as router:
        small = np.ones((1, 4), dtype=np.float32)
        big = np.full((1, 4), 50, dtype=np.float32)
        answers = [
            await router.dataplane.infer(InferRequest("choose", "", [Tensor.from_numpy("x", x)]))
            for x in (small, big)
        ]
        skipped = router.registry.get_sample_value(
            "aisf_pipeline_steps_total", {"model": "choose", "step": "big", "outcome": "skipped"}
        )
    np.testing.assert_array_equal(answers[0].outputs[0].data, small)
    np.testing.assert_array_equal(answers[1].outputs[0].data, big * 2)
    assert skipped == 1.0


async def test_a_failing_step_names_itself_and_the_pipeline(tensor_models: Path) -> None:
    _pipeline(tensor_models, "chain", _chain("double"))
    async with routing(tensor_models) as router:
        bad = InferRequest("chain", "", [Tensor.from_numpy("x", np.ones((9, 4), dtype=np.float32))])
        with pytest.raises(
            InvalidInput, match="pipeline 'chain' step 'first': model 'double': .*batch size 9"
        ):
            await router.dataplane.infer(bad)


async def test_tensorrt_fp16_without_tensorrt_runs_on_the_cpu_and_says_so(vision_models: Path) -> None:
    config_path = vision_models / "vision-demo" / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["parameters"] = {"tensorrt_fp16": True}
    config_path.write_text(yaml.safe_dump(config))
    async with routing(vision_models) as router:
        details = router.dataplane.model("vision-demo").details
    assert details["execution_provider"] == "CPUExecutionProvider"
    assert details["tensorrt"] == (
        "fp16 requested, TensorrtExecutionProvider not available here: running on CPUExecutionProvider (FP32)"
    )
