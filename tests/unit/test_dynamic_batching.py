"""Dynamic batching merges concurrent requests into fewer engine calls with unchanged answers, dispatches a
preferred batch at once, merges only requests that mean the same, and bounds its queue."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from aisf.adapters.base import ModelAdapter, ModelSpec
from aisf.adapters.xgboost_engine import XGBoostAdapter
from aisf.services.common.errors import EngineOverloaded, ModelNotReady
from aisf.services.common.model_config import CircuitBreakerConfig, DynamicBatching, load_model_config
from aisf.services.common.tensors import InferRequest, Tensor
from aisf.services.router.breaker import CircuitBreaker
from aisf.services.router.engine_calls import EngineCalls, Retired
from aisf.services.router.executors import DirectExecutor, DynamicBatcher
from aisf.services.router.statistics import ModelStatistics
from aisf.services.samples import build_tabular_demo
from tests.support.dataplanes import routing, rows
from tests.support.python_models import slow_echo


@pytest.fixture
async def tabular(tmp_path: Path) -> XGBoostAdapter:
    model_dir = build_tabular_demo(tmp_path)
    adapter = XGBoostAdapter()
    await adapter.load(ModelSpec("tabular-demo", 1, model_dir / "1", load_model_config(model_dir)))
    return adapter


def _calls(instances: int = 1, max_waiting: int = 256) -> EngineCalls:
    breaker = CircuitBreaker("tabular-demo", "1", CircuitBreakerConfig())
    return EngineCalls("model 'tabular-demo'", instances, max_waiting, breaker)


def _batcher(
    adapter: ModelAdapter, stats: ModelStatistics, max_batch: int, policy: DynamicBatching, waiting: int = 256
) -> DynamicBatcher:
    return DynamicBatcher(adapter, stats, _calls(max_waiting=waiting), max_batch, policy)


def _row(i: int) -> InferRequest:
    features = np.linspace(-2, 2, 4, dtype=np.float32)[None, :] * (i + 1) / 8
    return InferRequest("tabular-demo", "1", [Tensor.from_numpy("input__0", features)], id=str(i))


async def test_32_concurrent_requests_reach_the_engine_as_fewer_calls_with_identical_results(
    tabular: XGBoostAdapter,
) -> None:
    expected = [(await tabular.infer(_row(i))).outputs[0].data for i in range(32)]
    stats = ModelStatistics("tabular-demo", "1")
    batcher = _batcher(tabular, stats, 64, DynamicBatching(max_queue_delay_microseconds=20_000))
    results = await asyncio.gather(*(batcher.execute(_row(i), 1) for i in range(32)))
    await batcher.close(1)
    for (response, timing), want in zip(results, expected, strict=True):
        np.testing.assert_array_equal(response.outputs[0].data, want)
        assert response.outputs[0].shape == (1, 1)
        assert timing.batch_size > 1
    assert stats.execution_count < 32
    assert sum(size * b.compute_infer.count for size, b in stats.batches.items()) == 32
    assert max(stats.batches) > 1


async def test_preferred_batch_size_dispatches_without_waiting_for_the_delay(tabular: XGBoostAdapter) -> None:
    stats = ModelStatistics("tabular-demo", "1")
    policy = DynamicBatching(max_queue_delay_microseconds=10_000_000, preferred_batch_size=[4])
    batcher = _batcher(tabular, stats, 64, policy)
    started = time.monotonic()
    await asyncio.gather(*(batcher.execute(_row(i), 1) for i in range(4)))
    await batcher.close(1)
    assert time.monotonic() - started < 5
    assert stats.batches.keys() == {4}


async def test_a_preferred_batch_leaves_without_the_requests_queued_behind_it(
    tabular: XGBoostAdapter,
) -> None:
    """Five queued, preferred size 4: a batch of 4 at once; the fifth waits its own delay (1 s here).
    On the landed main the batcher took the fifth too and held all five for the whole delay."""
    stats = ModelStatistics("tabular-demo", "1")
    policy = DynamicBatching(max_queue_delay_microseconds=1_000_000, preferred_batch_size=[4])
    batcher = _batcher(tabular, stats, 64, policy)
    tasks = [asyncio.create_task(batcher.execute(_row(i), 1)) for i in range(5)]
    await asyncio.wait_for(asyncio.gather(*tasks[:4]), 0.5)
    assert not tasks[4].done()
    await asyncio.gather(*tasks)
    await batcher.close(1)
    assert sorted(stats.batches) == [1, 4]


async def test_batch_never_exceeds_max_batch_size(tabular: XGBoostAdapter) -> None:
    stats = ModelStatistics("tabular-demo", "1")
    batcher = _batcher(tabular, stats, 8, DynamicBatching(max_queue_delay_microseconds=50_000))
    await asyncio.gather(*(batcher.execute(_row(i), 1) for i in range(20)))
    await batcher.close(1)
    assert max(stats.batches) <= 8
    assert stats.execution_count >= 3


async def test_engine_error_fails_every_request_of_the_batch_and_the_batcher_keeps_serving(
    tabular: XGBoostAdapter,
) -> None:
    stats = ModelStatistics("tabular-demo", "1")
    batcher = _batcher(tabular, stats, 64, DynamicBatching(max_queue_delay_microseconds=5_000))
    await tabular.unload()
    outcomes = await asyncio.gather(*(batcher.execute(_row(i), 1) for i in range(4)), return_exceptions=True)
    assert all(isinstance(o, ModelNotReady) for o in outcomes)
    await batcher.close(1)


async def test_direct_executor_bounds_concurrency_to_instance_count(tabular: XGBoostAdapter) -> None:
    stats = ModelStatistics("tabular-demo", "1")
    executor = DirectExecutor(tabular, stats, _calls(instances=2))
    await asyncio.gather(*(executor.execute(_row(i), 1) for i in range(6)))
    assert stats.execution_count == 6
    assert stats.batches.keys() == {1}


async def test_closing_answers_every_queued_request_and_lets_the_running_batch_finish(
    tabular: XGBoostAdapter,
) -> None:
    """Requests still queued are retired (the dataplane moves them on); none is left hanging. On the
    landed main, one taken off the queue by the dispatcher was answered by no one."""
    stats = ModelStatistics("tabular-demo", "1")
    batcher = _batcher(tabular, stats, 64, DynamicBatching(max_queue_delay_microseconds=2_000_000))
    waiting = asyncio.create_task(batcher.execute(_row(0), 1))
    await asyncio.sleep(0.05)  # the dispatcher holds it, waiting out the 2 s delay
    await asyncio.wait_for(batcher.close(1), 1)
    with pytest.raises(Retired):
        await asyncio.wait_for(waiting, 1)


async def test_a_full_queue_refuses_at_once_with_a_retry_hint(tabular: XGBoostAdapter) -> None:
    stats = ModelStatistics("tabular-demo", "1")
    batcher = _batcher(tabular, stats, 64, DynamicBatching(max_queue_delay_microseconds=500_000), waiting=4)
    queued = [asyncio.create_task(batcher.execute(_row(i), 1)) for i in range(4)]
    await asyncio.sleep(0)
    with pytest.raises(EngineOverloaded) as refused:
        await batcher.execute(_row(9), 1)
    assert refused.value.retry_after is not None and refused.value.http_status == 429
    assert len(await asyncio.gather(*queued)) == 4
    await batcher.close(1)


async def test_requests_merge_only_with_the_same_parameters_which_reach_the_engine_either_way(
    tmp_path: Path,
) -> None:
    """A request parameter means the same whether or not the request was merged with others (on the
    landed main parameters were dropped only when two or more requests were merged)."""
    slow_echo(
        tmp_path / "models",
        delay_s=0.05,
        dynamic_batching={"max_queue_delay_microseconds": 100_000},
    )
    async with routing(tmp_path / "models") as router:
        tags = [1, 1, 2, 2, 2]
        answers = await asyncio.gather(
            *(router.dataplane.infer(rows("slow-echo", [[i, i]], tag=tag)) for i, tag in enumerate(tags))
        )
        stats = router.repository.get("slow-echo").stats
    for answer, tag in zip(answers, tags, strict=True):
        assert answer.outputs[1].name == "tag" and float(answer.outputs[1].data[0, 0]) == tag
    assert sorted(stats.batches) == [2, 3]  # one batch per parameter value
