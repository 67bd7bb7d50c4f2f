"""The python backend: a model's own bugs are engine failures (never the caller's), its source must lie in
its version folder, and its module goes when it unloads."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from aisf.services.common.errors import InternalError, ModelLoadFailed
from tests.support.dataplanes import routing, rows
from tests.support.python_models import write_python_model

SPECS = {
    "max_batch_size": 8,
    "inputs": [{"name": "x", "datatype": "FP32", "dims": [2]}],
    "outputs": [{"name": "y", "datatype": "FP32", "dims": [2]}],
}

COMPLEX_OUT = """
import numpy as np


class Model:
    def infer(self, inputs, parameters):
        return {"y": inputs["x"].astype(np.complex128)}
"""


async def test_an_output_without_a_v2_datatype_is_the_models_failure_not_the_callers(tmp_path: Path) -> None:
    write_python_model(tmp_path / "models", "complex", COMPLEX_OUT, SPECS)
    async with routing(tmp_path / "models") as router:
        with pytest.raises(InternalError, match="output 'y'.*complex128") as failed:
            await router.dataplane.infer(rows("complex", [[1, 2]]))
    assert failed.value.http_status == 500


async def test_a_module_outside_the_version_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.py").write_text(COMPLEX_OUT)
    write_python_model(
        tmp_path / "models",
        "escapes",
        COMPLEX_OUT,
        {**SPECS, "parameters": {"module": "../../../elsewhere.py"}},
    )
    async with routing(tmp_path / "models") as router:
        with pytest.raises(ModelLoadFailed, match="must lie in the version folder"):
            await router.repository.load("escapes")


async def test_an_unloaded_models_module_leaves_the_interpreter(tmp_path: Path) -> None:
    write_python_model(tmp_path / "models", "complex", COMPLEX_OUT, SPECS)
    async with routing(tmp_path / "models") as router:
        module = type(router.adapter_model("complex")).__module__
        assert module in sys.modules
        await router.repository.unload("complex")
        assert module not in sys.modules
