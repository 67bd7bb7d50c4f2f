"""The vllm adapter: registered and importable everywhere; generating (with a draft model) on CUDA hosts."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from aisf.adapters.base import GenerativeAdapter, ModelSpec
from aisf.adapters.registry import AdapterRegistry
from aisf.adapters.vllm_engine import VllmAdapter, speculative_config
from aisf.services.common.errors import ModelLoadFailed
from aisf.services.common.llm_types import ChatMessage, GenerateRequest, SamplingParams
from aisf.services.common.model_config import ModelConfig
from aisf.services.llm_samples import LLM_DEMO

VLLM_INSTALLED = importlib.util.find_spec("vllm") is not None


def _cuda() -> bool:
    if not VLLM_INSTALLED:
        return False
    import torch

    return bool(torch.cuda.is_available())


def _spec(path: Path, **parameters: str | int | float | bool) -> ModelSpec:
    return ModelSpec(LLM_DEMO, 1, path, ModelConfig(name=LLM_DEMO, backend="vllm", parameters=parameters))


def test_the_adapter_is_registered_and_imports_without_vllm() -> None:
    adapter = AdapterRegistry.from_entry_points().create("vllm")
    assert isinstance(adapter, VllmAdapter) and isinstance(adapter, GenerativeAdapter)
    assert VLLM_INSTALLED or "vllm" not in sys.modules


def test_a_draft_model_becomes_vllms_speculative_config(tmp_path: Path) -> None:
    (tmp_path / "draft").mkdir()
    config = speculative_config(_spec(tmp_path, draft_model="draft", speculative_tokens=3))
    assert config == {"model": str(tmp_path / "draft"), "num_speculative_tokens": 3}
    assert speculative_config(_spec(tmp_path, speculative_method="ngram")) == {
        "method": "ngram",
        "num_speculative_tokens": 4,
    }
    assert speculative_config(_spec(tmp_path)) is None


@pytest.mark.skipif(VLLM_INSTALLED, reason="vllm is installed here")
async def test_loading_without_vllm_is_a_typed_load_failure(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadFailed, match="backend vllm needs the vllm package"):
        await VllmAdapter().load(_spec(tmp_path))


@pytest.mark.integration
@pytest.mark.skipif(not _cuda(), reason="vLLM needs a CUDA GPU; none on this machine")
async def test_vllm_streams_the_sample_gguf_with_its_draft_model(sample_repository: Path) -> None:
    version = sample_repository / LLM_DEMO / "1"
    adapter = VllmAdapter()
    await adapter.load(
        _spec(
            version,
            model="model.gguf",
            draft_model="draft.gguf",
            speculative_tokens=4,
            max_model_len=512,
            gpu_memory_utilization=0.2,
            enforce_eager=True,
        )
    )
    try:
        request = GenerateRequest(
            LLM_DEMO, messages=(ChatMessage("user", "hello world"),), params=SamplingParams(max_tokens=16)
        )
        chunks = [chunk async for chunk in adapter.stream(request)]
        assert chunks[-1].finish_reason == "length"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16
        assert adapter.context_length() == 512
    finally:
        await adapter.unload()
