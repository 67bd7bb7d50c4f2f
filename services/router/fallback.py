"""Answers while a model's circuit is open (REQ-DEP-02): the configured rule, or why there is none."""

from __future__ import annotations

import numpy as np

from aisf.services.common.errors import CircuitOpen
from aisf.services.common.model_config import ConstantTensor, FallbackConfig
from aisf.services.common.tensors import NUMPY_DTYPES, InferRequest, InferResponse, Tensor
from aisf.services.router.repository import LoadedModel

RULE = "rule"


def _constant(tensor: ConstantTensor, rows: int | None) -> Tensor:
    if tensor.datatype == "BYTES":
        data = np.empty(len(tensor.data), dtype=np.object_)
        data[:] = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in tensor.data]
    else:
        data = np.asarray(tensor.data, dtype=NUMPY_DTYPES[tensor.datatype])
    data = data.reshape(tensor.dims)
    if rows is not None:
        data = np.repeat(data[np.newaxis, ...], rows, axis=0)
    return Tensor(tensor.name, tensor.datatype, tuple(data.shape), data)


def rule_answer(
    fallback: FallbackConfig, request: InferRequest, batched: bool, batch_size: int
) -> InferResponse:
    """The rule's constant outputs, one row per request row for batched models, filtered to the outputs
    the request asked for."""
    rows = batch_size if batched else None
    outputs = [_constant(t, rows) for t in fallback.outputs]
    asked = [o.name for o in request.outputs]
    if asked:
        outputs = [t for t in outputs if t.name in asked]
    return InferResponse(request.model_name, "", outputs, request.id)


def circuit_open(model: LoadedModel, why: str = "") -> CircuitOpen:
    """UNAVAILABLE for a request the open circuit stopped and no fallback answered (`why` says why not)."""
    wait = model.breaker.retry_after_s()
    return CircuitOpen(
        f"model '{model.name}' version {model.version}: circuit open after repeated engine failures"
        f"{why}; retry in {wait} s",
        retry_after=wait,
    )
