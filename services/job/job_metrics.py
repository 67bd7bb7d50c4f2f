"""Job-lane gauges for Prometheus: jobs by state, the age of the oldest queued job, and Temporal's
task-queue backlog. A background task refreshes them (a scrape never waits on the database or
Temporal, and a table of millions of jobs is counted once per interval, not once per scrape)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from aisf.services.job.model import JobState
from aisf.services.job.store import JobStore

log = logging.getLogger(__name__)

_QUEUE_TYPES = {
    "workflow": TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    "activity": TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
}


class JobGauges(Collector):
    def __init__(
        self, store: JobStore, temporal: Client, namespace: str, task_queues: Sequence[str], every_s: float
    ) -> None:
        self._store = store
        self._temporal = temporal
        self._namespace = namespace
        self._task_queues = tuple(dict.fromkeys(q for q in task_queues if q))
        self._every_s = every_s
        self._states: dict[str, int] = {}
        self._oldest_queued: datetime | None = None
        self._backlog: dict[tuple[str, str], int] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self, registry: CollectorRegistry) -> None:
        registry.register(self)
        self._task = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def refresh(self) -> None:
        try:
            self._states, self._oldest_queued = await self._store.backlog()
        except Exception as exc:  # a scrape shows the last good numbers; the log says why they are old
            log.warning("job gauges: the job store did not answer", extra={"error": repr(exc)})
        for queue in self._task_queues:
            for kind, queue_type in _QUEUE_TYPES.items():
                try:
                    reply = await self._temporal.workflow_service.describe_task_queue(
                        DescribeTaskQueueRequest(
                            namespace=self._namespace,
                            task_queue=TaskQueue(name=queue),
                            task_queue_type=queue_type,
                            include_task_queue_status=True,
                        ),
                        timeout=timedelta(seconds=self._every_s),
                    )
                except Exception as exc:
                    log.debug("job gauges: Temporal did not answer", extra={"error": repr(exc)})
                    continue
                self._backlog[(queue, kind)] = int(reply.task_queue_status.backlog_count_hint)

    async def _refresh_forever(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self._every_s)

    def collect(self) -> Iterator[Metric]:
        states = GaugeMetricFamily("aisf_jobs", "Durable jobs by state", labels=["state"])
        for state in JobState:
            states.add_metric([state.value], self._states.get(state.value, 0))
        yield states
        age = GaugeMetricFamily(
            "aisf_job_backlog_age_seconds", "Age of the oldest job still queued (0: none waits)"
        )
        oldest = self._oldest_queued
        age.add_metric([], (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0)
        yield age
        backlog = GaugeMetricFamily(
            "aisf_temporal_backlog",
            "Tasks waiting in a Temporal task queue (Temporal's backlog hint)",
            labels=["task_queue", "type"],
        )
        for (queue, kind), count in sorted(self._backlog.items()):
            backlog.add_metric([queue, kind], count)
        yield backlog
