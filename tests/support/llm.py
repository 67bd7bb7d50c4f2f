"""LLM-lane test helpers: repositories of real engines (llama.cpp, MiniLM, an OpenAI upstream that can
be killed mid-stream), reference generations, and metrics of a real server."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from aisf.adapters.llama_cpp_engine import LlamaCppAdapter
from aisf.adapters.onnx_embedding import SAMPLE_NAME, build_sample
from aisf.adapters.registry import AdapterRegistry
from aisf.services.common.db.engine import open_database
from aisf.services.common.db.model_store import ModelStore
from aisf.services.common.llm_types import GenerateRequest, TokenChunk
from aisf.services.llm_samples import LLM_DEMO, LLM_DEMO_DRAFT, build_llm_demo
from aisf.services.router.repository import ModelRepository, RepositoryDefaults
from aisf.services.samples import build_vision_demo
from tests.support.llama_server import LlamaServer, running_llama_server

EMBEDDER = SAMPLE_NAME  # all-MiniLM-L6-v2 on ONNX Runtime, for embeddings and the semantic cache
LLM = LLM_DEMO  # llama.cpp in process: generative (and embedding) model, context window 1024
V2_MODEL = "vision-demo"  # a tensor model: neither generates text nor embeds
REMOTE = "remote"  # openai_remote in front of a llama.cpp server the test can kill
UPSTREAM_CONTEXT = 2048  # room for a generation long enough to kill the server in the middle of it
_UPSTREAM_KEY_ENV = "AISF_TEST_UPSTREAM_KEY"
_UPSTREAM_KEY = "upstream-secret"


def build_llm_models(models: Path, embedder: bool = True, v2_model: bool = False) -> Path:
    """llm-demo (llama.cpp, speculative decoding), the MiniLM embedder, and optionally a V2 model."""
    build_llm_demo(models)
    shutil.rmtree(models / LLM_DEMO_DRAFT)
    if embedder:
        build_sample(models)
    if v2_model:
        build_vision_demo(models)
    return models


@contextmanager
def upstream(models: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LlamaServer]:
    """A real llama.cpp OpenAI server over the llm-demo GGUF, served here as model REMOTE (backend
    openai_remote). Killing its process mid-stream ends the stream without [DONE]."""
    gguf_dir = models.parent / "upstream-gguf"
    build_llm_demo(gguf_dir)
    monkeypatch.setenv(_UPSTREAM_KEY_ENV, _UPSTREAM_KEY)
    gguf = gguf_dir / LLM_DEMO / "1" / "model.gguf"
    with running_llama_server(gguf, "upstream", _UPSTREAM_KEY, n_ctx=UPSTREAM_CONTEXT) as server:
        (models / REMOTE / "1").mkdir(parents=True, exist_ok=True)
        parameters = {
            "base_url": server.base_url,
            "remote_model": server.model,
            "api_key_env": _UPSTREAM_KEY_ENV,
            "context_length": UPSTREAM_CONTEXT,
            "timeout_s": 30,
        }
        config = {"backend": "openai_remote", "instance_count": 1, "parameters": parameters}
        (models / REMOTE / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        yield server


@asynccontextmanager
async def served_repository(
    root: Path, defaults: RepositoryDefaults | None = None
) -> AsyncIterator[ModelRepository]:
    """The models under `root/models`, loaded by the adapters aisf ships (SQLite history)."""
    database = open_database(f"sqlite:///{root / 'meta.db'}")
    registry = AdapterRegistry.from_entry_points()
    repository = ModelRepository(
        root / "models", registry, ModelStore(database), defaults or RepositoryDefaults()
    )
    try:
        await repository.load_all()
        yield repository
    finally:
        await repository.close()
        database.close()


def llama(repository: ModelRepository, name: str = LLM) -> LlamaCppAdapter:
    adapter = repository.get(name).adapter
    assert isinstance(adapter, LlamaCppAdapter)
    return adapter


async def reference(repository: ModelRepository, request: GenerateRequest) -> list[TokenChunk]:
    """What the engine itself streams for `request` (greedy or seeded requests repeat exactly)."""
    return [chunk async for chunk in llama(repository, request.model_name).stream(request)]


def scrape(metrics_port: int, name: str, **labels: str) -> float:
    """One sample of a running server's /metrics (0 when absent)."""
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def kill(server: LlamaServer) -> None:
    """SIGKILL: the server dies at once, mid-response (on SIGTERM uvicorn would finish the stream)."""
    server.process.kill()
    server.process.wait()
