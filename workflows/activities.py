"""The job workflow's activities: every I/O (router gRPC, job store) happens here, never in the workflow."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from tritonclient.grpc import service_pb2 as pb

from aisf.services.clients.router_client import RouterClient
from aisf.services.common import v2_codec
from aisf.services.common.errors import AisfError, EngineOutOfMemory
from aisf.services.common.tensors import InferRequest, InferResponse, Tensor
from aisf.services.job.model import JobState
from aisf.services.job.store import JobStore
from aisf.workflows.types import FINISH_JOB, INFER_ITEMS, WORKER_SHUTDOWN, FinishJobInput, InferItemsInput

# Items read, inferred and saved together; the heartbeat checkpoint advances per group.
GROUP = 16


class JobActivities:
    def __init__(self, store: JobStore, router: RouterClient) -> None:
        self._store = store
        self._router = router

    @activity.defn(name=INFER_ITEMS)
    async def infer_items(self, params: InferItemsInput) -> int:
        """Infer items from the last checkpoint on; a SIGTERM'd worker saves, checkpoints and hands over."""
        info = activity.info()
        resumed = int(info.heartbeat_details[0]) if info.heartbeat_details else 0
        await self._store.mark_running(params.job_id, info.attempt, resumed)
        done = resumed
        while done < params.items_total:
            items = await self._store.items(params.job_id, done, GROUP)
            if not items:
                break
            answers: list[tuple[int, bytes]] = []
            try:
                for idx, raw in items:
                    if activity.is_worker_shutdown():
                        break
                    answers.append((idx, await self._infer(raw, params)))
            finally:
                if answers:
                    done = answers[-1][0] + 1
                    await asyncio.shield(self._store.save_responses(params.job_id, answers, done))
                activity.heartbeat(done)
            if activity.is_worker_shutdown():
                # Benign: a planned hand-over (spot reclaim), not a failure worth a traceback in the logs.
                raise ApplicationError(
                    f"worker shutting down; the job resumes at item {done}",
                    done,
                    type=WORKER_SHUTDOWN,
                    category=ApplicationErrorCategory.BENIGN,
                )
        return done

    async def _infer(self, raw: bytes, params: InferItemsInput) -> bytes:
        request = pb.ModelInferRequest.FromString(raw)
        request.model_name, request.model_version = params.model_name, params.model_version
        rows = request.inputs[0].shape[0] if request.inputs and request.inputs[0].shape else 1
        try:
            if params.max_rows and rows > params.max_rows:
                reply = await self._infer_in_slices(request, params.max_rows, params.job_id)
            else:
                reply = await self._router.infer(request, params.job_id)
        except EngineOutOfMemory as error:
            attempted = min(rows, params.max_rows) if params.max_rows else rows
            raise ApplicationError(error.message, attempted, type=error.reason, non_retryable=True) from None
        except AisfError as error:
            retryable = error.reason not in ("invalid_input", "model_not_found", "unimplemented")
            raise ApplicationError(error.message, type=error.reason, non_retryable=not retryable) from None
        return bytes(reply.SerializeToString())

    async def _infer_in_slices(self, request: pb.ModelInferRequest, max_rows: int, job_id: str) -> Any:
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
            reply = await self._router.infer(v2_codec.request_to_proto(piece), job_id)
            parts.append(v2_codec.response_from_proto(reply))
        joined = [
            Tensor.from_numpy(t.name, np.concatenate([p.outputs[i].data for p in parts]))
            for i, t in enumerate(parts[0].outputs)
        ]
        first = parts[0]
        return v2_codec.response_to_proto(
            InferResponse(first.model_name, first.model_version, joined, whole.id)
        )

    @activity.defn(name=FINISH_JOB)
    async def finish_job(self, outcome: FinishJobInput) -> None:
        await self._store.finish(
            outcome.job_id, JobState(outcome.state), outcome.error_type, outcome.error_message
        )


def _rows(tensor: Tensor, start: int, count: int) -> Tensor:
    data = tensor.data[start : start + count]
    return Tensor(tensor.name, tensor.datatype, tuple(data.shape), data, tensor.parameters)
