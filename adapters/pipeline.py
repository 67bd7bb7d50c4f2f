"""A pipeline served as a model (REQ-INF-03): its steps, models of the repository or Python functions, run as
a DAG on the real-time lane, every step as soon as what it reads exists (independent branches at once).
Model steps go through the dataplane (validation, batching, breakers, statistics of the step's model);
function steps run on the pipeline's own threads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import numpy as np

from aisf.adapters.base import Health, ModelMetadata, ModelSpec, RepositoryModels, engine_failure
from aisf.adapters.pipeline_graph import (
    PIPELINE_INPUT,
    PipelinePlan,
    Source,
    StepPlan,
    StepTensors,
    build_plan,
    shapes_agree,
)
from aisf.adapters.user_modules import forget, import_user_module
from aisf.services.common.errors import AisfError, InternalError, InvalidInput, ModelLoadFailed, ModelNotReady
from aisf.services.common.pipeline_config import FUNCTION_REF, PipelineStep
from aisf.services.common.tensors import InferRequest, InferResponse, Tensor, datatype_of
from aisf.services.common.threads import BlockingPool

SUCCESS = "success"
SKIPPED = "skipped"
StepFunction = Callable[[dict[str, Any], dict[str, Any]], Any]


def _import_module(folder: Path, file: str, pipeline: str) -> tuple[str, Any]:
    path = (folder / file).resolve()
    if not path.is_relative_to(folder.resolve()) or not path.is_file():
        raise ModelLoadFailed(f"pipeline '{pipeline}': {file} is not a file of its version folder")
    try:
        return import_user_module(path, "pipeline", pipeline)
    except AisfError:
        raise
    except Exception as exc:
        raise ModelLoadFailed(f"pipeline '{pipeline}': {file}: {type(exc).__name__}: {exc}") from exc


class _Run:
    """One request's walk through the plan: what each step produced, which steps were skipped."""

    def __init__(self, request: InferRequest) -> None:
        self.values: dict[Source, Tensor] = {Source(PIPELINE_INPUT, t.name): t for t in request.inputs}
        self.skipped: set[str] = set()
        self.id = request.id


class PipelineAdapter:
    def __init__(self) -> None:
        self._plan: PipelinePlan | None = None
        self._name = ""
        self._models: RepositoryModels | None = None
        self._threads: BlockingPool | None = None
        self._functions: dict[str, StepFunction] = {}
        self._modules: list[str] = []

    @property
    def plan(self) -> PipelinePlan | None:
        return self._plan

    async def load(self, spec: ModelSpec) -> ModelMetadata:
        config = spec.config.pipeline
        if config is None:
            raise ModelLoadFailed(f"model '{spec.name}': backend pipeline needs a pipeline section")
        models = spec.models

        def tensors_of(step: PipelineStep) -> StepTensors:
            served = models.describe(step.model, step.version)
            return StepTensors(served.inputs, served.outputs, served.version)

        plan = build_plan(spec.name, config, tensors_of)
        self._name, self._models, self._threads = spec.name, models, spec.threads
        try:
            modules: dict[str, Any] = {}  # one import per file: its steps share the module's state
            for step in config.steps:
                match = FUNCTION_REF.fullmatch(step.function)
                if match is None:
                    continue
                if match["module"] not in modules:
                    module_name, modules[match["module"]] = _import_module(
                        spec.path, match["module"], spec.name
                    )
                    self._modules.append(module_name)
                function = getattr(modules[match["module"]], match["function"], None)
                if not callable(function):
                    raise ModelLoadFailed(
                        f"pipeline '{spec.name}': {match['module']} defines no function {match['function']}"
                    )
                self._functions[step.name] = function
        except AisfError:
            self._forget_modules()
            raise
        self._plan = plan
        return ModelMetadata(
            plan.inputs,
            plan.outputs,
            platform="ensemble",
            details={"steps": ",".join(s.name for s in plan.steps)},
            concurrency=config.max_concurrency,
        )

    async def infer(self, request: InferRequest) -> InferResponse:
        plan = self._plan
        if plan is None:
            raise ModelNotReady(f"pipeline '{self._name}' is not loaded")
        run = _Run(request)
        await self._run_steps(plan, run)
        outputs = []
        for spec in plan.outputs:
            produced = next((run.values[s] for s in plan.output_sources[spec.name] if s in run.values), None)
            if produced is None:
                raise InternalError(
                    f"pipeline '{self._name}': output '{spec.name}': every step producing it was skipped "
                    f"({', '.join(str(s) for s in plan.output_sources[spec.name])})"
                )
            outputs.append(Tensor(spec.name, produced.datatype, produced.shape, produced.data))
        return InferResponse(request.model_name, request.model_version, outputs, request.id)

    async def _run_steps(self, plan: PipelinePlan, run: _Run) -> None:
        """Start every step whose inputs exist; when only one can run, run it inline (a chain of steps
        costs no task switches)."""
        waiting = list(plan.steps)
        running: dict[asyncio.Task[None], StepPlan] = {}
        finished: set[str] = set()
        try:
            while waiting or running:
                startable = [s for s in waiting if s.depends <= finished]
                for step in startable:
                    waiting.remove(step)
                if len(startable) == 1 and not running:
                    await self._step(startable[0], run)
                    finished.add(startable[0].name)
                    continue
                for step in startable:
                    running[asyncio.ensure_future(self._step(step, run))] = step
                if not running:
                    raise InternalError(
                        f"pipeline '{self._name}': no step can run"
                    )  # build_plan rules it out
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    step = running.pop(task)
                    task.result()  # the first failure ends the request; the finally cancels the others
                    finished.add(step.name)
        finally:
            for task in running:
                task.cancel()

    async def _step(self, step: StepPlan, run: _Run) -> None:
        models = self._models
        assert models is not None
        if self._skips(step, run):
            run.skipped.add(step.name)
            models.observe_step(self._name, step.name, 0, SKIPPED)
            return
        started = perf_counter_ns()
        try:
            inputs = [self._wired(step, name, source, run) for name, source in step.wires.items()]
            if step.config.function:
                outputs = await self._call_function(step, inputs)
            else:
                response = await models.infer(
                    InferRequest(
                        step.config.model,
                        step.config.version,
                        inputs,
                        id=run.id,
                        parameters=dict(step.config.parameters),
                    )
                )
                outputs = response.outputs
        except AisfError as exc:
            models.observe_step(self._name, step.name, perf_counter_ns() - started, exc.reason)
            raise type(exc)(
                f"pipeline '{self._name}' step '{step.name}': {exc.message}", exc.retry_after
            ) from exc
        models.observe_step(self._name, step.name, perf_counter_ns() - started, SUCCESS)
        for tensor in outputs:
            run.values[Source(step.name, tensor.name)] = tensor

    def _skips(self, step: StepPlan, run: _Run) -> bool:
        if any(s.step in run.skipped for s in step.wires.values()):
            return True
        for condition, wanted in ((step.when, True), (step.unless, False)):
            if condition is None:
                continue
            if condition.step in run.skipped:
                return True
            values = run.values[condition].data
            if bool(np.all(values) if wanted else not np.any(values)) is False:
                return True
        return False

    def _wired(self, step: StepPlan, name: str, source: Source, run: _Run) -> Tensor:
        tensor = run.values[source]
        return Tensor(name, tensor.datatype, tensor.shape, tensor.data)

    async def _call_function(self, step: StepPlan, inputs: list[Tensor]) -> list[Tensor]:
        function, threads = self._functions[step.name], self._threads
        assert threads is not None
        for tensor in inputs:  # a function gets what it declared, or the caller hears which tensor differs
            expected = step.inputs[tensor.name].shape
            if not shapes_agree(tensor.shape, expected):
                raise InvalidInput(
                    f"input '{tensor.name}' has shape {list(tensor.shape)}, "
                    f"the function takes {list(expected)}"
                )
        arrays = {t.name: t.data for t in inputs}
        parameters = dict(step.config.parameters)
        try:
            if asyncio.iscoroutinefunction(function):
                returned = await function(arrays, parameters)
            else:
                returned = await threads.run(function, arrays, parameters)
        except AisfError:
            raise
        except Exception as exc:
            kind = type(engine_failure(exc, self._name))  # out of memory keeps its own type
            raise kind(f"the function failed: {type(exc).__name__}: {exc}") from exc
        return self._function_outputs(step, returned)

    def _function_outputs(self, step: StepPlan, returned: Any) -> list[Tensor]:
        where = f"pipeline '{self._name}' step '{step.name}'"
        if not isinstance(returned, dict):
            raise InternalError(f"{where}: the function returned {type(returned).__name__}, not a dict")
        tensors = []
        for name, spec in step.outputs.items():
            if name not in returned:
                raise InternalError(f"{where}: the function returned no output '{name}'")
            array = np.asarray(returned[name])
            try:
                datatype = datatype_of(array)
            except AisfError as exc:
                raise InternalError(f"{where}: output '{name}': {exc.message}") from None
            if datatype != spec.datatype:
                raise InternalError(f"{where}: output '{name}' is {datatype}, declared {spec.datatype}")
            if not shapes_agree(tuple(array.shape), spec.shape):
                raise InternalError(
                    f"{where}: output '{name}' has shape {list(array.shape)}, declared {list(spec.shape)}"
                )
            tensors.append(Tensor(name, datatype, tuple(array.shape), array))
        return tensors

    async def health(self) -> Health:
        return Health(ready=self._plan is not None)

    async def unload(self) -> None:
        self._plan = None
        self._functions.clear()
        self._forget_modules()

    def _forget_modules(self) -> None:
        for module in self._modules:
            forget(module)
        self._modules.clear()
