"""The LLM lane under faults: a failing engine opens its circuit and the canned answer takes over; a
shadow version's generations are compared with the live ones."""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from aisf.services.common.errors import CircuitOpen, EngineUnavailable, ModelLoadFailed
from aisf.services.common.llm_metrics import LlmMetrics
from aisf.services.common.llm_types import ChatMessage, GenerateRequest, SamplingParams, Tool, ToolChoice
from aisf.services.router.llm_dataplane import LlmDataplane
from aisf.services.router.shadows import ShadowRegistry
from tests.support.llm import EMBEDDER, LLM, REMOTE, build_llm_models, kill, served_repository, upstream


def chat(model: str, **params: object) -> GenerateRequest:
    return GenerateRequest(model, messages=(ChatMessage("user", "hi"),), params=SamplingParams(**params))


def _configure(model_dir: Path, **settings: object) -> None:
    config = yaml.safe_load((model_dir / "config.yaml").read_text())
    config.update(settings)
    (model_dir / "config.yaml").write_text(yaml.safe_dump(config))


async def test_a_dead_upstream_opens_the_circuit_then_the_canned_answer_replies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = build_llm_models(tmp_path / "models", embedder=False)
    with upstream(models, monkeypatch) as server:
        _configure(models / REMOTE, fallback={"message": "Back soon."}, circuit_breaker={"failures": 3})
        async with served_repository(tmp_path) as repository:
            dataplane = LlmDataplane(repository, LlmMetrics(CollectorRegistry()))
            kill(server)
            for _ in range(3):
                with pytest.raises(EngineUnavailable):
                    [c async for c in dataplane.generate(chat(REMOTE, max_tokens=4))]
            chunks = [c async for c in dataplane.generate(chat(REMOTE, max_tokens=4))]
    texts = [c.choice.text for c in chunks if c.choice]
    assert texts == ["Back soon."] and all(c.fallback == "rule" for c in chunks)
    assert chunks[-1].usage is not None


async def test_without_a_canned_answer_an_open_circuit_is_unavailable(tmp_path: Path) -> None:
    build_llm_models(tmp_path / "models", embedder=False)
    async with served_repository(tmp_path) as repository:
        dataplane = LlmDataplane(repository, LlmMetrics(CollectorRegistry()))
        for _ in range(5):
            repository.get(LLM).breaker.record_failure("engine_unavailable")
        with pytest.raises(CircuitOpen) as refused:
            [c async for c in dataplane.generate(chat(LLM, max_tokens=2))]
    assert refused.value.http_status == 503 and refused.value.retry_after is not None


async def test_a_shadow_versions_greedy_generations_agree_with_the_live_ones(tmp_path: Path) -> None:
    models = build_llm_models(tmp_path / "models", embedder=False)
    shutil.copytree(models / LLM / "1", models / LLM / "2")
    _configure(models / LLM, version_policy={"all": True}, shadow={"version": "2", "sample": 1.0})
    async with served_repository(tmp_path) as repository:
        shadows = ShadowRegistry(repository, 30.0)
        dataplane = LlmDataplane(repository, LlmMetrics(CollectorRegistry()), shadows=shadows)
        for _ in range(3):
            chunks = [c async for c in dataplane.generate(chat(LLM, max_tokens=8, temperature=0.0))]
            assert {c.model_version for c in chunks} == {"1"}  # the shadow takes no live traffic
        for _ in range(200):
            if (report := shadows.report(LLM)).compared == 3:
                break
            await asyncio.sleep(0.02)
        await shadows.close()
    assert report.compared == 3 and report.agreed == 3 and report.shadow_version == "2"


async def test_an_open_circuit_hands_the_generation_to_the_fallback_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As LiteLLM's model fallbacks: while the remote is down, the in-process model answers."""
    models = build_llm_models(tmp_path / "models", embedder=False)
    with upstream(models, monkeypatch) as server:
        _configure(models / REMOTE, fallback={"model": LLM}, circuit_breaker={"failures": 2})
        async with served_repository(tmp_path) as repository:
            dataplane = LlmDataplane(repository, LlmMetrics(CollectorRegistry()))
            kill(server)
            for _ in range(2):
                with pytest.raises(EngineUnavailable):
                    [c async for c in dataplane.generate(chat(REMOTE, max_tokens=4))]
            chunks = [c async for c in dataplane.generate(chat(REMOTE, max_tokens=4, temperature=0.0))]
    assert "".join(c.choice.text for c in chunks if c.choice)
    assert all(c.fallback == LLM for c in chunks) and chunks[-1].usage is not None


async def test_a_fallback_model_answers_a_required_tool_call_as_the_model_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The remote would call the tool itself; the in-process fallback gets the dataplane's tool calling."""
    models = build_llm_models(tmp_path / "models", embedder=False)
    city = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 10}},
        "required": ["city"],
    }
    weather = Tool("get_weather", "The weather", json.dumps(city))
    with upstream(models, monkeypatch) as server:
        _configure(models / REMOTE, fallback={"model": LLM}, circuit_breaker={"failures": 2})
        async with served_repository(tmp_path) as repository:
            dataplane = LlmDataplane(repository, LlmMetrics(CollectorRegistry()))
            kill(server)
            for _ in range(2):
                with pytest.raises(EngineUnavailable):
                    [c async for c in dataplane.generate(chat(REMOTE, max_tokens=4))]
            asked = replace(
                chat(REMOTE, max_tokens=200, seed=1), tools=(weather,), tool_choice=ToolChoice("required")
            )
            chunks = [c async for c in dataplane.generate(asked)]
    ended = [c.choice for c in chunks if c.choice and c.choice.finish_reason]
    assert ended and ended[-1].finish_reason == "tool_calls"
    assert ended[-1].tool_calls[0].name == "get_weather" and chunks[0].fallback == LLM


async def test_an_embedding_model_refuses_a_fallback_at_load(tmp_path: Path) -> None:
    """Another model's vectors live in another space: no fallback can answer for an embedder."""
    models = build_llm_models(tmp_path / "models")
    _configure(models / EMBEDDER, fallback={"model": LLM})
    async with served_repository(tmp_path) as repository:
        with pytest.raises(ModelLoadFailed, match="an embedding model takes no fallback"):
            await repository.load(EMBEDDER)
