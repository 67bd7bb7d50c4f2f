"""Small test-only models written on the spot: BYTES and FP16 tensors through ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import onnx
import yaml
from onnx import TensorProto, helper


def _save(repository: Path, name: str, model: onnx.ModelProto, config: dict[str, object]) -> Path:
    model_dir = repository / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(model_dir / "1" / "model.onnx"))
    (model_dir / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return model_dir


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def build_string_identity(repository: Path) -> Path:
    """BYTES [N, -1] in, the same strings out."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["echo"])],
        "string_identity",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["N", "L"])],
        [helper.make_tensor_value_info("echo", TensorProto.STRING, ["N", "L"])],
    )
    return _save(
        repository, "string-identity", _model(graph), {"backend": "onnxruntime", "max_batch_size": 16}
    )


def build_fp16_double(repository: Path) -> Path:
    """FP16 [N, 8] in, twice the value out; two outputs so output selection can be tested."""
    two = helper.make_tensor("two", TensorProto.FLOAT16, [], [2.0])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["doubled"]), helper.make_node("Identity", ["x"], ["same"])],
        "fp16_double",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 8])],
        [
            helper.make_tensor_value_info("doubled", TensorProto.FLOAT16, ["N", 8]),
            helper.make_tensor_value_info("same", TensorProto.FLOAT16, ["N", 8]),
        ],
        initializer=[two],
    )
    return _save(repository, "fp16-double", _model(graph), {"backend": "onnxruntime", "max_batch_size": 4})


def build_test_models(repository: Path) -> None:
    build_string_identity(repository)
    build_fp16_double(repository)


def build_memory_hungry(repository: Path, name: str, memory_limit_bytes: int) -> Path:
    """FP32 [N, 1024] -> [N, 1], needing 4 MiB of engine memory per row: with a memory cap it runs
    out of memory (for real, in ONNX Runtime's arena) above a batch size."""
    reps = helper.make_tensor("reps", TensorProto.INT64, [2], [1, 1024])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(
        [
            helper.make_node("Tile", ["x", "reps"], ["wide"]),
            helper.make_node("ReduceSum", ["wide", "axes"], ["y"]),
        ],
        "memory_hungry",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        initializer=[reps, axes],
    )
    config: dict[str, object] = {"backend": "onnxruntime", "max_batch_size": 64}
    if memory_limit_bytes:
        config["parameters"] = {"memory_limit_bytes": memory_limit_bytes}
    return _save(repository, name, _model(graph), config)
