"""Dynamic batching merges concurrent requests into fewer engine calls with unchanged answers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from aisf.adapters.base import ModelSpec
from aisf.adapters.xgboost_engine import XGBoostAdapter
from aisf.services.common.errors import InternalError, ModelNotReady
from aisf.services.common.model_config import DynamicBatching, load_model_config
from aisf.services.common.tensors import InferRequest, Tensor
from aisf.services.router.executors import DirectExecutor, DynamicBatcher
from aisf.services.router.statistics import ModelStatistics
from aisf.services.samples import build_tabular_demo


@pytest.fixture
async def tabular(tmp_path: Path) -> XGBoostAdapter:
    model_dir = build_tabular_demo(tmp_path)
    adapter = XGBoostAdapter()
    await adapter.load(ModelSpec("tabular-demo", 1, model_dir / "1", load_model_config(model_dir)))
    return adapter


def _row(i: int) -> InferRequest:
    features = np.linspace(-2, 2, 4, dtype=np.float32)[None, :] * (i + 1) / 8
    return InferRequest("tabular-demo", "1", [Tensor.from_numpy("input__0", features)], id=str(i))


async def test_32_concurrent_requests_reach_the_engine_as_fewer_calls_with_identical_results(
    tabular: XGBoostAdapter,
) -> None:
    expected = [(await tabular.infer(_row(i))).outputs[0].data for i in range(32)]
    stats = ModelStatistics("tabular-demo", "1")
    batcher = DynamicBatcher(tabular, stats, 1, 64, DynamicBatching(max_queue_delay_microseconds=20_000))
    results = await asyncio.gather(*(batcher.execute(_row(i), 1) for i in range(32)))
    await batcher.close()
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
    batcher = DynamicBatcher(tabular, stats, 1, 64, policy)
    started = time.monotonic()
    await asyncio.gather(*(batcher.execute(_row(i), 1) for i in range(4)))
    await batcher.close()
    assert time.monotonic() - started < 5
    assert stats.batches.keys() == {4}


async def test_batch_never_exceeds_max_batch_size(tabular: XGBoostAdapter) -> None:
    stats = ModelStatistics("tabular-demo", "1")
    batcher = DynamicBatcher(tabular, stats, 1, 8, DynamicBatching(max_queue_delay_microseconds=50_000))
    await asyncio.gather(*(batcher.execute(_row(i), 1) for i in range(20)))
    await batcher.close()
    assert max(stats.batches) <= 8
    assert stats.execution_count >= 3


async def test_engine_error_fails_every_request_of_the_batch_and_the_batcher_keeps_serving(
    tabular: XGBoostAdapter,
) -> None:
    stats = ModelStatistics("tabular-demo", "1")
    batcher = DynamicBatcher(tabular, stats, 1, 64, DynamicBatching(max_queue_delay_microseconds=5_000))
    await tabular.unload()
    outcomes = await asyncio.gather(*(batcher.execute(_row(i), 1) for i in range(4)), return_exceptions=True)
    assert all(isinstance(o, ModelNotReady) for o in outcomes)
    await batcher.close()


async def test_direct_executor_bounds_concurrency_to_instance_count(tabular: XGBoostAdapter) -> None:
    stats = ModelStatistics("tabular-demo", "1")
    executor = DirectExecutor(tabular, stats, instances=2)
    await asyncio.gather(*(executor.execute(_row(i), 1) for i in range(6)))
    assert stats.execution_count == 6
    assert stats.batches.keys() == {1}


async def test_an_idle_batcher_runs_a_lone_request_at_once_and_close_answers_the_queued(
    tabular: XGBoostAdapter,
) -> None:
    stats = ModelStatistics("tabular-demo", "1")
    batcher = DynamicBatcher(tabular, stats, 1, 64, DynamicBatching(max_queue_delay_microseconds=0))
    response, timing = await batcher.execute(_row(0), 1)
    assert timing.batch_size == 1 and response.outputs[0].shape == (1, 1)
    busy = [asyncio.create_task(batcher.execute(_row(i), 1)) for i in range(8)]
    await asyncio.sleep(0)
    await batcher.close()
    outcomes = await asyncio.gather(*busy, return_exceptions=True)
    answered = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, InternalError)]
    assert len(answered) + len(refused) == 8
