"""`aisf models export-triton`: a Triton model folder serving a tree model of the repository on the GPU with
RAPIDS FIL (Triton's `fil` backend), its config built as Triton's own ModelConfig message."""

from __future__ import annotations

import shutil
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from aisf.services.common.errors import ModelLoadFailed
from aisf.services.common.model_config import ModelConfig, load_model_config

_MODEL_TYPES = {
    "xgboost": ("xgboost_json", "model.json", "xgboost.json"),
    "lightgbm": ("lightgbm", "model.txt", "model.txt"),
}
_DATA_TYPES = {"FP32": mc.TYPE_FP32, "FP64": mc.TYPE_FP64, "INT64": mc.TYPE_INT64, "INT32": mc.TYPE_INT32}


def triton_config(config: ModelConfig) -> mc.ModelConfig:
    if config.backend not in _MODEL_TYPES:
        raise ModelLoadFailed(
            f"model '{config.name}': FIL serves tree models (xgboost, lightgbm), not {config.backend}"
        )
    if len(config.inputs) != 1 or not config.max_batch_size:
        raise ModelLoadFailed(f"model '{config.name}': FIL needs one declared input and max_batch_size > 0")
    model_type = _MODEL_TYPES[config.backend][0]
    features = config.inputs[0]
    out = mc.ModelConfig(name=config.name, backend="fil", max_batch_size=config.max_batch_size)
    out.input.add(name=features.name, data_type=_DATA_TYPES[features.datatype], dims=features.dims)
    # Classifier probabilities of both classes (FIL's predict_proba), one row per input row.
    out.output.add(
        name=config.outputs[0].name if config.outputs else "output__0", data_type=mc.TYPE_FP32, dims=[2]
    )
    out.instance_group.add(kind=mc.ModelInstanceGroup.KIND_GPU, count=config.instance_count)
    out.dynamic_batching.max_queue_delay_microseconds = 100
    for key, value in (
        ("model_type", model_type),
        ("output_class", "true"),
        ("predict_proba", "true"),
        ("threshold", "0.5"),
        ("storage_type", "AUTO"),
    ):
        out.parameters[key].string_value = value
    return out


def triton_config_text(model_dir: Path) -> str:
    return text_format.MessageToString(triton_config(load_model_config(model_dir)))


def write_triton_model(model_dir: Path, output: Path) -> Path:
    """output/config.pbtxt and output/<version>/<FIL's file name> for each version of the model."""
    config = load_model_config(model_dir)
    text = text_format.MessageToString(triton_config(config))
    _, ours, theirs = _MODEL_TYPES[config.backend]
    output.mkdir(parents=True, exist_ok=True)
    (output / "config.pbtxt").write_text(text, encoding="utf-8")
    for version in sorted(p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()):
        (output / version.name).mkdir(exist_ok=True)
        shutil.copyfile(version / ours, output / version.name / theirs)
    return output
