"""The gRPC client of the job service (aisf.job.v1.JobService), for the REST edge and other callers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from aisf.job.v1 import job_service_pb2 as pb
from aisf.job.v1 import job_service_pb2_grpc as pb_grpc
from aisf.services.clients.grpc_client import GrpcClient


class JobClient(GrpcClient):
    def __init__(self, target: str, max_message_bytes: int, timeout_s: float = 30.0) -> None:
        super().__init__(target, max_message_bytes, timeout_s)
        self._stub = pb_grpc.JobServiceStub(self._channel)

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
        async with aclosing(
            self._read(self._stub.WatchJob, pb.WatchJobRequest(job_id=job_id), None)
        ) as updates:
            async for update in updates:
                yield update.job
