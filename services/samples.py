"""Writes the sample model repository, built on the spot (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import xgboost
import yaml
from onnx import TensorProto, helper, numpy_helper

from aisf.services.feature_samples import build_feature_repo, build_recsys_demo
from aisf.services.llm_samples import build_llm_demo

TABULAR_FEATURES = 4
VISION_CLASSES = 10


def _write_config(model_dir: Path, config: dict[str, object]) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


Matrix = npt.NDArray[np.float32]


def tabular_training_data(rows: int = 512, seed: int = 7) -> tuple[Matrix, Matrix]:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(rows, TABULAR_FEATURES)).astype(np.float32)
    labels = (features[:, 0] + 0.5 * features[:, 1] - features[:, 2] > 0).astype(np.float32)
    return features, labels


def build_tabular_demo(repository: Path) -> Path:
    """A tiny XGBoost binary classifier: FP32 [N, 4] -> probability [N, 1]."""
    features, labels = tabular_training_data()
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "nthread": 1, "seed": 7},
        xgboost.DMatrix(features, label=labels),
        num_boost_round=10,
    )
    model_dir = repository / "tabular-demo"
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    booster.save_model(str(model_dir / "1" / "model.json"))
    _write_config(
        model_dir,
        {
            "backend": "xgboost",
            "max_batch_size": 64,
            "inputs": [{"name": "input__0", "datatype": "FP32", "dims": [TABULAR_FEATURES]}],
            "outputs": [{"name": "output__0", "datatype": "FP32", "dims": [1]}],
            "dynamic_batching": {"max_queue_delay_microseconds": 0, "preferred_batch_size": [32, 64]},
            "instance_count": 1,
        },
    )
    return model_dir


def vision_onnx_model(seed: int = 11) -> onnx.ModelProto:
    """A tiny CNN: FP32 [N, 3, 64, 64] -> softmax probabilities [N, 10]."""
    rng = np.random.default_rng(seed)
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.2, (8, 3, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(np.zeros(8, dtype=np.float32), "conv_b"),
        numpy_helper.from_array(rng.normal(0, 0.5, (8, VISION_CLASSES)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(np.zeros(VISION_CLASSES, dtype=np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["conv"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "vision_demo",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 64, 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", VISION_CLASSES])],
        initializer=weights,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="aisf-samples"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def build_vision_demo(repository: Path) -> Path:
    model_dir = repository / "vision-demo"
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    onnx.save(vision_onnx_model(), str(model_dir / "1" / "model.onnx"))
    _write_config(
        model_dir,
        {
            "backend": "onnxruntime",
            "max_batch_size": 8,
            "dynamic_batching": {"max_queue_delay_microseconds": 2000, "preferred_batch_size": [4, 8]},
            "instance_count": 1,
        },
    )
    return model_dir


VISION_LABELS = [f"class-{i}" for i in range(VISION_CLASSES)]
_TOP_K = """\
\"\"\"The vision pipeline's postprocess: the k most likely labels and their scores, per image.\"\"\"

import numpy as np

LABELS = np.array({labels!r}, dtype=object)


def top_k(inputs, parameters):
    probabilities = inputs["probabilities"]
    k = int(parameters.get("k", 3))
    best = np.argsort(-probabilities, axis=1)[:, :k]
    labels = np.array([[LABELS[i].encode() for i in row] for row in best], dtype=object)
    return {{"labels": labels, "scores": np.take_along_axis(probabilities, best, axis=1)}}
"""


def build_vision_pipeline(repository: Path) -> list[Path]:
    """Encoded JPEG/PNG bytes -> decode, resize, normalize (vision-preprocess) -> vision-demo -> top-3
    labels and scores: a DAG pipeline served like any model."""
    preprocess = repository / "vision-preprocess"
    (preprocess / "1").mkdir(parents=True, exist_ok=True)
    _write_config(
        preprocess,
        {
            "backend": "image_preprocess",
            "max_batch_size": 8,  # as vision-demo's, the next step: a request too big fails at the first step
            "dynamic_batching": {"max_queue_delay_microseconds": 500, "preferred_batch_size": [4, 8]},
            "instance_count": 2,
            "parameters": {"height": 64, "width": 64, "mean": "123.7,116.3,103.5", "std": "58.4,57.1,57.4"},
        },
    )
    pipeline = repository / "vision-pipeline"
    (pipeline / "1").mkdir(parents=True, exist_ok=True)
    (pipeline / "1" / "postprocess.py").write_text(_TOP_K.format(labels=VISION_LABELS), encoding="utf-8")
    _write_config(
        pipeline,
        {
            "backend": "pipeline",
            "pipeline": {
                "inputs": ["IMAGE"],
                "steps": [
                    {"name": "preprocess", "model": "vision-preprocess", "inputs": {"IMAGE": "IMAGE"}},
                    {"name": "classify", "model": "vision-demo", "inputs": {"input": "preprocess.PIXELS"}},
                    {
                        "name": "top-k",
                        "function": "postprocess.py:top_k",
                        "inputs": {"probabilities": "classify.probabilities"},
                        "outputs": [
                            {"name": "labels", "datatype": "BYTES", "dims": [-1, 3]},
                            {"name": "scores", "datatype": "FP32", "dims": [-1, 3]},
                        ],
                        "parameters": {"k": 3},
                    },
                ],
                "outputs": {"labels": "top-k.labels", "scores": "top-k.scores"},
            },
        },
    )
    return [preprocess, pipeline]


def build_samples(repository: Path, feature_repo: Path | None = None) -> list[Path]:
    """The sample models; with `feature_repo`, also the sample Feast repository and recsys-demo (served
    with its feature join)."""
    repository.mkdir(parents=True, exist_ok=True)
    built = [
        build_tabular_demo(repository),
        build_vision_demo(repository),
        *build_vision_pipeline(repository),
        *build_llm_demo(repository),
    ]
    if feature_repo is not None:
        built += [build_feature_repo(feature_repo), build_recsys_demo(repository)]
    return built
