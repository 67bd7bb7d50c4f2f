"""The dataplane's edges under faults: callers that leave or run out of time in a batcher's queue, the
deadline a batch runs under, whose timeout opens a circuit, plugin exceptions, promotion and reloads of
shadows, canary keys, fallback kinds a model's lane can answer with."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from aisf.adapters.base import Health, ModelMetadata, ModelSpec
from aisf.services.common import deadlines
from aisf.services.common.errors import (
    DeadlineExceeded,
    InternalError,
    ModelLoadFailed,
    ShadowNotFound,
    ShadowNotPromotable,
)
from aisf.services.common.model_config import CircuitBreakerConfig
from aisf.services.common.tensors import InferRequest, InferResponse, Tensor, TensorSpec
from aisf.services.router.breaker import BreakerState, CircuitBreaker
from aisf.services.router.engine_calls import EngineCalls
from aisf.services.router.executors import DirectExecutor
from aisf.services.router.statistics import ModelStatistics
from tests.support.dataplanes import routing, rows
from tests.support.python_models import deadline_echo, flaky_sum, slow_echo

BATCHING = {"dynamic_batching": {"max_queue_delay_microseconds": 0}, "instance_count": 1}


async def test_callers_that_left_a_batchers_queue_neither_fill_it_nor_count_as_its_depth(
    tmp_path: Path,
) -> None:
    slow_echo(tmp_path / "models", delay_s=0.4, max_queue_size=8, **BATCHING)
    async with routing(tmp_path / "models") as router:
        busy = asyncio.create_task(router.dataplane.infer(rows("slow-echo", [[0, 0]])))
        await asyncio.sleep(0.05)  # the engine is busy: what comes now queues
        executor = router.repository.get("slow-echo").executor
        leaving = [asyncio.create_task(router.dataplane.infer(rows("slow-echo", [[i, i]]))) for i in range(8)]
        await asyncio.sleep(0.02)
        assert executor.queue_depth() == 8
        for caller in leaving:
            caller.cancel()
        await asyncio.gather(*leaving, return_exceptions=True)
        assert executor.queue_depth() == 0
        answer = await router.dataplane.infer(rows("slow-echo", [[9, 9]]))  # not refused as a full queue
        assert float(answer.outputs[0].data[0, 0]) == 9.0
        await busy


async def test_a_request_whose_deadline_passes_in_a_batchers_queue_is_answered_while_the_engine_is_busy(
    tmp_path: Path,
) -> None:
    slow_echo(tmp_path / "models", delay_s=0.6, **BATCHING)
    async with routing(tmp_path / "models") as router:
        busy = asyncio.create_task(router.dataplane.infer(rows("slow-echo", [[0, 0]])))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with deadlines.bound(0.1), pytest.raises(DeadlineExceeded, match="did not run"):
            await router.dataplane.infer(rows("slow-echo", [[1, 1]]))
        assert time.monotonic() - started < 0.3  # not when the engine frees up (0.55 s from now)
        assert router.repository.get("slow-echo").executor.queue_depth() == 0
        await busy


async def test_a_batch_runs_under_the_deadline_of_its_most_patient_member(tmp_path: Path) -> None:
    """A remote engine cuts its call at the deadline it sees: a merged call must see one, the latest of
    its members' (none if a member has none)."""
    deadline_echo(tmp_path / "models", delay_s=0.2, **BATCHING)
    async with routing(tmp_path / "models") as router:

        async def infer(timeout_s: float | None) -> float:
            with deadlines.bound(timeout_s):
                answer = await router.dataplane.infer(rows("deadline-echo", [[1, 1]]))
            return float(answer.outputs[1].data[0, 0])

        busy = asyncio.create_task(infer(None))
        await asyncio.sleep(0.05)
        lefts = await asyncio.gather(infer(2.0), infer(5.0))  # queued together behind `busy`
        assert lefts[0] == lefts[1] and 4.0 < lefts[0] < 5.0
        assert await busy == -1.0
        mixed = asyncio.create_task(infer(None))
        await asyncio.sleep(0.05)
        assert await asyncio.gather(infer(3.0), infer(None)) == [-1.0, -1.0]
        await mixed


class _RaisingPlugin:
    """An adapter from a third-party plugin whose engine raises its own exception type."""

    async def load(self, spec: ModelSpec) -> ModelMetadata:
        return ModelMetadata([TensorSpec("x", "FP32", (-1, 2))], [TensorSpec("y", "FP32", (-1, 2))], "plugin")

    async def infer(self, request: InferRequest) -> InferResponse:
        raise ValueError("the plugin's own failure")

    async def health(self) -> Health:
        return Health(ready=True)

    async def unload(self) -> None:
        return None


async def test_a_plugins_own_exception_is_a_typed_internal_error_that_the_breaker_counts() -> None:
    breaker = CircuitBreaker("plugin", "1", CircuitBreakerConfig(failures=1))
    executor = DirectExecutor(
        _RaisingPlugin(), ModelStatistics("plugin", "1"), EngineCalls("plugin", 1, 4, breaker)
    )
    request = InferRequest("plugin", "1", [Tensor.from_numpy("x", np.ones((1, 2), np.float32))])
    with pytest.raises(InternalError, match="ValueError: the plugin's own failure"):
        await executor.execute(request, 1)
    assert breaker.state is BreakerState.OPEN


async def test_only_a_timeout_the_engine_caused_opens_the_circuit_not_the_callers_own_deadline() -> None:
    breaker = CircuitBreaker("remote", "1", CircuitBreakerConfig(failures=1))
    calls = EngineCalls("remote", 4, 4, breaker)

    async def remote_call() -> None:  # a remote adapter cuts its call at what the deadline leaves
        await asyncio.sleep(deadlines.capped(0.05))
        raise DeadlineExceeded("remote: no answer in time")

    for _ in range(3):
        with deadlines.bound(0.01), pytest.raises(DeadlineExceeded):
            await calls.call(remote_call)
    assert breaker.state is BreakerState.CLOSED  # the callers' budgets ran out, not the engine
    with pytest.raises(DeadlineExceeded):
        await calls.call(remote_call)  # its own timeout (no caller deadline): the engine is slow
    assert breaker.state is BreakerState.OPEN


def _two_versions(models: Path, **config: object) -> Path:
    model_dir = slow_echo(models, delay_s=0.0)
    shutil.copytree(model_dir / "1", model_dir / "2")
    _configure(model_dir, version_policy={"all": True}, **config)
    return model_dir


def _configure(model_dir: Path, **settings: object) -> None:
    config = yaml.safe_load((model_dir / "config.yaml").read_text())
    config.update(settings)
    (model_dir / "config.yaml").write_text(yaml.safe_dump(config))


async def test_a_shadow_promoted_before_any_copy_stays_promoted_and_gets_no_copies(tmp_path: Path) -> None:
    _two_versions(tmp_path / "models", shadow={"version": "2", "sample": 1.0})
    async with routing(tmp_path / "models") as router:
        assert router.control.promote_shadow("slow-echo", force=True).promoted
        for _ in range(5):
            assert (await router.dataplane.infer(rows("slow-echo", [[1, 1]]))).model_version == "2"
        await asyncio.sleep(0.05)
        report = router.control.shadow_report("slow-echo")
        assert report.promoted and report.offered == 0  # version 2 does not shadow itself
        with pytest.raises(ShadowNotPromotable, match="already promoted"):
            router.control.promote_shadow("slow-echo", force=True)


async def test_a_reload_without_the_shadow_stops_its_copies(tmp_path: Path) -> None:
    model_dir = _two_versions(tmp_path / "models", shadow={"version": "2", "sample": 1.0})
    async with routing(tmp_path / "models") as router:
        await router.dataplane.infer(rows("slow-echo", [[1, 1]]))
        assert len(router.shadows.reports()) == 1
        _configure(model_dir, shadow=None)
        await router.repository.load("slow-echo")
        await asyncio.sleep(0.05)
        assert router.shadows.reports() == []  # no mirror left exporting stale numbers
        with pytest.raises(ShadowNotFound):
            router.control.shadow_report("slow-echo")


async def test_callers_without_a_sticky_key_are_spread_over_the_routes_not_sent_to_one(
    tmp_path: Path,
) -> None:
    traffic = {
        "routes": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}],
        "sticky_parameter": "user",
    }
    _two_versions(tmp_path / "models", traffic=traffic)
    async with routing(tmp_path / "models") as router:
        served = {
            (await router.dataplane.infer(rows("slow-echo", [[1, 1]], user=""))).model_version
            for _ in range(60)
        }
    assert served == {"1", "2"}


async def test_a_reload_with_an_invalid_fallback_fails_and_leaves_the_kept_version_as_it_was(
    tmp_path: Path,
) -> None:
    """A routing-only change keeps the engine, but is checked like any load, and applies all or nothing."""
    model_dir = flaky_sum(tmp_path / "models", circuit_breaker={"failures": 7})
    async with routing(tmp_path / "models") as router:
        engine = router.repository.get("flaky").adapter
        bad_rule = {"outputs": [{"name": "nope", "datatype": "FP32", "dims": [1], "data": [0.0]}]}
        _configure(model_dir, circuit_breaker={"failures": 2}, fallback=bad_rule)
        with pytest.raises(ModelLoadFailed, match="fallback output 'nope'"):
            await router.repository.load("flaky")
        kept = router.repository.get("flaky")
        assert kept.adapter is engine and kept.config.fallback is None
        assert router.control.status("flaky").versions[0].breaker.threshold == 7


async def test_a_tensor_model_refuses_a_message_fallback_at_load(tmp_path: Path) -> None:
    flaky_sum(tmp_path / "models", fallback={"message": "resting"})
    async with routing(tmp_path / "models") as router:
        with pytest.raises(ModelLoadFailed, match="fallback.message answers generative models only"):
            await router.repository.load("flaky")
