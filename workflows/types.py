"""Inputs and outputs of the job workflow and its activities: plain dataclasses, safe in the sandbox.

Fields are only ever added (with defaults), so running workflows keep decoding their history.
"""

from __future__ import annotations

from dataclasses import dataclass

WORKFLOW_NAME = "aisf.BatchInference"
INFER_ITEMS = "aisf.infer_items"
FINISH_JOB = "aisf.finish_job"
FINALIZE_BATCH = "aisf.finalize_batch"

# ApplicationError types (our error reasons) that no retry can fix.
NON_RETRYABLE = [
    "invalid_input",
    "model_not_found",
    "model_load_failed",
    "engine_out_of_memory",
    "unimplemented",
]
OUT_OF_MEMORY = "engine_out_of_memory"
WORKER_SHUTDOWN = "worker_shutdown"


@dataclass
class JobInput:
    job_id: str
    model_name: str
    model_version: str
    items_total: int
    max_attempts: int = 4
    heartbeat_timeout_s: float = 30.0
    large_task_queue: str = ""
    kind: str = "v2"
    tenant: str = ""
    # OpenAI batches: items fail one by one (their errors go to the error file), the lines answered are
    # written out at the end, and the batch expires after this many seconds (0: never).
    batch: bool = False
    expires_in_s: float = 0.0


@dataclass
class InferItemsInput:
    job_id: str
    model_name: str
    model_version: str
    items_total: int
    # Split each request into engine calls of at most this many rows; 0 sends requests whole.
    max_rows: int = 0
    kind: str = "v2"
    tenant: str = ""
    batch: bool = False
    # Where an earlier activity of this job stopped (out of memory, moved queue): no item redone.
    resume_from: int = 0


@dataclass
class FinishJobInput:
    job_id: str
    state: str
    error_type: str = ""
    error_message: str = ""


@dataclass
class FinalizeBatchInput:
    batch_id: str
    # The batch's final status: completed, failed, cancelled or expired.
    status: str
    error_code: str = ""
    error_message: str = ""
