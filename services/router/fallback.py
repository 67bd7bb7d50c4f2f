"""Answers while a model's circuit is open (REQ-DEP-02): the configured rule, marked as a fallback."""

from __future__ import annotations

import numpy as np

from aisf.services.common.errors import InvalidInput
from aisf.services.common.marks import FALLBACK_PARAMETER
from aisf.services.common.model_config import ConstantTensor, FallbackConfig
from aisf.services.common.tensors import NUMPY_DTYPES, InferRequest, InferResponse, Tensor

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
    if not fallback.outputs:
        raise InvalidInput(
            f"model '{request.model_name}': its fallback is a message, which answers text only"
        )
    rows = batch_size if batched else None
    outputs = [_constant(t, rows) for t in fallback.outputs]
    asked = [o.name for o in request.outputs]
    if asked:
        outputs = [t for t in outputs if t.name in asked]
    return InferResponse(request.model_name, "", outputs, request.id, {FALLBACK_PARAMETER: RULE})
