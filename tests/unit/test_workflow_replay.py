"""The job workflow stays deterministic: histories recorded from real runs replay against today's code.

A change that breaks replay would break every job in flight during a deploy; such a change needs
`workflow.patched()` and a new recorded history, not an edit of the old one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from aisf.workflows.batch_inference import BatchInferenceWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_recorded_history_replays_without_nondeterminism(path: Path) -> None:
    history = WorkflowHistory.from_json(f"recorded-{path.stem}", path.read_text(encoding="utf-8"))
    result = await Replayer(workflows=[BatchInferenceWorkflow]).replay_workflow(
        history, raise_on_replay_failure=True
    )
    assert result.replay_failure is None


def test_the_recorded_histories_cover_success_out_of_memory_cancellation_and_batches() -> None:
    kinds = {p.stem for p in HISTORIES}
    assert kinds == {"succeeded", "out_of_memory_halved", "cancelled", "batch_completed", "batch_expired"}
    events = json.loads((Path(__file__).parent / "histories" / "out_of_memory_halved.json").read_text())[
        "events"
    ]
    failed = [e for e in events if e["eventType"] == "EVENT_TYPE_ACTIVITY_TASK_FAILED"]
    assert failed, "the OOM history must hold the failed attempts the workflow halves after"
