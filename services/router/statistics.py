"""Per-model-version inference statistics, in the units Triton reports (counts and nanoseconds)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclass(slots=True)
class BatchDurations:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass(slots=True)
class ExecutionTiming:
    """How long one request spent waiting for and inside one engine execution."""

    queue_ns: int
    compute_input_ns: int
    compute_infer_ns: int
    compute_output_ns: int
    batch_size: int


@dataclass(slots=True)
class ModelStatistics:
    name: str
    version: str
    last_inference_ms: int = 0
    inference_count: int = 0
    execution_count: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    batches: dict[int, BatchDurations] = field(default_factory=dict)

    def record_success(self, total_ns: int, batch_size: int, timing: ExecutionTiming) -> None:
        self.last_inference_ms = time.time_ns() // 1_000_000
        self.inference_count += batch_size
        self.success.add(total_ns)
        self.queue.add(timing.queue_ns)
        self.compute_input.add(timing.compute_input_ns)
        self.compute_infer.add(timing.compute_infer_ns)
        self.compute_output.add(timing.compute_output_ns)

    def record_failure(self, total_ns: int) -> None:
        self.last_inference_ms = time.time_ns() // 1_000_000
        self.fail.add(total_ns)

    def record_execution(self, timing: ExecutionTiming) -> None:
        """Once per engine call, whatever number of requests it merged."""
        self.execution_count += 1
        batch = self.batches.setdefault(timing.batch_size, BatchDurations())
        batch.compute_input.add(timing.compute_input_ns)
        batch.compute_infer.add(timing.compute_infer_ns)
        batch.compute_output.add(timing.compute_output_ns)
