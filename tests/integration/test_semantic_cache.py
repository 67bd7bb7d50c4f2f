"""The semantic cache on a real server: MiniLM embeddings of the prompt, indexed in Redis (REQ-OPT-04)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from openai import OpenAI

from aisf.adapters.onnx_embedding import build_sample
from aisf.services.llm_samples import build_llm_demo
from tests.support.llm import scrape
from tests.support.processes import AisfProcess, running_aisf

pytestmark = pytest.mark.integration

MODEL = "llm-demo"
REDIS_URL = "redis://127.0.0.1:6379/0"
QUESTION = "What is the capital of France?"
PARAPHRASE = "What's the capital city of France?"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AisfProcess]:
    repository = tmp_path_factory.mktemp("cache-models")
    build_llm_demo(repository)
    build_sample(repository)
    env = {"AISF_SEMANTIC_CACHE_EMBEDDING_MODEL": "minilm-embed", "AISF_SEMANTIC_CACHE_REDIS_URL": REDIS_URL}
    with running_aisf(repository, tmp_path_factory.mktemp("data"), env=env) as server:
        yield server


@pytest.fixture(scope="module")
def client(server: AisfProcess) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"http://{server.http_url}/v1", api_key="unused", max_retries=0) as client:
        yield client


@pytest.fixture
def tenant() -> str:
    """A tenant of its own per test, so entries Redis kept from other runs never interfere."""
    return f"tenant-{uuid.uuid4().hex[:8]}"


def ask(
    client: OpenAI,
    tenant: str,
    question: str,
    temperature: float = 0.0,
    seed: int | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[str, bool]:
    """The answer, and whether it came from the cache."""
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": question}],
        max_tokens=12,
        temperature=temperature,
        seed=seed,
        extra_headers={"X-Aisf-Tenant": tenant, **(headers or {})},
    )
    return str(raw.parse().choices[0].message.content), raw.headers.get("x-aisf-cache") == "hit"


def test_a_paraphrase_hits_and_gets_the_stored_answer(
    client: OpenAI, tenant: str, server: AisfProcess
) -> None:
    hits = scrape(server.metrics_port, "aisf_llm_semantic_cache_lookups_total", model=MODEL, result="hit")
    answer, cached = ask(client, tenant, QUESTION)
    assert not cached
    assert ask(client, tenant, PARAPHRASE) == (answer, True)
    assert (
        scrape(server.metrics_port, "aisf_llm_semantic_cache_lookups_total", model=MODEL, result="hit")
        == hits + 1
    )


def test_a_hit_is_replayed_as_a_stream_when_the_request_streams(client: OpenAI, tenant: str) -> None:
    answer, _ = ask(client, tenant, QUESTION)
    stream = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": PARAPHRASE}],
        max_tokens=12,
        temperature=0,
        stream=True,
        extra_headers={"X-Aisf-Tenant": tenant},
    )
    assert stream.headers["x-aisf-cache"] == "hit"
    with stream.parse() as chunks:
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer


def test_an_unrelated_prompt_misses(client: OpenAI, tenant: str) -> None:
    ask(client, tenant, QUESTION)
    assert ask(client, tenant, "How do I bake sourdough bread at home?")[1] is False


def test_another_tenant_never_sees_the_entry(client: OpenAI, tenant: str) -> None:
    ask(client, tenant, QUESTION)
    assert ask(client, f"{tenant}-rival", QUESTION)[1] is False
    assert ask(client, tenant, QUESTION)[1] is True


def test_sampled_requests_are_not_cached_unless_opted_in(client: OpenAI, tenant: str) -> None:
    ask(client, tenant, QUESTION, temperature=0.9, seed=3)
    assert ask(client, tenant, QUESTION, temperature=0.9, seed=3)[1] is False
    opt_in = {"X-Aisf-Cache": "opt-in"}
    ask(client, tenant, QUESTION, temperature=0.9, seed=3, headers=opt_in)
    assert ask(client, tenant, QUESTION, temperature=0.9, seed=3, headers=opt_in)[1] is True


def test_the_bypass_header_skips_the_cache(client: OpenAI, tenant: str) -> None:
    ask(client, tenant, QUESTION)
    assert ask(client, tenant, QUESTION, headers={"X-Aisf-Cache": "bypass"})[1] is False


def test_entries_live_in_redis_with_a_ttl(client: OpenAI, tenant: str) -> None:
    with redis.Redis.from_url(REDIS_URL) as store:
        before = set(store.scan_iter("aisf:semcache:*"))
        ask(client, tenant, QUESTION)
        deadline = time.monotonic() + 10
        # The entry is written after the answer went out (in the background): wait for it.
        while not (new := set(store.scan_iter("aisf:semcache:*")) - before):
            assert time.monotonic() < deadline, "no entry was written"
            time.sleep(0.05)
        (key,) = new
        assert store.hlen(key) == 1 and 0 < store.ttl(key) <= 3600
