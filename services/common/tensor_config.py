"""A tensor as config.yaml declares it (a model's inputs and outputs, a pipeline function's)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aisf.services.common.tensors import DATATYPES


class Strict(BaseModel):
    """Config sections refuse unknown keys (a typo must not pass silently) and never change once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorConfig(Strict):
    name: Annotated[str, Field(min_length=1)]
    datatype: str
    # A model's tensors leave out the batch dim when max_batch_size > 0 (as in Triton); a pipeline
    # function's give the full shape. -1 marks a variable dim.
    dims: list[Annotated[int, Field(ge=-1)]]

    @model_validator(mode="after")
    def _known_datatype(self) -> TensorConfig:
        if self.datatype not in DATATYPES:
            raise ValueError(f"datatype {self.datatype!r} is not one of {sorted(DATATYPES)}")
        return self
