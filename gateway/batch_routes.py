"""The OpenAI Files and Batch APIs (/v1/files, /v1/batches) as the openai SDK calls them: a translation of
the job role's aisf.job.v1.FileService and BatchService."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile as StarletteUpload

from aisf.gateway.auth import TenantHeader
from aisf.gateway.http_body import parse_json, read_body
from aisf.gateway.openai_errors import OPENAI_ERROR_RESPONSES, OpenAIRoute
from aisf.job.v1 import batch_service_pb2 as pb
from aisf.services.clients.batch_client import BatchClient
from aisf.services.common.errors import InvalidInput, RequestTooLarge

router = APIRouter(route_class=OpenAIRoute, responses=OPENAI_ERROR_RESPONSES, tags=["batches"])
_CHUNK = 1024 * 1024
_STATUS = {
    pb.BATCH_STATUS_VALIDATING: "validating",
    pb.BATCH_STATUS_FAILED: "failed",
    pb.BATCH_STATUS_IN_PROGRESS: "in_progress",
    pb.BATCH_STATUS_FINALIZING: "finalizing",
    pb.BATCH_STATUS_COMPLETED: "completed",
    pb.BATCH_STATUS_EXPIRED: "expired",
    pb.BATCH_STATUS_CANCELLING: "cancelling",
    pb.BATCH_STATUS_CANCELLED: "cancelled",
}


class BatchCreation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: Annotated[str, Field(min_length=1)]
    endpoint: Annotated[str, Field(min_length=1)]
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None


def _client(request: Request) -> BatchClient:
    client: BatchClient = request.app.state.batches
    return client


def _seconds(stamp: Timestamp) -> int | None:
    return int(stamp.seconds) if stamp.seconds else None


def file_object(file: pb.File) -> dict[str, Any]:
    return {
        "id": file.file_id,
        "object": "file",
        "bytes": file.size,
        "created_at": _seconds(file.create_time),
        "filename": file.filename,
        "purpose": file.purpose,
        "status": "processed",
        "status_details": None,
        "expires_at": None,
    }


def batch_object(batch: pb.Batch) -> dict[str, Any]:
    times = {
        name: _seconds(getattr(batch, f"{name.removesuffix('_at')}_time"))
        for name in (
            "in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
            "cancelling_at", "cancelled_at",
        )
    }  # fmt: skip
    errors = None
    if batch.error_code:
        error = {"code": batch.error_code, "message": batch.error_message, "param": None, "line": None}
        errors = {"object": "list", "data": [error]}
    return {
        "id": batch.batch_id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "errors": errors,
        "input_file_id": batch.input_file_id,
        "completion_window": batch.completion_window,
        "status": _STATUS[batch.status],
        "output_file_id": batch.output_file_id or None,
        "error_file_id": batch.error_file_id or None,
        "created_at": _seconds(batch.create_time),
        **times,
        "request_counts": {
            "total": batch.total_requests,
            "completed": batch.completed_requests,
            "failed": batch.failed_requests,
        },
        "metadata": dict(batch.metadata) or None,
        "model": batch.model_name,
    }


def _page(objects: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": objects,
        "first_id": objects[0]["id"] if objects else None,
        "last_id": objects[-1]["id"] if objects else None,
        "has_more": more,
    }


async def _chunks(upload: StarletteUpload, limit: int) -> AsyncIterator[bytes]:
    size = 0
    while chunk := await upload.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"file exceeds the limit of {limit} bytes")
        yield chunk


_UPLOAD_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "example": "batch"},
                    },
                }
            }
        },
    }
}
_FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the purpose field, beyond the file itself


@router.post("/v1/files", openapi_extra=_UPLOAD_FORM)
async def upload_file(request: Request, tenant: TenantHeader = "") -> dict[str, Any]:
    """A batch input file (purpose "batch", JSON lines), kept in the file storage. The form is parsed
    here, after the declared size was checked: an oversized upload is refused before it is spooled."""
    limit = request.app.state.settings.files_max_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + _FORM_OVERHEAD:
        raise RequestTooLarge(f"file exceeds the limit of {limit} bytes")
    async with request.form(max_files=1, max_fields=4) as form:
        file, purpose = form.get("file"), form.get("purpose")
        if not isinstance(file, StarletteUpload):
            raise InvalidInput("file: a file part is required")
        if not isinstance(purpose, str) or not purpose:
            raise InvalidInput("purpose: required")
        header = pb.UploadFileHeader(filename=file.filename or "", purpose=purpose, tenant=tenant)
        return file_object(await _client(request).upload(header, _chunks(file, limit)))


@router.get("/v1/files")
async def list_files(
    request: Request,
    purpose: str = "",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    after: str = "",
    tenant: TenantHeader = "",
) -> dict[str, Any]:
    reply = await _client(request).files(
        pb.ListFilesRequest(tenant=tenant, purpose=purpose, limit=limit, after=after)
    )
    return _page([file_object(f) for f in reply.files], reply.has_more)


@router.get("/v1/files/{file_id}")
async def retrieve_file(request: Request, file_id: str, tenant: TenantHeader = "") -> dict[str, Any]:
    return file_object(await _client(request).file(file_id, tenant))


@router.get("/v1/files/{file_id}/content")
async def file_content(request: Request, file_id: str, tenant: TenantHeader = "") -> Response:
    client = _client(request)
    info = await client.file(file_id, tenant)  # a missing file is a 404 before any byte is sent
    media = "application/jsonl" if info.filename.endswith(".jsonl") else "application/octet-stream"
    return StreamingResponse(client.file_content(file_id, tenant), media_type=media)


@router.delete("/v1/files/{file_id}")
async def delete_file(request: Request, file_id: str, tenant: TenantHeader = "") -> dict[str, Any]:
    reply = await _client(request).delete_file(file_id, tenant)
    return {"id": reply.file_id, "object": "file", "deleted": reply.deleted}


@router.post("/v1/batches")
async def create_batch(request: Request, tenant: TenantHeader = "") -> dict[str, Any]:
    """A file of requests run as one durable job; `endpoint` is /v1/chat/completions, /v1/completions,
    /v1/embeddings or /v2/models/{model}/infer."""
    body = parse_json(BatchCreation, await read_body(request, 64 * 1024))
    creation = pb.CreateBatchRequest(
        input_file_id=body.input_file_id,
        endpoint=body.endpoint,
        completion_window=body.completion_window,
        metadata=body.metadata or {},
        tenant=tenant,
    )
    return batch_object(await _client(request).create_batch(creation))


@router.get("/v1/batches/{batch_id}")
async def retrieve_batch(request: Request, batch_id: str, tenant: TenantHeader = "") -> dict[str, Any]:
    return batch_object(await _client(request).batch(batch_id, tenant))


@router.post("/v1/batches/{batch_id}/cancel")
async def cancel_batch(request: Request, batch_id: str, tenant: TenantHeader = "") -> dict[str, Any]:
    return batch_object(await _client(request).cancel_batch(batch_id, tenant))


@router.get("/v1/batches")
async def list_batches(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: str = "",
    tenant: TenantHeader = "",
) -> dict[str, Any]:
    reply = await _client(request).batches(pb.ListBatchesRequest(tenant=tenant, limit=limit, after=after))
    return _page([batch_object(b) for b in reply.batches], reply.has_more)
