"""/v1/jobs: durable inference jobs over the job service's gRPC contract (REQ-API-01)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from google.protobuf.json_format import MessageToDict
from pydantic import BaseModel, ConfigDict, Field
from tritonclient.grpc import service_pb2 as v2_pb

from aisf.gateway.auth import TenantHeader
from aisf.gateway.errors import ERROR_RESPONSES, error_responses
from aisf.gateway.http_body import parse_json, read_body
from aisf.job.v1 import job_service_pb2 as pb
from aisf.services.clients.job_client import JobClient
from aisf.services.common import v2_codec
from aisf.services.common.errors import InvalidInput
from aisf.services.common.v2_json import request_from_document, response_document

router = APIRouter(
    prefix="/v1/jobs", tags=["jobs"], responses={**ERROR_RESPONSES, **error_responses(409, 413)}
)
JobStateName = Literal["queued", "running", "succeeded", "failed", "cancelled"]
_KINDS = {
    "": pb.JOB_KIND_V2,
    "/v1/chat/completions": pb.JOB_KIND_CHAT,
    "/v1/completions": pb.JOB_KIND_COMPLETION,
    "/v1/embeddings": pb.JOB_KIND_EMBEDDING,
}


class JobSubmission(BaseModel):
    """Requests run as one durable job: KServe V2 inference requests, or (with `endpoint`) OpenAI request
    bodies for an LLM or embedding model."""

    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, Field(min_length=1, description="Model to run every request on")]
    version: str = Field("", description="Model version; empty means the newest ready one")
    endpoint: Literal["", "/v1/chat/completions", "/v1/completions", "/v1/embeddings"] = Field(
        "", description="Empty: V2 inference requests; else what the OpenAI bodies in `requests` are for"
    )
    requests: Annotated[
        list[dict[str, Any]],
        Field(min_length=1, description="V2 request bodies (JSON tensors), or OpenAI request bodies"),
    ]
    idempotency_key: Annotated[str | None, Field(max_length=256)] = None
    priority: Annotated[int, Field(ge=0, le=5, description="0: the tenant tier's; only lower is allowed")] = 0


class JobDocument(BaseModel):
    """A job: state, progress, attempts, error, timings; `result` once it succeeded (if small)."""

    job_id: str
    state: JobStateName
    model: str
    version: str
    tenant: str
    tier: str
    priority: int
    progress: dict[str, int]
    attempts: int
    resumed_from: int
    error: dict[str, str] | None
    create_time: str
    start_time: str | None
    end_time: str | None
    idempotency_key: str | None
    result: dict[str, list[dict[str, Any]]] | None
    result_url: str | None


def _client(request: Request) -> JobClient:
    client: JobClient = request.app.state.jobs
    return client


def _responses(raw: list[bytes], kind: pb.JobKind.ValueType) -> list[dict[str, Any]]:
    """Finished responses in the same JSON as a direct call answers (V2 JSON, or OpenAI bodies)."""
    if kind not in (pb.JOB_KIND_V2, pb.JOB_KIND_UNSPECIFIED):
        return [orjson.loads(item) for item in raw]
    documents = []
    for item in raw:
        response = v2_codec.response_from_proto(v2_pb.ModelInferResponse.FromString(item))
        document, _ = response_document(response, {}, json_only=True)
        documents.append(orjson.loads(orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)))
    return documents


def job_document(job: pb.Job) -> dict[str, Any]:
    times = MessageToDict(job, preserving_proto_field_name=True)
    state = pb.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()
    url = f"/v1/jobs/{job.job_id}/result" if state == "succeeded" else None
    return {
        "job_id": job.job_id,
        "state": state,
        "model": job.model_name,
        "version": job.model_version,
        "tenant": job.tenant,
        "tier": job.tier,
        "priority": job.priority,
        "progress": {"done": job.items_done, "total": job.items_total},
        "attempts": job.attempts,
        "resumed_from": job.resumed_from,
        "error": {"type": job.error_type, "message": job.error_message} if job.error_type else None,
        "create_time": times.get("create_time"),
        "start_time": times.get("start_time"),
        "end_time": times.get("end_time"),
        "idempotency_key": job.idempotency_key or None,
        "result": {"responses": _responses(list(job.responses), job.kind)} if job.result_inline else None,
        "result_url": url,
    }


def _to_proto(body: JobSubmission, tenant: str) -> pb.SubmitJobRequest:
    kind = _KINDS[body.endpoint]
    requests = []
    for index, document in enumerate(body.requests):
        if body.endpoint:
            requests.append(orjson.dumps(document))
            continue
        try:
            domain, _ = request_from_document(body.model, body.version, document)
        except InvalidInput as error:
            raise InvalidInput(f"requests[{index}]: {error.message}") from None
        requests.append(v2_codec.request_to_proto(domain).SerializeToString())
    return pb.SubmitJobRequest(
        model_name=body.model,
        model_version=body.version,
        requests=requests,
        idempotency_key=body.idempotency_key or "",
        priority=body.priority,
        tenant=tenant,
        kind=kind,
    )


@router.post(
    "",
    status_code=202,
    response_model=JobDocument,
    responses={200: {"model": JobDocument}},
    openapi_extra={
        "requestBody": {"content": {"application/json": {"schema": JobSubmission.model_json_schema()}}}
    },
)
async def submit_job(request: Request, tenant: TenantHeader = "") -> JSONResponse:
    """Accept a job at once (202 + Location): durable when answered, started right after. The same
    idempotency key answers the same job (200)."""
    body = parse_json(JobSubmission, await read_body(request, request.app.state.settings.max_request_bytes))
    answer = await _client(request).submit(_to_proto(body, tenant))
    location = f"/v1/jobs/{answer.job.job_id}"
    status = 202 if answer.created else 200
    return JSONResponse(job_document(answer.job), status_code=status, headers={"Location": location})


@router.get("/{job_id}", response_model=JobDocument)
async def get_job(request: Request, job_id: str) -> dict[str, Any]:
    return job_document(await _client(request).get(job_id))


@router.get("/{job_id}/result")
async def get_job_result(
    request: Request,
    job_id: str,
    page_size: Annotated[int, Query(ge=0, le=1000)] = 100,
    page_token: str = "",
) -> dict[str, Any]:
    """A succeeded job's responses in request order, page by page."""
    page = await _client(request).result(
        pb.GetJobResultRequest(job_id=job_id, page_size=page_size, page_token=page_token)
    )
    responses = _responses(list(page.responses), page.kind)
    return {"responses": responses, "next_page_token": page.next_page_token or None}


@router.get("/{job_id}/events")
async def job_events(request: Request, job_id: str) -> StreamingResponse:
    """Server-sent events: the job on every change, until it ends."""
    client = _client(request)
    first = await client.get(job_id)

    async def frames() -> AsyncIterator[bytes]:
        async for job in client.watch(first.job_id):
            yield b"event: job\ndata: " + orjson.dumps(job_document(job)) + b"\n\n"

    return StreamingResponse(frames(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.delete("/{job_id}", status_code=202, response_model=JobDocument)
async def cancel_job(request: Request, job_id: str) -> dict[str, Any]:
    return job_document(await _client(request).cancel(job_id))


@router.get("")
async def list_jobs(
    request: Request,
    state: JobStateName | None = None,
    model: str = "",
    tenant: str = "",
    page_size: Annotated[int, Query(ge=0, le=500)] = 50,
    page_token: str = "",
) -> dict[str, Any]:
    """Jobs newest first, filtered; pass next_page_token back as page_token for the next page."""
    query = pb.ListJobsRequest(
        state=pb.JobState.Value(f"JOB_STATE_{state.upper()}") if state else pb.JOB_STATE_UNSPECIFIED,
        model_name=model,
        tenant=tenant,
        page_size=page_size,
        page_token=page_token,
    )
    page = await _client(request).list_jobs(query)
    return {"jobs": [job_document(j) for j in page.jobs], "next_page_token": page.next_page_token or None}
