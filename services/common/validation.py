"""Checks a request against the model it names, before any engine sees it."""

from __future__ import annotations

from collections.abc import Sequence

from aisf.services.common.errors import InvalidInput
from aisf.services.common.tensors import InferRequest, InferResponse, TensorSpec


def _names(specs: Sequence[TensorSpec]) -> str:
    return ", ".join(f"'{s.name}'" for s in specs)


def validate_request(
    model: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    max_batch_size: int,
    request: InferRequest,
) -> int:
    """Raise InvalidInput naming the offending tensor; return the request's batch size."""
    if not request.inputs:
        raise InvalidInput(f"model '{model}': request has no inputs; expected {_names(inputs)}")
    specs = {s.name: s for s in inputs}
    seen: set[str] = set()
    batch: int | None = None
    for tensor in request.inputs:
        spec = specs.get(tensor.name)
        if spec is None:
            raise InvalidInput(
                f"model '{model}': unexpected input '{tensor.name}'; expected {_names(inputs)}"
            )
        if tensor.name in seen:
            raise InvalidInput(f"model '{model}': input '{tensor.name}' is given twice")
        seen.add(tensor.name)
        if tensor.datatype != spec.datatype:
            raise InvalidInput(
                f"model '{model}': input '{tensor.name}' has datatype {tensor.datatype}, "
                f"expected {spec.datatype}"
            )
        _check_shape(model, tensor.name, tensor.shape, spec.shape)
        if max_batch_size > 0:
            size = tensor.shape[0]
            if size < 1 or size > max_batch_size:
                raise InvalidInput(
                    f"model '{model}': input '{tensor.name}' batch size {size} "
                    f"is outside 1..{max_batch_size} (max_batch_size)"
                )
            if batch is not None and size != batch:
                raise InvalidInput(
                    f"model '{model}': input '{tensor.name}' batch size {size} differs from {batch}"
                )
            batch = size
    missing = [s for s in inputs if s.name not in seen]
    if missing:
        raise InvalidInput(f"model '{model}': missing input(s) {_names(missing)}")
    known_outputs = {s.name for s in outputs}
    requested: set[str] = set()
    for output in request.outputs:
        if output.name not in known_outputs:
            raise InvalidInput(
                f"model '{model}': unknown requested output '{output.name}'; "
                f"model outputs are {_names(outputs)}"
            )
        if output.name in requested:
            raise InvalidInput(f"model '{model}': output '{output.name}' is requested twice")
        requested.add(output.name)
    return batch or 1


def _check_shape(model: str, name: str, shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    if len(shape) != len(expected) or any(e != -1 and s != e for s, e in zip(shape, expected, strict=True)):
        raise InvalidInput(
            f"model '{model}': input '{name}' has shape {list(shape)}, expected {list(expected)}"
        )


def select_outputs(response: InferResponse, requested: Sequence[str]) -> InferResponse:
    """Keep only the requested outputs, in the requested order (all of them when none requested)."""
    if not requested:
        return response
    by_name = {t.name: t for t in response.outputs}
    response.outputs = [by_name[n] for n in requested if n in by_name]
    return response
