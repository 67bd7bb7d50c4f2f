"""The gRPC client of the job service (aisf.job.v1.JobService), for the REST edge and other callers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from grpc import aio

from aisf.job.v1 import job_service_pb2 as pb
from aisf.job.v1 import job_service_pb2_grpc as pb_grpc
from aisf.services.common import deadlines
from aisf.services.common.grpc_errors import error_from_rpc
from aisf.services.common.grpc_server import channel_options

Reply = TypeVar("Reply")


class JobClient:
    def __init__(self, target: str, max_message_bytes: int, timeout_s: float = 30.0) -> None:
        self._channel = aio.insecure_channel(target, options=channel_options(max_message_bytes))
        self._stub = pb_grpc.JobServiceStub(self._channel)
        self._timeout_s = timeout_s

    async def close(self) -> None:
        await self._channel.close(None)

    async def _call(self, method: Callable[..., Awaitable[Reply]], request: Any) -> Reply:
        try:
            return await method(request, timeout=deadlines.timeout_or(self._timeout_s))
        except aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None

    async def submit(self, request: pb.SubmitJobRequest) -> pb.SubmitJobResponse:
        return await self._call(self._stub.SubmitJob, request)

    async def get(self, job_id: str) -> pb.Job:
        return (await self._call(self._stub.GetJob, pb.GetJobRequest(job_id=job_id))).job

    async def cancel(self, job_id: str) -> pb.Job:
        return (await self._call(self._stub.CancelJob, pb.CancelJobRequest(job_id=job_id))).job

    async def list_jobs(self, request: pb.ListJobsRequest) -> pb.ListJobsResponse:
        return await self._call(self._stub.ListJobs, request)

    async def result(self, request: pb.GetJobResultRequest) -> pb.GetJobResultResponse:
        return await self._call(self._stub.GetJobResult, request)

    async def watch(self, job_id: str) -> AsyncIterator[pb.Job]:
        call = self._stub.WatchJob(pb.WatchJobRequest(job_id=job_id))
        try:
            async for update in call:
                yield update.job
        except aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        finally:
            call.cancel()
