"""aisf.job.v1.JobService over the job dataplane; handlers only decode, call and encode."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from grpc import aio

from aisf.job.v1 import job_service_pb2 as pb
from aisf.job.v1 import job_service_pb2_grpc as pb_grpc
from aisf.services.common.auth import tenancy
from aisf.services.job import codec
from aisf.services.job.model import JobFilter
from aisf.services.job.service import JobService, Submission

SERVICE_NAME = "aisf.job.v1.JobService"
Context = aio.ServicerContext[Any, Any]


class JobServicer(pb_grpc.JobServiceServicer):
    def __init__(self, jobs: JobService) -> None:
        self._jobs = jobs

    async def SubmitJob(self, request: pb.SubmitJobRequest, context: Context) -> pb.SubmitJobResponse:
        job, created = await self._jobs.submit(
            Submission(
                request.model_name,
                request.model_version,
                list(request.requests),
                tenancy.tenant_for(request.tenant),
                request.idempotency_key or None,
                request.priority,
                codec.kind_from_proto(request.kind),
            )
        )
        return pb.SubmitJobResponse(job=codec.job_to_proto(job), created=created)

    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.GetJobResponse:
        return pb.GetJobResponse(job=codec.view_to_proto(await self._jobs.get(request.job_id)))

    async def WatchJob(
        self, request: pb.WatchJobRequest, context: Context
    ) -> AsyncIterator[pb.WatchJobResponse]:
        async for job in self._jobs.watch(request.job_id):
            yield pb.WatchJobResponse(job=codec.job_to_proto(job))

    async def CancelJob(self, request: pb.CancelJobRequest, context: Context) -> pb.CancelJobResponse:
        return pb.CancelJobResponse(job=codec.job_to_proto(await self._jobs.cancel(request.job_id)))

    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        tenant = tenancy.tenant_filter(request.tenant)
        where = JobFilter(codec.state_from_proto(request.state), request.model_name, tenant)
        jobs, token = await self._jobs.list_jobs(where, request.page_size, request.page_token)
        return pb.ListJobsResponse(jobs=[codec.job_to_proto(j) for j in jobs], next_page_token=token)

    async def GetJobResult(
        self, request: pb.GetJobResultRequest, context: Context
    ) -> pb.GetJobResultResponse:
        page = await self._jobs.result(request.job_id, request.page_size, request.page_token)
        return pb.GetJobResultResponse(
            responses=page.responses,
            next_page_token=page.next_page_token,
            kind=codec.kind_to_proto(page.kind),
        )


def register(jobs: JobService) -> Any:
    def add(server: aio.Server) -> None:
        pb_grpc.add_JobServiceServicer_to_server(JobServicer(jobs), server)

    return add
