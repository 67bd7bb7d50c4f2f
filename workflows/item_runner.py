"""Answers one job item through the router: V2 inference (split into row slices after an out-of-memory),
or LLM work (chat, completion, embedding). Errors keep their type; the activity decides what they mean."""

from __future__ import annotations

from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from aisf.services.clients.router_client import RouterClient
from aisf.services.common import v2_codec
from aisf.services.common.tensors import InferRequest, InferResponse, Tensor
from aisf.services.job.llm_items import run_item
from aisf.services.job.model import JobKind, item_request_id
from aisf.workflows.types import InferItemsInput


class ItemRunner:
    def __init__(self, router: RouterClient) -> None:
        self._router = router

    async def answer(self, idx: int, raw: bytes, params: InferItemsInput) -> bytes:
        """Item `idx`'s answer; its request id is its own (a batch's output line names the same one)."""
        kind = JobKind(params.kind)
        request_id = item_request_id(params.job_id, idx)
        if kind.llm:
            return await run_item(
                self._router, kind, raw, params.model_name, params.model_version, request_id, params.tenant
            )
        request = pb.ModelInferRequest.FromString(raw)
        request.model_name, request.model_version = params.model_name, params.model_version
        if params.max_rows and rows_of(request) > params.max_rows:
            reply = await self._infer_in_slices(request, params.max_rows, request_id)
        else:
            reply = await self._router.infer(request, request_id)
        return bytes(reply.SerializeToString())

    @staticmethod
    def rows_run(raw: bytes, params: InferItemsInput) -> int:
        """How many rows one engine call of this item takes (what an out-of-memory halves)."""
        if JobKind(params.kind).llm:
            return 1
        rows = rows_of(pb.ModelInferRequest.FromString(raw))
        return min(rows, params.max_rows) if params.max_rows else rows

    async def _infer_in_slices(self, request: pb.ModelInferRequest, max_rows: int, request_id: str) -> Any:
        """Run one request as several engine calls of at most max_rows rows, outputs joined back."""
        whole = v2_codec.request_from_proto(request)
        rows = whole.inputs[0].shape[0]
        parts: list[InferResponse] = []
        for start in range(0, rows, max_rows):
            piece = InferRequest(
                whole.model_name,
                whole.model_version,
                [_rows(t, start, max_rows) for t in whole.inputs],
                whole.outputs,
                whole.id,
                whole.parameters,
            )
            reply = await self._router.infer(v2_codec.request_to_proto(piece), request_id)
            parts.append(v2_codec.response_from_proto(reply))
        joined = [
            Tensor.from_numpy(t.name, np.concatenate([p.outputs[i].data for p in parts]))
            for i, t in enumerate(parts[0].outputs)
        ]
        first = parts[0]
        return v2_codec.response_to_proto(
            InferResponse(first.model_name, first.model_version, joined, whole.id)
        )


def rows_of(request: pb.ModelInferRequest) -> int:
    return request.inputs[0].shape[0] if request.inputs and request.inputs[0].shape else 1


def _rows(tensor: Tensor, start: int, count: int) -> Tensor:
    data = tensor.data[start : start + count]
    return Tensor(tensor.name, tensor.datatype, tuple(data.shape), data, tensor.parameters)
