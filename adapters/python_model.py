"""A model written in Python (as Triton's Python backend): `model.py` in the version folder defines a class
whose `infer` maps named numpy arrays to named numpy arrays; aisf serves it like any engine.

    class Model:
        def load(self, config: dict) -> None: ...            # optional; config.yaml's parameters
        def infer(self, inputs: dict[str, np.ndarray], parameters: dict) -> dict[str, np.ndarray]: ...
        def unload(self) -> None: ...                         # optional

`infer` may be a coroutine (it then runs on the event loop and must not block); a plain function runs on
the model's own threads (instance_count of them). Raise aisf's typed errors (aisf.services.common.errors)
for the caller's mistakes; any other exception is an engine failure.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np

from aisf.adapters.base import Health, ModelMetadata, ModelSpec, engine_failure
from aisf.adapters.user_modules import forget, import_user_module
from aisf.services.common.errors import AisfError, InternalError, ModelLoadFailed, ModelNotReady
from aisf.services.common.tensors import InferRequest, InferResponse, Tensor, datatype_of
from aisf.services.common.threads import BlockingPool


class PythonModelAdapter:
    """Parameters: `module` (model.py, relative to the version folder), `class` (Model); the others
    reach the model's `load`. config.yaml must declare the inputs and outputs."""

    def __init__(self) -> None:
        self._model: Any = None
        self._name = ""
        self._threads: BlockingPool | None = None
        self._outputs: dict[str, str] = {}
        self._module = ""

    async def load(self, spec: ModelSpec) -> ModelMetadata:
        config = spec.config
        if not config.inputs or not config.outputs:
            raise ModelLoadFailed(
                f"model '{spec.name}': backend python needs inputs and outputs in config.yaml"
            )
        params = dict(config.parameters)
        path = (spec.path / str(params.pop("module", "model.py"))).resolve()
        class_name = str(params.pop("class", "Model"))
        if not path.is_relative_to(spec.path.resolve()):
            raise ModelLoadFailed(f"model '{spec.name}': parameters.module must lie in the version folder")
        if not path.is_file():
            raise ModelLoadFailed(f"model '{spec.name}' version {spec.version}: {path.name} not found")
        self._name, self._threads = spec.name, spec.threads
        try:
            model = await spec.threads.run(self._build, path, class_name, params)
        except AisfError:
            raise
        except Exception as exc:
            raise ModelLoadFailed(f"model '{spec.name}': {path.name}: {type(exc).__name__}: {exc}") from exc
        self._model = model
        self._outputs = {t.name: t.datatype for t in config.outputs}
        specs = config.tensor_specs
        return ModelMetadata(specs(config.inputs), specs(config.outputs), platform="python")

    def _build(self, path: Path, class_name: str, params: dict[str, Any]) -> Any:
        self._module, module = import_user_module(path, "python_model", self._name)
        model_class = getattr(module, class_name, None)
        if model_class is None:
            raise ModelLoadFailed(f"model '{self._name}': {path.name} defines no class {class_name}")
        model = model_class()
        if callable(getattr(model, "load", None)):
            model.load(params)
        return model

    async def infer(self, request: InferRequest) -> InferResponse:
        model, threads = self._model, self._threads
        if model is None or threads is None:
            raise ModelNotReady(f"model '{self._name}' is not loaded")
        inputs = {t.name: t.data for t in request.inputs}
        parameters = dict(request.parameters)
        try:
            if asyncio.iscoroutinefunction(model.infer):
                outputs = await model.infer(inputs, parameters)
            else:
                outputs = await threads.run(model.infer, inputs, parameters)
            tensors = self._tensors(outputs)
        except AisfError:
            raise
        except Exception as exc:
            raise engine_failure(exc, self._name) from exc
        return InferResponse(request.model_name, request.model_version, tensors, request.id)

    def _tensors(self, outputs: Any) -> list[Tensor]:
        if not isinstance(outputs, dict):
            raise InternalError(f"model '{self._name}': infer returned {type(outputs).__name__}, not a dict")
        missing = [name for name in self._outputs if name not in outputs]
        if missing:
            raise InternalError(f"model '{self._name}': infer returned no output(s) {missing}")
        tensors = []
        for name, datatype in self._outputs.items():
            array = np.asarray(outputs[name])
            try:
                returned = datatype_of(array)
            except AisfError as exc:  # the model's output, not the caller's input, is wrong
                raise InternalError(f"model '{self._name}': output '{name}': {exc.message}") from None
            if returned != datatype:
                raise InternalError(
                    f"model '{self._name}': output '{name}' is {returned}, config.yaml says {datatype}"
                )
            tensors.append(Tensor(name, datatype, tuple(array.shape), array))
        return tensors

    @property
    def model(self) -> Any:
        """The user's model object (for tools and tests that inspect it)."""
        return self._model

    async def health(self) -> Health:
        return Health(ready=self._model is not None)

    async def unload(self) -> None:
        model, self._model = self._model, None
        try:
            if model is not None and callable(getattr(model, "unload", None)) and self._threads is not None:
                await self._threads.run(model.unload)
        finally:
            forget(self._module)  # its module-level state goes with the model
