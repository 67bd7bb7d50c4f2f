"""Schema of a pipeline model's `pipeline:` section: steps wired by named tensors into a DAG.

    backend: pipeline
    pipeline:
      inputs: [IMAGE]                       # what a request carries (specs come from the steps reading them)
      steps:
        - name: preprocess
          model: vision-preprocess          # a model of the repository ...
          inputs: {IMAGE: IMAGE}            # step tensor <- a pipeline input, or "<step>.<tensor>"
        - name: classify
          model: vision-demo
          inputs: {input: preprocess.PIXELS}
        - name: top-k
          function: postprocess.py:top_k    # ... or a function in the pipeline's version folder
          inputs: {probabilities: classify.probabilities}
          outputs: [{name: labels, datatype: BYTES, dims: [-1, 3]}]
      outputs: {labels: top-k.labels}       # pipeline output <- one source, or alternatives (first produced)

A step with `when: <source>` runs only when that BOOL tensor is true everywhere (`unless`: false
everywhere); a step reading a skipped step's output is skipped too.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, model_validator

from aisf.services.common.tensor_config import Strict as _Strict
from aisf.services.common.tensor_config import TensorConfig

_NAME = r"[A-Za-z0-9][A-Za-z0-9_\-]*"
STEP_NAME = re.compile(_NAME)
FUNCTION_REF = re.compile(r"(?P<module>[A-Za-z0-9_\-./]+\.py):(?P<function>[A-Za-z_][A-Za-z0-9_]*)")


class PipelineStep(_Strict):
    name: Annotated[str, Field(pattern=f"^{_NAME}$")]
    model: str = ""
    version: str = ""
    function: str = ""
    """`<file>.py:<function>` in the pipeline's version folder: infer(inputs, parameters) -> outputs."""
    inputs: dict[str, str] = {}
    """Step tensor name -> source: a pipeline input's name, or `<step>.<tensor>`."""
    outputs: list[TensorConfig] = []
    """A function step's outputs, full shapes (a model step's come from the model)."""
    function_inputs: list[TensorConfig] = []
    """A function step's inputs; empty: each takes the spec of what feeds it."""
    parameters: dict[str, str | int | float | bool] = {}
    """Sent with the step's request (a model's request parameters, a function's `parameters`)."""
    when: str = ""
    unless: str = ""

    @model_validator(mode="after")
    def _one_kind(self) -> PipelineStep:
        if bool(self.model) == bool(self.function):
            raise ValueError(f"step '{self.name}' takes exactly one of model, function")
        if self.function and not FUNCTION_REF.fullmatch(self.function):
            raise ValueError(
                f"step '{self.name}': function must read '<file>.py:<name>', got {self.function!r}"
            )
        if self.function and not self.outputs:
            raise ValueError(f"step '{self.name}': a function step declares its outputs")
        if self.model and (self.outputs or self.function_inputs):
            raise ValueError(f"step '{self.name}': a model step's tensors come from the model")
        if self.version and not self.model:
            raise ValueError(f"step '{self.name}': version needs model")
        if not self.inputs:
            raise ValueError(f"step '{self.name}' reads no inputs")
        return self


class PipelineConfig(_Strict):
    inputs: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    steps: Annotated[list[PipelineStep], Field(min_length=1)]
    outputs: Annotated[dict[str, str | list[str]], Field(min_length=1)]
    max_concurrency: Annotated[int, Field(ge=1, le=65_536)] = 1024
    """Requests the pipeline runs at once (its steps admit and queue their own calls)."""

    @model_validator(mode="after")
    def _unique_names(self) -> PipelineConfig:
        seen: set[str] = set()
        for step in self.steps:
            if step.name in seen:
                raise ValueError(f"step name '{step.name}' is used twice")
            seen.add(step.name)
        if len(set(self.inputs)) != len(self.inputs):
            raise ValueError("pipeline.inputs names a tensor twice")
        return self

    def output_sources(self, name: str) -> list[str]:
        sources = self.outputs[name]
        return [sources] if isinstance(sources, str) else list(sources)
