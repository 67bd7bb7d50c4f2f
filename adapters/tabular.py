"""Shared shape of in-process tree engines (XGBoost, LightGBM): one FP32 matrix in, scores out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from aisf.adapters.base import Health, ModelMetadata, ModelSpec, engine_failure
from aisf.services.common.errors import AisfError, ModelLoadFailed, ModelNotReady
from aisf.services.common.tensors import InferRequest, InferResponse, Tensor, TensorSpec
from aisf.services.common.threads import BlockingPool

DEFAULT_INPUT = "input__0"
DEFAULT_OUTPUT = "output__0"


class TabularAdapter(ABC):
    """Engines whose model is one file and whose predict maps [N, features] -> [N] or [N, k]."""

    platform: str = ""
    default_model_file: str = ""

    def __init__(self) -> None:
        self._model: Any = None
        self._threads: BlockingPool | None = None
        self._name = ""
        self._input = DEFAULT_INPUT
        self._output = DEFAULT_OUTPUT

    @abstractmethod
    def _load_model(self, path: Path) -> tuple[Any, int, int]:
        """Load the file; return (model, feature count, outputs per row)."""

    @abstractmethod
    def _predict(self, model: Any, features: npt.NDArray[np.float32]) -> npt.NDArray[Any]: ...

    async def load(self, spec: ModelSpec) -> ModelMetadata:
        config = spec.config
        path = spec.path / str(config.parameters.get("model_file", self.default_model_file))
        if not path.is_file():
            raise ModelLoadFailed(f"model '{spec.name}' version {spec.version}: {path.name} not found")
        self._threads = spec.threads
        try:
            model, features, per_row = await spec.threads.run(self._load_model, path)
        except AisfError:
            raise
        except Exception as exc:
            raise ModelLoadFailed(f"model '{spec.name}': cannot load {path.name}: {exc}") from exc
        self._model, self._name = model, spec.name
        if config.inputs:
            self._input = config.inputs[0].name
        if config.outputs:
            self._output = config.outputs[0].name
        batch = (-1,)
        return ModelMetadata(
            inputs=[TensorSpec(self._input, "FP32", batch + (features,))],
            outputs=[TensorSpec(self._output, "FP32", batch + (per_row,))],
            platform=self.platform,
        )

    async def infer(self, request: InferRequest) -> InferResponse:
        model, threads = self._model, self._threads
        if model is None or threads is None:
            raise ModelNotReady(f"model '{self._name}' is not loaded")
        features = np.asarray(request.inputs[0].data, dtype=np.float32)
        try:
            scores = await threads.run(self._predict, model, features)
        except Exception as exc:
            raise engine_failure(exc, self._name) from exc
        scores = np.asarray(scores, dtype=np.float32).reshape(features.shape[0], -1)
        return InferResponse(
            model_name=request.model_name,
            model_version=request.model_version,
            outputs=[Tensor.from_numpy(self._output, scores)],
            id=request.id,
        )

    async def health(self) -> Health:
        return Health(ready=self._model is not None)

    async def unload(self) -> None:
        self._model = None
