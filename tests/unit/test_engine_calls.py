"""Calls into an engine: a slot is free only when the engine returned, each model runs on threads of its
own, and a reload or unload drains (queued requests move on, running ones finish, unload comes last)."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from aisf.services.common.errors import ModelNotReady
from aisf.services.common.threads import BlockingPool
from aisf.services.router.dataplane import STREAM_WINDOW, StreamItem
from tests.support.dataplanes import routing, rows
from tests.support.python_models import slow_echo


async def test_cancelled_callers_keep_their_slot_until_the_engine_returns(tmp_path: Path) -> None:
    """instance_count 1: four callers that give up while the engine runs must not let a second engine
    call start (the landed main freed the slot on cancellation: four engine calls ran at once)."""
    slow_echo(tmp_path / "models", delay_s=0.3, instance_count=1)
    async with routing(tmp_path / "models") as router:
        callers = [asyncio.create_task(router.dataplane.infer(rows("slow-echo", [[i, i]]))) for i in range(4)]
        await asyncio.sleep(0.05)
        for caller in callers:
            caller.cancel()
        await asyncio.gather(*callers, return_exceptions=True)
        await router.dataplane.infer(rows("slow-echo", [[9, 9]]))
        model = router.adapter_model("slow-echo")
        assert model.most_at_once == 1  # type: ignore[attr-defined]


async def test_a_model_busy_on_all_its_threads_does_not_hold_up_another_model(tmp_path: Path) -> None:
    """Each model has its own threads: eight long calls on one model (more than the event loop's shared
    pool has on this machine) leave another model, and blocking work elsewhere, answering at once."""
    slow_echo(tmp_path / "models", "busy", delay_s=1.0, instance_count=8)
    slow_echo(tmp_path / "models", "quick", delay_s=0.0)
    async with routing(tmp_path / "models") as router:
        busy = [asyncio.create_task(router.dataplane.infer(rows("busy", [[i, i]]))) for i in range(8)]
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await router.dataplane.infer(rows("quick", [[1, 1]]))
        await asyncio.to_thread(time.sleep, 0)  # the loop's own pool is free too
        assert time.monotonic() - started < 0.5
        await asyncio.gather(*busy)


async def test_a_pool_runs_at_most_its_threads_at_once() -> None:
    pool = BlockingPool("test", 2)
    running, most = 0, 0

    def work() -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        time.sleep(0.05)
        running -= 1

    await asyncio.gather(*(pool.run(work) for _ in range(6)))
    pool.close()
    assert most <= 2


async def test_unload_waits_for_the_running_call_and_unloads_the_engine_after_it(tmp_path: Path) -> None:
    slow_echo(tmp_path / "models", delay_s=0.3)
    async with routing(tmp_path / "models") as router:
        model = router.adapter_model("slow-echo")
        running = asyncio.create_task(router.dataplane.infer(rows("slow-echo", [[1, 2]])))
        await asyncio.sleep(0.05)
        await router.repository.unload("slow-echo")
        answer = await running
        np.testing.assert_array_equal(answer.outputs[0].data, [[1, 2]])
        assert model.events == ["infer", "done", "unload"]  # type: ignore[attr-defined]


def _slow_batching(models: Path, delay_us: int) -> None:
    slow_echo(models, delay_s=0.0, dynamic_batching={"max_queue_delay_microseconds": delay_us})


async def test_a_reload_serves_queued_requests_on_the_new_version_at_once(tmp_path: Path) -> None:
    """One request held by the batcher for its 2 s delay, then a reload: it is answered by the new
    engine at once (the landed main left it pending forever: no one answered it)."""
    _slow_batching(tmp_path / "models", 2_000_000)
    async with routing(tmp_path / "models") as router:
        old = router.adapter_model("slow-echo")
        queued = asyncio.create_task(router.dataplane.infer(rows("slow-echo", [[3, 4]])))
        await asyncio.sleep(0.05)
        _touch_artifact(tmp_path / "models" / "slow-echo")
        await asyncio.wait_for(router.repository.load("slow-echo"), 1)
        answer = await asyncio.wait_for(queued, 2.5)
        new = router.adapter_model("slow-echo")
    np.testing.assert_array_equal(answer.outputs[0].data, [[3, 4]])
    assert new is not old and old.calls == 0 and new.calls == 1  # type: ignore[attr-defined]


async def test_unloading_answers_queued_requests_unavailable_naming_the_model(tmp_path: Path) -> None:
    _slow_batching(tmp_path / "models", 2_000_000)
    async with routing(tmp_path / "models") as router:
        queued = [asyncio.create_task(router.dataplane.infer(rows("slow-echo", [[i, i]]))) for i in range(3)]
        await asyncio.sleep(0.05)
        await asyncio.wait_for(router.repository.unload("slow-echo"), 1)
        for outcome in await asyncio.gather(*queued, return_exceptions=True):
            assert isinstance(outcome, ModelNotReady)
            assert "slow-echo" in outcome.message and outcome.http_status == 503


async def test_a_reload_under_load_drops_no_request(tmp_path: Path) -> None:
    slow_echo(tmp_path / "models", delay_s=0.01, dynamic_batching={"max_queue_delay_microseconds": 2000})
    async with routing(tmp_path / "models") as router:
        stop = asyncio.Event()
        answered = 0

        async def client(k: int) -> None:
            nonlocal answered
            while not stop.is_set():
                answer = await router.dataplane.infer(rows("slow-echo", [[k, k]]))
                assert float(answer.outputs[0].data[0, 0]) == k
                answered += 1

        clients = [asyncio.create_task(client(k)) for k in range(8)]
        for _ in range(3):
            await asyncio.sleep(0.1)
            _touch_artifact(tmp_path / "models" / "slow-echo")
            await router.repository.load("slow-echo")
        stop.set()
        await asyncio.gather(*clients)  # any failed request fails the test here
    assert answered > 20


async def test_a_reload_that_changes_only_traffic_settings_keeps_the_engine(tmp_path: Path) -> None:
    model_dir = slow_echo(tmp_path / "models", delay_s=0.0)
    shutil.copytree(model_dir / "1", model_dir / "2")
    config = yaml.safe_load((model_dir / "config.yaml").read_text())
    config["version_policy"] = {"all": True}
    (model_dir / "config.yaml").write_text(yaml.safe_dump(config))
    async with routing(tmp_path / "models") as router:
        engines = {v: router.adapter_model("slow-echo", v) for v in ("1", "2")}
        config["traffic"] = {"routes": [{"version": 1, "weight": 90}, {"version": 2, "weight": 10}]}
        (model_dir / "config.yaml").write_text(yaml.safe_dump(config))
        await router.repository.load("slow-echo")
        assert {v: router.adapter_model("slow-echo", v) for v in ("1", "2")} == engines
        assert router.repository.traffic("slow-echo") is not None


def _touch_artifact(model_dir: Path) -> None:
    """A new artifact in version 1: a reload must load a new engine for it."""
    source = model_dir / "1" / "model.py"
    source.write_text(source.read_text() + "\n")


@pytest.mark.parametrize("instances", [1, 3])
async def test_instance_count_sizes_the_model_threads(tmp_path: Path, instances: int) -> None:
    slow_echo(tmp_path / "models", delay_s=0.2, instance_count=instances)
    async with routing(tmp_path / "models") as router:
        await asyncio.gather(*(router.dataplane.infer(rows("slow-echo", [[i, i]])) for i in range(6)))
        assert router.adapter_model("slow-echo").most_at_once == instances  # type: ignore[attr-defined]


async def test_a_stream_whose_reader_stops_reading_stops_taking_requests(tmp_path: Path) -> None:
    """ModelStreamInfer: answers wait for the transport; once STREAM_WINDOW are in flight or unread, no
    more requests are read (the landed main freed a window slot before its answer was read, so a slow
    reader grew the answer queue without limit)."""
    slow_echo(tmp_path / "models", delay_s=0.0, instance_count=4)
    async with routing(tmp_path / "models") as router:
        read = 0

        async def requests() -> AsyncIterator[StreamItem]:
            nonlocal read
            for i in range(10 * STREAM_WINDOW):
                read += 1
                yield StreamItem("slow-echo", str(i), request=rows("slow-echo", [[i, i]]))

        answers = router.dataplane.infer_stream(requests())
        first = await anext(answers)  # then the reader stalls
        await asyncio.sleep(0.3)
        assert first.error is None and STREAM_WINDOW <= read <= STREAM_WINDOW + 2
        rest = [answer async for answer in answers]
        assert len(rest) + 1 == 10 * STREAM_WINDOW and all(a.response is not None for a in rest)
