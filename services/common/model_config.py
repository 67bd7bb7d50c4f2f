"""Schema of models/<name>/config.yaml (Triton-like), validated once when a model loads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from aisf.services.common.errors import ModelLoadFailed
from aisf.services.common.pipeline_config import PipelineConfig
from aisf.services.common.tensor_config import Strict as _Strict
from aisf.services.common.tensor_config import TensorConfig
from aisf.services.common.tensors import DATATYPES, TensorSpec


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


class CircuitBreakerConfig(_Strict):
    """REQ-DEP-02: `failures` engine failures within `window_s` open the circuit; after `cooldown_s`,
    `half_open_probes` trial requests decide whether it closes again."""

    enabled: bool = True
    failures: Annotated[int, Field(ge=1)] = 5
    window_s: Annotated[float, Field(gt=0)] = 60.0
    cooldown_s: Annotated[float, Field(gt=0)] = 30.0
    half_open_probes: Annotated[int, Field(ge=1)] = 1


class ConstantTensor(_Strict):
    """One output of a rule fallback: `data` (row-major) fills `dims`; with max_batch_size > 0, dims
    exclude the batch dim and the row is repeated for every row of the request."""

    name: Annotated[str, Field(min_length=1)]
    datatype: str
    dims: list[Annotated[int, Field(ge=1)]]
    data: list[bool | int | float | str]

    @model_validator(mode="after")
    def _fits(self) -> ConstantTensor:
        if self.datatype not in DATATYPES:
            raise ValueError(f"datatype {self.datatype!r} is not one of {sorted(DATATYPES)}")
        size = 1
        for dim in self.dims:
            size *= dim
        if len(self.data) != size:
            raise ValueError(f"data holds {len(self.data)} values, dims {self.dims} need {size}")
        return self


class FallbackConfig(_Strict):
    """What answers while the circuit is open: another model (a lighter one), or a rule: constant
    output tensors (V2 models) or a canned message (LLMs). Exactly one of them."""

    model: str = ""
    version: str = ""
    outputs: list[ConstantTensor] = []
    message: str = ""

    @model_validator(mode="after")
    def _one_kind(self) -> FallbackConfig:
        if sum([bool(self.model), bool(self.outputs), bool(self.message)]) != 1:
            raise ValueError("fallback takes exactly one of model, outputs, message")
        if self.version and not self.model:
            raise ValueError("fallback.version needs fallback.model")
        return self


class PromotionGates(_Strict):
    """A shadow may be promoted once its report passes every gate."""

    min_compared: Annotated[int, Field(ge=1)] = 100
    min_agreement: Annotated[float, Field(ge=0, le=1)] = 0.99
    max_error_rate: Annotated[float, Field(ge=0, le=1)] = 0.01
    max_p99_ratio: Annotated[float, Field(gt=0)] = 1.5


class ShadowConfig(_Strict):
    """REQ-DEP-01: copy a `sample` share of live requests to another model or version, off the live path,
    and compare. Floats agree within rtol/atol; LLM texts when their token agreement reaches
    `text_agreement`."""

    model: str = ""  # empty: this model (another version)
    version: str = ""  # empty: the target model's newest
    sample: Annotated[float, Field(gt=0, le=1)] = 1.0
    max_queue: Annotated[int, Field(ge=1, le=100_000)] = 64
    concurrency: Annotated[int, Field(ge=1, le=64)] = 1
    rtol: Annotated[float, Field(ge=0)] = 1e-5
    atol: Annotated[float, Field(ge=0)] = 1e-6
    text_agreement: Annotated[float, Field(gt=0, le=1)] = 0.9
    promote: PromotionGates = PromotionGates()

    @model_validator(mode="after")
    def _has_target(self) -> ShadowConfig:
        if not self.model and not self.version:
            raise ValueError("shadow needs a model, a version, or both")
        return self


class TrafficRoute(_Strict):
    model: str = ""  # empty: this model
    version: Annotated[int, Field(ge=1)] | None = None  # empty: the target model's newest
    weight: Annotated[float, Field(ge=0)]


class TrafficConfig(_Strict):
    """Canary: requests that name no version are split over `routes` by weight; with `sticky_parameter`,
    requests carrying the same value of that request parameter always take the same route."""

    routes: Annotated[list[TrafficRoute], Field(min_length=1)]
    sticky_parameter: str = ""

    @model_validator(mode="after")
    def _weighted(self) -> TrafficConfig:
        if sum(r.weight for r in self.routes) <= 0:
            raise ValueError("traffic.routes need a positive total weight")
        return self


class FeatureJoinConfig(_Strict):
    """The model fetches its own features: a request carries entity ids (inputs named by the join keys,
    e.g. user_id [1] and item_id [N]; one-value inputs apply to every row) and the router fills `input`
    with one row of features per entity row, columns in `features` order (or the feature service's)."""

    entities: Annotated[list[TensorConfig], Field(min_length=1)]
    """What a request carries: one input per join key (e.g. user_id INT64), each a list of ids (dims [-1])."""
    feature_service: str = ""
    features: list[str] = []
    """"<feature view>:<feature>" columns in tensor order; with feature_service, a subset and order of it."""
    input: str = ""
    """The engine input the features fill; empty: the model's only input."""
    missing: Literal["not_found", "default"] = "not_found"
    """An entity without features: a typed NOT_FOUND naming it, or `default` values in its row."""
    default: float = 0.0

    @model_validator(mode="after")
    def _names_features(self) -> FeatureJoinConfig:
        if not self.feature_service and not self.features:
            raise ValueError("features needs feature_service, features, or both")
        if any(e.dims not in ([-1], [1]) for e in self.entities):
            raise ValueError("features.entities are lists of ids: dims [-1] (or [1] for one id)")
        return self

    def entity_specs(self) -> list[TensorSpec]:
        return [TensorSpec(e.name, e.datatype, tuple(e.dims)) for e in self.entities]


PIPELINE_BACKEND = "pipeline"


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
    max_queue_size: Annotated[int, Field(ge=0)] | None = None
    """Requests that may wait for the engine; more are refused (429). Empty: the server's default."""
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()
    fallback: FallbackConfig | None = None
    shadow: ShadowConfig | None = None
    traffic: TrafficConfig | None = None
    features: FeatureJoinConfig | None = None
    pipeline: PipelineConfig | None = None
    """backend `pipeline`: the steps it runs (its tensors come from theirs)."""

    @model_validator(mode="after")
    def _batching_needs_batch_dim(self) -> ModelConfig:
        if self.dynamic_batching is not None and self.max_batch_size == 0:
            raise ValueError("dynamic_batching needs max_batch_size > 0")
        return self

    @model_validator(mode="after")
    def _pipeline_section(self) -> ModelConfig:
        if (self.backend == PIPELINE_BACKEND) != (self.pipeline is not None):
            raise ValueError(f"backend {PIPELINE_BACKEND!r} and a pipeline section go together")
        if self.pipeline is not None:
            if self.inputs or self.outputs:
                raise ValueError("a pipeline's inputs and outputs come from its steps; declare none")
            if self.dynamic_batching is not None or self.features is not None:
                raise ValueError("a pipeline takes no dynamic_batching or features (its steps may)")
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
