"""Schema of models/<name>/config.yaml (Triton-like), validated once when a model loads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aisf.services.common.errors import ModelLoadFailed
from aisf.services.common.tensors import DATATYPES, TensorSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorConfig(_Strict):
    name: Annotated[str, Field(min_length=1)]
    datatype: str
    # Without the batch dim when max_batch_size > 0 (as in Triton); -1 marks a variable dim.
    dims: list[Annotated[int, Field(ge=-1)]]

    @model_validator(mode="after")
    def _known_datatype(self) -> TensorConfig:
        if self.datatype not in DATATYPES:
            raise ValueError(f"datatype {self.datatype!r} is not one of {sorted(DATATYPES)}")
        return self


class DynamicBatching(_Strict):
    max_queue_delay_microseconds: Annotated[int, Field(ge=0)] = 500
    preferred_batch_size: list[Annotated[int, Field(ge=1)]] = []


class VersionPolicy(_Strict):
    """Exactly one of: the newest `latest` versions, `all` versions, or `specific` ones."""

    latest: Annotated[int, Field(ge=1)] | None = None
    all: bool = False
    specific: list[Annotated[int, Field(ge=1)]] = []

    @model_validator(mode="after")
    def _one_policy(self) -> VersionPolicy:
        chosen = sum([self.latest is not None, self.all, bool(self.specific)])
        if chosen > 1:
            raise ValueError("version_policy takes one of latest, all, specific")
        return self

    def select(self, available: list[int]) -> list[int]:
        newest_first = sorted(available, reverse=True)
        if self.all:
            return sorted(available)
        if self.specific:
            return sorted(v for v in self.specific if v in available)
        return sorted(newest_first[: self.latest or 1])


class ModelConfig(_Strict):
    name: str = ""
    backend: Annotated[str, Field(min_length=1)]
    max_batch_size: Annotated[int, Field(ge=0)] = 0
    inputs: list[TensorConfig] = []
    outputs: list[TensorConfig] = []
    dynamic_batching: DynamicBatching | None = None
    instance_count: Annotated[int, Field(ge=1, le=64)] = 1
    version_policy: VersionPolicy = VersionPolicy()
    # Adapter-specific settings (e.g. a remote URL), passed through untouched.
    parameters: dict[str, str | int | float | bool] = {}
    platform: str = ""

    @model_validator(mode="after")
    def _batching_needs_batch_dim(self) -> ModelConfig:
        if self.dynamic_batching is not None and self.max_batch_size == 0:
            raise ValueError("dynamic_batching needs max_batch_size > 0")
        return self

    def tensor_specs(self, tensors: list[TensorConfig]) -> list[TensorSpec]:
        batch: tuple[int, ...] = (-1,) if self.max_batch_size > 0 else ()
        return [TensorSpec(t.name, t.datatype, batch + tuple(t.dims)) for t in tensors]


def load_model_config(model_dir: Path) -> ModelConfig:
    """Read and validate a model directory's config.yaml; the directory name is the model name."""
    path = model_dir / "config.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise ModelLoadFailed(f"model '{model_dir.name}': {path} is missing") from exc
    except yaml.YAMLError as exc:
        raise ModelLoadFailed(f"model '{model_dir.name}': config.yaml is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ModelLoadFailed(f"model '{model_dir.name}': config.yaml must be a mapping")
    raw.setdefault("name", model_dir.name)
    try:
        config = ModelConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors()
        )
        raise ModelLoadFailed(f"model '{model_dir.name}': invalid config.yaml: {problems}") from exc
    if config.name != model_dir.name:
        raise ModelLoadFailed(
            f"model '{model_dir.name}': config.yaml names '{config.name}', must match its directory"
        )
    return config
