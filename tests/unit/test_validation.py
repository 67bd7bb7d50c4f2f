"""Requests are checked against the model before an engine sees them; each error names the tensor."""

from __future__ import annotations

import numpy as np
import pytest

from aisf.services.common.errors import InvalidInput
from aisf.services.common.tensors import InferRequest, RequestedOutput, Tensor, TensorSpec
from aisf.services.common.validation import validate_request

INPUTS = [TensorSpec("a", "FP32", (-1, 4)), TensorSpec("b", "INT64", (-1, 2))]
OUTPUTS = [TensorSpec("y", "FP32", (-1, 1))]


def _request(*tensors: Tensor, outputs: tuple[str, ...] = ()) -> InferRequest:
    return InferRequest("m", "", list(tensors), [RequestedOutput(n) for n in outputs])


def _a(rows: int = 2, cols: int = 4) -> Tensor:
    return Tensor.from_numpy("a", np.zeros((rows, cols), np.float32))


def _b(rows: int = 2) -> Tensor:
    return Tensor.from_numpy("b", np.zeros((rows, 2), np.int64))


def test_valid_request_reports_its_batch_size() -> None:
    assert validate_request("m", INPUTS, OUTPUTS, 8, _request(_a(3), _b(3), outputs=("y",))) == 3


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (_request(), "request has no inputs"),
        (_request(_a()), "missing input\\(s\\) 'b'"),
        (_request(_a(), _b(), Tensor.from_numpy("c", np.zeros(1))), "unexpected input 'c'"),
        (_request(_a(), _a(), _b()), "input 'a' is given twice"),
        (_request(Tensor.from_numpy("a", np.zeros((2, 4), np.float64)), _b()), "input 'a' has datatype FP64"),
        (_request(_a(2, 5), _b()), "input 'a' has shape \\[2, 5\\], expected \\[-1, 4\\]"),
        (_request(_a(9), _b(9)), "input 'a' batch size 9 is outside 1..8"),
        (_request(_a(0), _b(0)), "batch size 0"),
        (_request(_a(2), _b(3)), "input 'b' batch size 3 differs from 2"),
        (_request(_a(), _b(), outputs=("z",)), "unknown requested output 'z'"),
        (_request(_a(), _b(), outputs=("y", "y")), "output 'y' is requested twice"),
    ],
)
def test_invalid_requests_are_rejected_naming_the_tensor(request_: InferRequest, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        validate_request("m", INPUTS, OUTPUTS, 8, request_)


def test_unbatched_model_checks_every_dim() -> None:
    specs = [TensorSpec("a", "FP32", (4,))]
    assert (
        validate_request("m", specs, OUTPUTS, 0, _request(Tensor.from_numpy("a", np.zeros(4, np.float32))))
        == 1
    )
    with pytest.raises(InvalidInput, match="shape \\[1, 4\\]"):
        validate_request("m", specs, OUTPUTS, 0, _request(_a(1)))
