"""A pipeline's steps resolved into a checked DAG at load time: every wire names a real tensor of matching
datatype and shape, no step waits on itself, every step input is fed. A request can then only fail
on its data, never on the pipeline's shape."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aisf.services.common.errors import AisfError, ModelLoadFailed
from aisf.services.common.pipeline_config import PipelineConfig, PipelineStep
from aisf.services.common.tensors import TensorSpec

PIPELINE_INPUT = ""  # the step name of a pipeline input's source


@dataclass(frozen=True, slots=True)
class Source:
    """A tensor some step (or the request, step PIPELINE_INPUT) produces."""

    step: str
    tensor: str

    def __str__(self) -> str:
        return self.tensor if self.step == PIPELINE_INPUT else f"{self.step}.{self.tensor}"


@dataclass(frozen=True, slots=True)
class StepTensors:
    """A step's own tensors as its model (or its declaration) has them."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    version: int = 0


@dataclass(frozen=True, slots=True)
class StepPlan:
    config: PipelineStep
    wires: dict[str, Source]  # step input -> what feeds it
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    when: Source | None
    unless: Source | None
    depends: frozenset[str]  # the steps it waits for
    version: int

    @property
    def name(self) -> str:
        return self.config.name


@dataclass(frozen=True, slots=True)
class PipelinePlan:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    output_sources: dict[str, list[Source]]
    steps: list[StepPlan]  # in an order where every step follows the steps it depends on


def shapes_agree(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return len(a) == len(b) and all(x == y or -1 in (x, y) for x, y in zip(a, b, strict=True))


def _narrowed(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """The shape both accept: a fixed dim wins over a variable one."""
    return tuple(y if x == -1 else x for x, y in zip(a, b, strict=True))


def _describe(spec: TensorSpec) -> str:
    return f"{spec.datatype} {list(spec.shape)}"


class _Checker:
    def __init__(self, pipeline: str, config: PipelineConfig) -> None:
        self.pipeline = pipeline
        self.config = config
        self.steps = {s.name: s for s in config.steps}

    def fail(self, message: str) -> ModelLoadFailed:
        return ModelLoadFailed(f"pipeline '{self.pipeline}': {message}")

    def source(self, text: str, where: str) -> Source:
        if text in self.config.inputs:
            return Source(PIPELINE_INPUT, text)
        step, dot, tensor = text.partition(".")
        if not dot or not tensor:
            raise self.fail(
                f"{where}: '{text}' is neither a pipeline input ({sorted(self.config.inputs)}) "
                "nor '<step>.<tensor>'"
            )
        if step not in self.steps:
            raise self.fail(f"{where}: '{text}' names no step '{step}'; steps: {sorted(self.steps)}")
        return Source(step, tensor)


def build_plan(
    pipeline: str, config: PipelineConfig, tensors_of: Callable[[PipelineStep], StepTensors]
) -> PipelinePlan:
    """Resolve and check the DAG; `tensors_of` answers a model step's tensors (function steps declare
    theirs). Raises ModelLoadFailed naming the step and tensor at fault."""
    check = _Checker(pipeline, config)
    wires = {
        step.name: {
            name: check.source(text, f"step '{step.name}' input '{name}'")
            for name, text in step.inputs.items()
        }
        for step in config.steps
    }
    conditions = {
        step.name: (
            check.source(step.when, f"step '{step.name}' when") if step.when else None,
            check.source(step.unless, f"step '{step.name}' unless") if step.unless else None,
        )
        for step in config.steps
    }
    for step in config.steps:
        if step.model == pipeline:
            raise check.fail(f"step '{step.name}' calls the pipeline itself")
    order = _topological(check, wires, conditions)
    produced: dict[Source, TensorSpec] = {}
    fed: dict[str, TensorSpec] = {}  # pipeline input -> the shape every step reading it accepts
    plans: dict[str, StepPlan] = {}
    for name in order:
        step = check.steps[name]
        own = _step_tensors(check, step, wires[name], produced, fed, tensors_of)
        inputs = {t.name: t for t in own.inputs}
        outputs = {t.name: t for t in own.outputs}
        for tensor, source in wires[name].items():
            target = inputs.get(tensor)
            if target is None:
                raise check.fail(
                    f"step '{name}' input '{tensor}' is not an input of model '{step.model}': "
                    f"{sorted(inputs)}"
                )
            _connect(check, source, target, f"step '{name}' input '{tensor}'", produced, fed)
        unwired = [t for t in inputs if t not in wires[name]]
        if unwired:
            raise check.fail(f"step '{name}' leaves input(s) {unwired} of model '{step.model}' unfed")
        for condition in conditions[name]:
            if condition is not None:
                spec = _produced(check, condition, produced, fed, f"step '{name}' condition")
                if spec is not None and spec.datatype != "BOOL":
                    raise check.fail(f"step '{name}' condition '{condition}' is {spec.datatype}, not BOOL")
        for tensor, spec in outputs.items():
            produced[Source(name, tensor)] = spec
        depends = frozenset(
            s.step
            for s in (*wires[name].values(), *(c for c in conditions[name] if c is not None))
            if s.step != PIPELINE_INPUT
        )
        plans[name] = StepPlan(step, wires[name], inputs, outputs, *conditions[name], depends, own.version)
    unused = [i for i in config.inputs if i not in fed]
    if unused:
        raise check.fail(f"pipeline input(s) {unused} feed no step")
    pipeline_outputs, output_sources = _outputs(check, produced, fed)
    return PipelinePlan(
        [TensorSpec(i, fed[i].datatype, fed[i].shape) for i in config.inputs],
        pipeline_outputs,
        output_sources,
        [plans[n] for n in order],
    )


def _step_tensors(
    check: _Checker,
    step: PipelineStep,
    wires: dict[str, Source],
    produced: dict[Source, TensorSpec],
    fed: dict[str, TensorSpec],
    tensors_of: Callable[[PipelineStep], StepTensors],
) -> StepTensors:
    if step.model:
        try:
            return tensors_of(step)
        except AisfError as exc:
            raise check.fail(f"step '{step.name}' calls model '{step.model}': {exc.message}") from None
    declared = {t.name: TensorSpec(t.name, t.datatype, tuple(t.dims)) for t in step.function_inputs}
    if declared and set(declared) != set(wires):
        raise check.fail(
            f"step '{step.name}' declares function_inputs {sorted(declared)} but wires {sorted(wires)}"
        )
    inputs = []
    for tensor, source in wires.items():
        spec = declared.get(tensor) or _produced(
            check, source, produced, fed, f"step '{step.name}' input '{tensor}'"
        )
        if spec is None:
            raise check.fail(
                f"step '{step.name}' input '{tensor}' reads pipeline input '{source.tensor}' directly: "
                "declare its spec in function_inputs"
            )
        inputs.append(TensorSpec(tensor, spec.datatype, spec.shape))
    outputs = [TensorSpec(t.name, t.datatype, tuple(t.dims)) for t in step.outputs]
    return StepTensors(inputs, outputs)


def _produced(
    check: _Checker,
    source: Source,
    produced: dict[Source, TensorSpec],
    fed: dict[str, TensorSpec],
    where: str,
) -> TensorSpec | None:
    """The spec of what `source` names (None: a pipeline input no step has given a shape yet)."""
    if source.step == PIPELINE_INPUT:
        return fed.get(source.tensor)
    spec = produced.get(source)
    if spec is None:
        have = sorted(s.tensor for s in produced if s.step == source.step)
        raise check.fail(f"{where}: step '{source.step}' has no output '{source.tensor}'; it has {have}")
    return spec


def _connect(
    check: _Checker,
    source: Source,
    target: TensorSpec,
    where: str,
    produced: dict[Source, TensorSpec],
    fed: dict[str, TensorSpec],
) -> None:
    spec = _produced(check, source, produced, fed, where)
    if spec is None:  # the first step reading a pipeline input gives it its spec
        fed[source.tensor] = TensorSpec(source.tensor, target.datatype, target.shape)
        return
    if spec.datatype != target.datatype or not shapes_agree(spec.shape, target.shape):
        raise check.fail(f"{where} takes {_describe(target)} but '{source}' is {_describe(spec)}")
    if source.step == PIPELINE_INPUT:
        fed[source.tensor] = TensorSpec(source.tensor, spec.datatype, _narrowed(spec.shape, target.shape))


def _outputs(
    check: _Checker, produced: dict[Source, TensorSpec], fed: dict[str, TensorSpec]
) -> tuple[list[TensorSpec], dict[str, list[Source]]]:
    specs: list[TensorSpec] = []
    sources: dict[str, list[Source]] = {}
    for name in check.config.outputs:
        where = f"output '{name}'"
        alternatives = [check.source(text, where) for text in check.config.output_sources(name)]
        if not alternatives:
            raise check.fail(f"{where} names no source")
        found = [_produced(check, s, produced, fed, where) for s in alternatives]
        first = found[0]
        assert first is not None  # every pipeline input feeds a step by now
        for source, spec in zip(alternatives[1:], found[1:], strict=True):
            assert spec is not None
            if spec.datatype != first.datatype or not shapes_agree(spec.shape, first.shape):
                raise check.fail(
                    f"{where}: '{source}' is {_describe(spec)} but '{alternatives[0]}' is {_describe(first)}"
                )
        specs.append(TensorSpec(name, first.datatype, first.shape))
        sources[name] = alternatives
    return specs, sources


def _topological(
    check: _Checker,
    wires: dict[str, dict[str, Source]],
    conditions: dict[str, tuple[Source | None, Source | None]],
) -> list[str]:
    """Steps in config order as far as their dependencies allow; a cycle is named step by step."""
    needs = {
        name: {
            s.step for s in _all_sources(wires[name].values(), conditions[name]) if s.step != PIPELINE_INPUT
        }
        for name in wires
    }
    order: list[str] = []
    done: set[str] = set()
    while len(order) < len(needs):
        ready = [n for n in needs if n not in done and needs[n] <= done]
        if not ready:
            raise check.fail(f"steps form a cycle: {' -> '.join(_cycle(needs, done))}")
        order.append(ready[0])
        done.add(ready[0])
    return order


def _all_sources(wired: Iterable[Source], conditions: tuple[Source | None, Source | None]) -> list[Source]:
    return [*wired, *(c for c in conditions if c is not None)]


def _cycle(needs: dict[str, set[str]], done: set[str]) -> list[str]:
    """One cycle among the steps left: walk what each waits for until a step repeats."""
    walk = [next(n for n in needs if n not in done)]
    while True:
        following = sorted(needs[walk[-1]] - done)[0]
        if following in walk:
            return [*walk[walk.index(following) :], following]
        walk.append(following)
