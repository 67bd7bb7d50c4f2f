"""The sample embedder on ONNX Runtime answers what sentence-transformers answers for the same model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from aisf.adapters.onnx_embedding import SAMPLE_NAME, build_sample
from aisf.services.common.llm_types import EmbedRequest
from aisf.services.router.repository import ModelRepository
from tests.support.llm import served_repository

TORCH = "minilm-torch"
TEXTS = (
    "What is the capital of France?",
    "a much longer sentence about the weather in Lisbon in the spring, with rain and some sun " * 3,
    "ok",
)


@pytest.fixture(scope="module")
async def repository(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ModelRepository]:
    root = tmp_path_factory.mktemp("embedders")
    build_sample(root / "models")
    (root / "models" / TORCH / "1").mkdir(parents=True)
    config = {"backend": "sentence_embedding", "parameters": {"threads": 1}}
    (root / "models" / TORCH / "config.yaml").write_text(yaml.safe_dump(config))
    async with served_repository(root) as served:
        yield served


async def _embed(repository: ModelRepository, model: str, texts: tuple[str, ...]) -> tuple[np.ndarray, int]:
    served = repository.get(model)
    reply = await served.adapter.embed(EmbedRequest(model, texts, "1"))  # type: ignore[attr-defined]
    return np.asarray(reply.vectors, dtype=np.float32), reply.usage.prompt_tokens


async def test_onnx_and_torch_give_the_same_unit_vectors_and_token_counts(
    repository: ModelRepository,
) -> None:
    onnx, onnx_tokens = await _embed(repository, SAMPLE_NAME, TEXTS)  # one padded batch of three lengths
    torch, torch_tokens = await _embed(repository, TORCH, TEXTS)
    assert onnx.shape == torch.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(onnx, axis=1), 1.0, rtol=1e-5)
    assert np.min(np.sum(onnx * torch, axis=1)) > 0.9999  # cosine of each pair
    assert onnx_tokens == torch_tokens


async def test_a_text_past_the_window_is_truncated_not_refused(repository: ModelRepository) -> None:
    vectors, tokens = await _embed(repository, SAMPLE_NAME, ("word " * 2000,))
    assert vectors.shape == (1, 384) and tokens == 256


async def test_the_onnx_embedder_is_the_sample_and_reports_its_engine(repository: ModelRepository) -> None:
    served = repository.get(SAMPLE_NAME)
    assert (served.platform, served.device) == ("onnxruntime_embedding", "cpu")


def test_the_export_is_built_once_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AISF_CACHE_DIR", str(tmp_path / "cache"))
    first = build_sample(tmp_path / "a") / "1" / "model.onnx"
    exported = next((tmp_path / "cache" / "embedders").glob("minilm-*/model.onnx"))
    stamp = exported.stat().st_mtime_ns
    second = build_sample(tmp_path / "b") / "1" / "model.onnx"
    assert exported.stat().st_mtime_ns == stamp and first.read_bytes() == second.read_bytes()


async def test_no_texts_is_no_vectors_not_an_engine_error(repository: ModelRepository) -> None:
    for model in (SAMPLE_NAME, TORCH):
        vectors, tokens = await _embed(repository, model, ())
        assert vectors.size == 0 and tokens == 0
