"""Temporal workers for the job workflow, one per task queue, shut down gracefully on SIGTERM."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from aisf.workflows.activities import JobActivities
from aisf.workflows.batch_inference import BatchInferenceWorkflow


@dataclass(slots=True)
class RunningWorkers:
    workers: list[Worker]
    tasks: list[asyncio.Task[None]]

    async def stop(self) -> None:
        """Stop polling; running activities see is_worker_shutdown(), checkpoint and hand over."""
        await asyncio.gather(*(w.shutdown() for w in self.workers))
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def start_workers(
    client: Client,
    task_queues: Sequence[str],
    activities: JobActivities,
    max_concurrent_activities: int,
    graceful_shutdown_s: float,
) -> RunningWorkers:
    workers = [
        Worker(
            client,
            task_queue=queue,
            workflows=[BatchInferenceWorkflow],
            activities=[activities.infer_items, activities.finish_job, activities.finalize_batch],
            max_concurrent_activities=max_concurrent_activities,
            graceful_shutdown_timeout=timedelta(seconds=graceful_shutdown_s),
            # Heartbeats carry checkpoints out and cancellation in: send them at least every second.
            default_heartbeat_throttle_interval=timedelta(seconds=1),
            max_heartbeat_throttle_interval=timedelta(seconds=1),
        )
        for queue in task_queues
    ]
    tasks = [asyncio.get_running_loop().create_task(w.run()) for w in workers]
    return RunningWorkers(workers, tasks)
