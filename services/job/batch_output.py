"""The end of an OpenAI batch: its answered lines go to an output file, its failed ones (and those never
run, when cancelled or expired) to an error file, in OpenAI's line format, and the batch gets its final
status. Written by an activity that may run again: the files keep fixed ids, a rerun rewrites them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
from tritonclient.grpc import service_pb2 as pb

from aisf.services.common import v2_codec
from aisf.services.common.v2_json import response_document
from aisf.services.job.batch_store import BatchStore, FileInfo
from aisf.services.job.file_storage import FileStorage
from aisf.services.job.model import JobKind, StoredItem, item_request_id
from aisf.services.job.store import JobStore

OUTPUT_PURPOSE = "batch_output"
_PAGE = 500
_FLUSH_BYTES = 1 << 20  # lines are handed to the file storage in pieces of about this size
_NO_LIMIT = 1 << 50  # an output file is as large as its answers are
_NOT_RUN = {
    "cancelled": ("batch_cancelled", "The batch was cancelled before this request ran."),
    "expired": ("batch_expired", "This request could not be executed before the completion window expired."),
    "failed": ("batch_failed", "The batch failed before this request ran."),
}


def output_file_id(batch_id: str, errors: bool) -> str:
    return f"file-{batch_id.removeprefix('batch_')}-{'errors' if errors else 'output'}"


def _body(item: StoredItem, kind: JobKind) -> Any:
    assert item.response is not None
    if kind is JobKind.V2 and item.status == 200:
        response = v2_codec.response_from_proto(pb.ModelInferResponse.FromString(item.response))
        document, _ = response_document(response, {}, json_only=True)
        return orjson.loads(orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY))
    return orjson.loads(item.response)


def _line(batch_id: str, item: StoredItem, kind: JobKind, status: str) -> tuple[bytes, bool]:
    """One output line and whether it belongs to the error file."""
    entry: dict[str, Any] = {"id": f"batch_req_{uuid.uuid4().hex}", "custom_id": item.custom_id}
    if item.status is None or item.response is None:
        code, message = _NOT_RUN.get(status, _NOT_RUN["failed"])
        entry.update(response=None, error={"code": code, "message": message})
        failed = True
    else:
        response = {
            "status_code": item.status,
            "request_id": item_request_id(batch_id, item.idx),
            "body": _body(item, kind),
        }
        entry.update(response=response, error=None)
        failed = item.status != 200
    return orjson.dumps(entry) + b"\n", failed


class BatchFinalizer:
    def __init__(self, jobs: JobStore, batches: BatchStore, storage: FileStorage) -> None:
        self._jobs = jobs
        self._batches = batches
        self._storage = storage

    async def in_progress(self, batch_id: str) -> None:
        batch = await self._batches.batch(batch_id)
        if batch is not None and batch.status == "validating":
            await self._batches.set_status(batch_id, "in_progress")

    async def finalize(self, batch_id: str, status: str, error_code: str, error_message: str) -> None:
        batch, job = await self._batches.batch(batch_id), await self._jobs.get(batch_id)
        if batch is None or job is None:
            return
        if status == "completed":
            await self._batches.set_status(batch_id, "finalizing")
        counts = await self._jobs.status_counts(batch_id)
        answered = counts.get(200, 0)
        output_id = error_id = None
        # One pass over the items per file: memory stays bounded however large the batch.
        if answered:
            output_id = await self._write(batch_id, batch.tenant, job.kind, status, errors=False)
        if sum(counts.values()) > answered:
            error_id = await self._write(batch_id, batch.tenant, job.kind, status, errors=True)
        await self._batches.set_status(batch_id, status, output_id, error_id)

    async def _lines(self, batch_id: str, kind: JobKind, status: str, errors: bool) -> AsyncIterator[bytes]:
        piece = bytearray()
        offset = 0
        while page := await self._jobs.items(batch_id, offset, _PAGE):
            for item in page:
                line, failed = _line(batch_id, item, kind, status)
                if failed == errors:
                    piece += line
            if len(piece) >= _FLUSH_BYTES:
                yield bytes(piece)
                piece.clear()
            offset = page[-1].idx + 1
        if piece:
            yield bytes(piece)

    async def _write(self, batch_id: str, tenant: str, kind: JobKind, status: str, errors: bool) -> str:
        file_id = output_file_id(batch_id, errors)
        size = await self._storage.put(file_id, self._lines(batch_id, kind, status, errors), _NO_LIMIT)
        name = f"{batch_id}_{'errors' if errors else 'output'}.jsonl"
        await self._batches.add_file(
            FileInfo(file_id, tenant, OUTPUT_PURPOSE, name, size, file_id, datetime.now(UTC)), replace=True
        )
        return file_id
