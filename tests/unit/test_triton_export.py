"""`aisf models export-triton`: a FIL model folder whose config is a valid Triton ModelConfig."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from aisf.services.common.errors import ModelLoadFailed
from aisf.services.feature_samples import build_recsys_demo
from aisf.services.samples import build_vision_demo
from aisf.services.triton_export import triton_config_text, write_triton_model
from tests.support.processes import AISF


def test_the_recsys_ranker_exports_as_a_fil_model_triton_can_parse(tmp_path: Path) -> None:
    model = build_recsys_demo(tmp_path / "models")
    folder = write_triton_model(model, tmp_path / "triton" / "recsys-demo")
    config = text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig())
    assert config.backend == "fil" and config.max_batch_size == 1024
    assert config.parameters["model_type"].string_value == "xgboost_json"
    assert config.parameters["output_class"].string_value == "true"
    assert config.HasField("dynamic_batching")
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [("input__0", mc.TYPE_FP32, [8])]
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert (folder / "1" / "xgboost.json").read_bytes() == (model / "1" / "model.json").read_bytes()


def test_the_cli_prints_the_same_config(tmp_path: Path) -> None:
    model = build_recsys_demo(tmp_path / "models")
    printed = subprocess.run(
        [AISF, "models", "export-triton", str(model)], capture_output=True, text=True, check=True
    )
    assert printed.stdout == triton_config_text(model)


def test_a_model_fil_cannot_serve_is_refused_by_name(tmp_path: Path) -> None:
    model = build_vision_demo(tmp_path / "models")
    with pytest.raises(ModelLoadFailed, match="FIL serves tree models"):
        triton_config_text(model)
