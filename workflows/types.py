"""Inputs and outputs of the job workflow and its activities: plain dataclasses, safe in the sandbox.

Fields are only ever added (with defaults), so running workflows keep decoding their history.
"""

from __future__ import annotations

from dataclasses import dataclass

WORKFLOW_NAME = "aisf.BatchInference"
INFER_ITEMS = "aisf.infer_items"
FINISH_JOB = "aisf.finish_job"

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


@dataclass
class InferItemsInput:
    job_id: str
    model_name: str
    model_version: str
    items_total: int
    # Split each request into engine calls of at most this many rows; 0 sends requests whole.
    max_rows: int = 0


@dataclass
class FinishJobInput:
    job_id: str
    state: str
    error_type: str = ""
    error_message: str = ""
