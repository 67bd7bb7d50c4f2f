"""Load-time checks of a model's config.yaml against its engine: tensors, fallback rule, canary routes.
A model that fails one does not load, with a message naming the tensor or route."""

from __future__ import annotations

from aisf.adapters.base import EmbeddingAdapter, GenerativeAdapter, ModelAdapter
from aisf.services.common.errors import ModelLoadFailed
from aisf.services.common.model_config import ModelConfig
from aisf.services.common.tensors import TensorSpec


def effective_tensors(
    config: ModelConfig, declared: list[TensorSpec], engine: list[TensorSpec], kind: str
) -> list[TensorSpec]:
    """Declared tensors win, but must agree with the engine; undeclared ones come from the engine."""
    if not declared:
        if config.max_batch_size > 0:
            fixed = [t.name for t in engine if not t.shape or t.shape[0] != -1]
            if fixed:
                raise ModelLoadFailed(
                    f"model '{config.name}': max_batch_size > 0 but {kind}(s) {fixed} have a fixed first dim"
                )
        return engine
    by_name = {t.name: t for t in engine}
    for tensor in declared:
        found = by_name.get(tensor.name)
        if found is None:
            raise ModelLoadFailed(
                f"model '{config.name}': {kind} '{tensor.name}' is not one the engine has: {sorted(by_name)}"
            )
        agree = len(found.shape) == len(tensor.shape) and all(
            a == b or -1 in (a, b) for a, b in zip(found.shape, tensor.shape, strict=True)
        )
        if found.datatype != tensor.datatype or not agree:
            raise ModelLoadFailed(
                f"model '{config.name}': {kind} '{tensor.name}' is declared "
                f"{tensor.datatype} {list(tensor.shape)} "
                f"but the engine has {found.datatype} {list(found.shape)}"
            )
    return declared


def check_fallback(config: ModelConfig, adapter: ModelAdapter, outputs: list[TensorSpec]) -> None:
    """A fallback must be one the model's lane can answer with: a message for a generative model, constant
    outputs (of the model's outputs, datatypes and dims) for a tensor model, another model for either;
    an embedding model takes none (another model's vectors live in another space)."""
    fallback = config.fallback
    if fallback is None:
        return
    generative = isinstance(adapter, GenerativeAdapter)
    if isinstance(adapter, EmbeddingAdapter) and not generative:
        raise ModelLoadFailed(
            f"model '{config.name}': an embedding model takes no fallback (another model's vectors are "
            "not comparable with its own)"
        )
    if fallback.message and not generative:
        raise ModelLoadFailed(f"model '{config.name}': fallback.message answers generative models only")
    if fallback.outputs and generative:
        raise ModelLoadFailed(
            f"model '{config.name}': fallback.outputs answers tensor models; a generative one takes "
            "fallback.message or fallback.model"
        )
    by_name = {t.name: t for t in outputs}
    skip = 1 if config.max_batch_size > 0 else 0
    for constant in fallback.outputs:
        spec = by_name.get(constant.name)
        if spec is None:
            raise ModelLoadFailed(
                f"model '{config.name}': fallback output '{constant.name}' is none of {sorted(by_name)}"
            )
        dims = spec.shape[skip:]
        fits = len(dims) == len(constant.dims) and all(
            d in (-1, c) for d, c in zip(dims, constant.dims, strict=True)
        )
        if spec.datatype != constant.datatype or not fits:
            raise ModelLoadFailed(
                f"model '{config.name}': fallback output '{constant.name}' is {constant.datatype} "
                f"{constant.dims}, the model's is {spec.datatype} {list(dims)}"
            )


def check_routes(config: ModelConfig, versions: list[int]) -> None:
    """A canary route to a version of this model must name one its version policy serves."""
    for route in config.traffic.routes if config.traffic is not None else []:
        own = not route.model or route.model == config.name
        if own and route.version is not None and route.version not in versions:
            raise ModelLoadFailed(
                f"model '{config.name}': traffic route to version {route.version}, which is not served "
                f"(version_policy selects {versions})"
            )
