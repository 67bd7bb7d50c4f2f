"""The nginx edge for real (Debian's nginx, started by `aisf serve --edge`): TLS for REST, SSE and gRPC on
one port, rate limits, CORS, body limits; every request also needs its key, as behind it."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.support.jobs import tabular_request
from tests.support.keys import bearer, create_key
from tests.support.processes import AisfProcess, free_port, running_aisf

_LIMIT_BYTES = 1024 * 1024


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def edge_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def key(data_dir: Path) -> str:
    return create_key(data_dir, "acme", roles="infer,admin")


@pytest.fixture(scope="module")
def server(sample_repository: Path, data_dir: Path, key: str, edge_port: int) -> Iterator[AisfProcess]:
    env = {
        "AISF_AUTH": "keys",
        "AISF_EDGE_PORT": str(edge_port),
        "AISF_EDGE_RATE_PER_KEY": "5",
        "AISF_EDGE_BURST_PER_KEY": "10",
        "AISF_MAX_REQUEST_BYTES": str(_LIMIT_BYTES),
    }
    with running_aisf(sample_repository, data_dir, args=["--edge"], env=env) as process:
        assert f"edge https://127.0.0.1:{edge_port}" in process.log_text()
        yield process


@pytest.fixture(scope="module")
def certificate(server: AisfProcess, data_dir: Path) -> Path:
    return data_dir / "edge" / "tls" / "edge.crt"  # self-signed on first start


@pytest.fixture(scope="module")
def edge(server: AisfProcess, edge_port: int, certificate: Path) -> Iterator[httpx.Client]:
    trust = ssl.create_default_context(cafile=str(certificate))
    with httpx.Client(base_url=f"https://127.0.0.1:{edge_port}", verify=trust, timeout=60) as client:
        yield client


def _chunk_times(client: httpx.Client, key: str) -> list[float]:
    """When each SSE event of a streamed chat arrived, in seconds from the request."""
    body = {
        "model": "llm-demo",
        "messages": [{"role": "user", "content": "count"}],
        "max_tokens": 48,
        "stream": True,
        "seed": 7,
    }
    started = time.perf_counter()
    times = []
    with client.stream("POST", "/v1/chat/completions", json=body, headers=bearer(key)) as answer:
        assert answer.status_code == 200, answer.read()
        for line in answer.iter_lines():
            if line.startswith("data: "):
                times.append(time.perf_counter() - started)
    return times


def test_a_streamed_chat_arrives_through_the_edge_as_it_is_made(
    server: AisfProcess, edge: httpx.Client, key: str
) -> None:
    with httpx.Client(base_url=f"http://{server.http_url}", timeout=60) as direct:
        direct_times = _chunk_times(direct, key)
    edge_times = _chunk_times(edge, key)
    assert len(edge_times) >= 4
    # A buffering proxy would hand every event over at once, at the end.
    spread, direct_spread = edge_times[-1] - edge_times[0], direct_times[-1] - direct_times[0]
    assert spread >= 0.3 * direct_spread and spread > 0.002, (edge_times, direct_times)


def test_tritonclient_grpc_infers_over_tls_through_the_edge(
    edge_port: int, certificate: Path, key: str
) -> None:
    client = grpcclient.InferenceServerClient(
        f"localhost:{edge_port}", ssl=True, root_certificates=str(certificate)
    )
    try:
        assert client.is_server_live()
        tensor = grpcclient.InferInput("input__0", [2, 4], "FP32")
        tensor.set_data_from_numpy(np.ones((2, 4), np.float32))
        assert client.infer("tabular-demo", [tensor], headers=bearer(key)).as_numpy("output__0").shape == (
            2,
            1,
        )
        with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
            client.infer("tabular-demo", [tensor])
    finally:
        client.close()


def test_a_burst_over_the_key_rate_gets_429_with_retry_after(edge: httpx.Client, data_dir: Path) -> None:
    burst_key = create_key(data_dir, "acme")
    answers = [edge.get("/v2", headers=bearer(burst_key)) for _ in range(30)]
    statuses = [a.status_code for a in answers]
    assert statuses[0] == 200 and 429 in statuses, statuses
    limited = answers[statuses.index(429)]
    assert limited.headers["retry-after"] == "1" and "rate limit" in limited.json()["error"]


def test_a_grpc_burst_over_the_key_rate_is_resource_exhausted(
    edge_port: int, certificate: Path, data_dir: Path
) -> None:
    burst_key = create_key(data_dir, "acme")
    client = grpcclient.InferenceServerClient(
        f"localhost:{edge_port}", ssl=True, root_certificates=str(certificate)
    )
    codes = []
    try:
        for _ in range(30):
            try:
                client.get_server_metadata(headers=bearer(burst_key))
                codes.append("OK")
            except InferenceServerException as error:
                codes.append(str(error.status()))
    finally:
        client.close()
    assert codes[0] == "OK" and "StatusCode.RESOURCE_EXHAUSTED" in codes, codes


def test_a_cors_preflight_is_answered_at_the_edge(edge: httpx.Client) -> None:
    preflight = edge.options(
        "/v2/models/tabular-demo/infer",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "Authorization" in preflight.headers["access-control-allow-headers"]
    plain = edge.get("/v2/health/ready", headers={"Origin": "https://app.example.com"})
    assert plain.status_code == 200 and plain.headers["access-control-allow-origin"] == "*"


def test_an_oversized_body_gets_413_before_it_reaches_aisf(edge: httpx.Client, key: str) -> None:
    big = edge.post("/v2/models/tabular-demo/infer", content=b"x" * (_LIMIT_BYTES + 1), headers=bearer(key))
    assert big.status_code == 413 and "limit" in big.json()["error"]
    fine = edge.post("/v2/models/tabular-demo/infer", json=tabular_request([1, 2, 3, 4]), headers=bearer(key))
    assert fine.status_code == 200, fine.text


def test_paths_outside_the_api_are_404_at_the_edge(edge: httpx.Client) -> None:
    assert edge.get("/admin").status_code == 404
