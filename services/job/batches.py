"""The Files and Batch API dataplane behind their gRPC services (and the OpenAI REST routes over those):
files in the file storage, batches as jobs of the jobs lane."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aisf.services.common.errors import AisfError, BatchNotFound, FileNotFound, InvalidInput, JobNotFound
from aisf.services.job.batch_lines import MAX_NAME_CHARS, endpoint_of, parse_lines
from aisf.services.job.batch_output import BatchFinalizer
from aisf.services.job.batch_store import FINAL_STATUSES, BatchInfo, BatchStore, FileInfo
from aisf.services.job.file_storage import FileStorage
from aisf.services.job.model import Job, JobKind, JobState, NewItem, item_error_body
from aisf.services.job.service import JobService, Submission
from aisf.services.job.store import JobStore
from aisf.services.job.submit_checks import SubmitChecks

PURPOSES = frozenset({"batch", "batch_output"})
_UPLOADABLE = frozenset({"batch"})
_WINDOW = re.compile(r"^(\d+)([smh])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600}
_MAX_WINDOW_S = 7 * 24 * 3600
# A batch's final status from its job's, when the job ended without the workflow finalizing the batch.
_ENDED = {JobState.SUCCEEDED: "completed", JobState.FAILED: "failed", JobState.CANCELLED: "cancelled"}


@dataclass(frozen=True, slots=True)
class BatchView:
    batch: BatchInfo
    job: Job
    counts: dict[int | None, int]

    @property
    def completed(self) -> int:
        return self.counts.get(200, 0)

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.counts.items() if status not in (None, 200))


def window_seconds(window: str) -> int:
    """OpenAI's "24h"; shorter windows ("90s", "30m") too, up to a week."""
    found = _WINDOW.match(window)
    seconds = int(found[1]) * _UNIT_S[found[2]] if found else 0
    if not 0 < seconds <= _MAX_WINDOW_S:
        raise InvalidInput(f"completion_window: must be like 24h, 30m or 90s (at most 168h), not '{window}'")
    return seconds


class FileService:
    def __init__(self, store: BatchStore, storage: FileStorage, max_bytes: int) -> None:
        self._store = store
        self._storage = storage
        self._max_bytes = max_bytes

    async def upload(
        self, tenant: str, filename: str, purpose: str, chunks: AsyncIterator[bytes]
    ) -> FileInfo:
        if purpose not in _UPLOADABLE:
            raise InvalidInput(f"purpose: must be one of {sorted(_UPLOADABLE)}, not '{purpose}'")
        if not filename:
            raise InvalidInput("file: needs a filename")
        if len(filename) > MAX_NAME_CHARS:
            raise InvalidInput(f"file: its filename exceeds {MAX_NAME_CHARS} characters")
        file_id = f"file-{uuid.uuid4().hex}"
        size = await self._storage.put(file_id, chunks, self._max_bytes)
        info = FileInfo(file_id, tenant, purpose, filename, size, file_id, datetime.now(UTC))
        await self._store.add_file(info)
        return info

    async def get(self, file_id: str, tenant: str) -> FileInfo:
        info = await self._store.file(file_id, tenant)
        if info is None:
            raise FileNotFound(f"file_id: no file '{file_id}'")
        return info

    async def content(self, file_id: str, tenant: str) -> AsyncIterator[bytes]:
        info = await self.get(file_id, tenant)
        return self._storage.get(info.storage_key)

    async def list(self, tenant: str, purpose: str, limit: int, after: str) -> tuple[list[FileInfo], bool]:
        if purpose and purpose not in PURPOSES:
            raise InvalidInput(f"purpose: must be one of {sorted(PURPOSES)}, not '{purpose}'")
        if not 0 <= limit <= 10_000:
            raise InvalidInput(f"limit: must be within 0..10000, got {limit}")
        size = limit or 100
        files = await self._store.files(tenant, purpose, size + 1, after)
        return files[:size], len(files) > size

    async def delete(self, file_id: str, tenant: str) -> None:
        info = await self.get(file_id, tenant)
        await self._store.delete_file(file_id, tenant)
        await self._storage.delete(info.storage_key)


class BatchService:
    def __init__(
        self,
        jobs: JobService,
        job_store: JobStore,
        store: BatchStore,
        files: FileService,
        checks: SubmitChecks,
        finalizer: BatchFinalizer,
    ) -> None:
        self._jobs = jobs
        self._job_store = job_store
        self._store = store
        self._files = files
        self._checks = checks
        self._finalizer = finalizer

    async def create(
        self, tenant: str, input_file_id: str, endpoint_path: str, window: str, metadata: dict[str, str]
    ) -> BatchView:
        """Check the file whole (JSON lines, one endpoint and model), each line alone (a malformed one
        fails by itself), then accept the batch as a job whose workflow starts from the outbox."""
        endpoint = endpoint_of(endpoint_path)
        seconds = window_seconds(window)
        if len(metadata) > 16 or any(len(k) > 64 or len(v) > 512 for k, v in metadata.items()):
            raise InvalidInput("metadata: at most 16 pairs, keys up to 64 and values up to 512 characters")
        info = await self._files.get(input_file_id, tenant)
        if info.purpose != "batch":
            raise InvalidInput(
                f"input_file_id: file '{input_file_id}' has purpose '{info.purpose}', not batch"
            )
        model, lines = await parse_lines(await self._files.content(input_file_id, tenant), endpoint)
        valid = [line.request for line in lines if line.error is None]
        checked = await self._checks.item_errors(endpoint.kind, model, endpoint.version, valid, len(lines))
        errors = iter(checked)
        items = [
            _item(line.custom_id, line.request, line.error or next(errors), endpoint.kind) for line in lines
        ]
        batch_id = f"batch_{uuid.uuid4().hex}"
        now = datetime.now(UTC)
        submission = Submission(
            model,
            endpoint.version,
            [item.request for item in items],
            tenant,
            kind=endpoint.kind,
            tier=await self._jobs.tier_for(tenant),
        )
        job = self._jobs.new_job(
            submission, batch_id, batch=True, expires_at=now + timedelta(seconds=seconds)
        )
        batch = BatchInfo(
            batch_id, tenant, endpoint.path, input_file_id, window, "validating", metadata, None, None, now,
            job.expires_at or now, {},
        )  # fmt: skip
        await self._jobs.accept(job, items, also=[batch.row()])
        return await self.get(batch_id, tenant)

    async def get(self, batch_id: str, tenant: str) -> BatchView:
        batch = await self._store.batch(batch_id, tenant)
        if batch is None:
            raise BatchNotFound(f"batch_id: no batch '{batch_id}'")
        try:
            job = await self._jobs.current(batch_id, batch=True)
        except JobNotFound:
            raise BatchNotFound(f"batch_id: no batch '{batch_id}'") from None
        if job.state.final and batch.status not in FINAL_STATUSES:
            # The job ended without its workflow finalizing the batch (terminated outside aisf, its
            # start refused): finish the batch now from what was answered.
            status = _ENDED[job.state] if job.error_type != "expired" else "expired"
            await self._finalizer.finalize(batch_id, status, job.error_type, job.error_message)
            batch = await self._store.batch(batch_id, tenant) or batch
        return BatchView(batch, job, await self._job_store.status_counts(batch_id))

    async def cancel(self, batch_id: str, tenant: str) -> BatchView:
        """Cancelling, then cancelled once the running lines stopped (their answers are kept)."""
        view = await self.get(batch_id, tenant)
        if view.batch.status in FINAL_STATUSES:
            return view
        await self._store.set_status(batch_id, "cancelling")
        if await self._job_store.cancel_unstarted(batch_id):
            await self._store.set_status(batch_id, "cancelled")
        else:
            await self._jobs.cancel(batch_id, batch=True)
        return await self.get(batch_id, tenant)

    async def list(self, tenant: str, limit: int, after: str) -> tuple[list[BatchView], bool]:
        if not 0 <= limit <= 100:
            raise InvalidInput(f"limit: must be within 0..100, got {limit}")
        size = limit or 20
        batches = await self._store.batches(tenant, size + 1, after)
        views = [await self.get(b.batch_id, tenant) for b in batches[:size]]
        return views, len(batches) > size


def _item(custom_id: str | None, request: bytes, error: AisfError | None, kind: JobKind) -> NewItem:
    if error is None:
        return NewItem(request, custom_id)
    return NewItem(request, custom_id, error.http_status, item_error_body(error, kind))
