"""No personal data at rest, with the real pii role: a load of requests carrying the PII corpus through
every lane (V2 REST and gRPC, chat, streamed chat, completions, embeddings, failing requests, V2 and LLM
jobs, an OpenAI batch) leaves none of it in the log, in any row of the metadata database, in Temporal's
database or in the file storage. Answered job items are kept redacted; while the pii role is down they
wait, sealed, and are stored redacted once it is back."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from openai import OpenAI
from tritonclient.utils import InferenceServerException

from aisf.adapters.onnx_embedding import build_sample as build_embedder
from aisf.services.common.sealing import is_sealed
from aisf.services.llm_samples import LLM_DEMO
from tests.support.jobs import submit, tabular_request, wait_final
from tests.support.pii_corpus import CORPUS
from tests.support.processes import AisfProcess, free_port, running_aisf

pytestmark = pytest.mark.integration

# Texts of the corpus that carry personal data, and that data: what must be found nowhere afterwards.
TEXTS = [text for text, labels in CORPUS if labels]
NEEDLES = sorted({substring for _, labels in CORPUS for _, substring in labels}, key=len, reverse=True)


def _forms(needle: str) -> list[bytes]:
    """How a needle looks stored: UTF-8, and JSON's ASCII escapes of it."""
    return list({needle.encode(), json.dumps(needle)[1:-1].encode()})


def _leaks(blob: bytes) -> list[str]:
    return [needle for needle in NEEDLES if any(form in blob for form in _forms(needle))]


def _database_rows(path: Path) -> Iterator[tuple[str, bytes]]:
    with sqlite3.connect(path) as db:
        tables = [row[0] for row in db.execute("select name from sqlite_master where type = 'table'")]
        for table in tables:
            for row in db.execute(f'select * from "{table}"'):  # noqa: S608 (names from sqlite_master)
                for value in row:
                    if isinstance(value, bytes | str):
                        yield table, value.encode() if isinstance(value, str) else value


def _leaks_at_rest(data_dir: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for table, value in _database_rows(data_dir / "aisf.db"):
        if leaked := _leaks(value):
            found.setdefault(f"aisf.db:{table}", []).extend(leaked)
    for path in data_dir.rglob("*"):
        if path.is_file() and path.name != "aisf.db" and path.suffix not in (".sock",):
            if "pii" in path.relative_to(data_dir).parts[:1]:
                continue  # the pii role's own model cache
            if leaked := _leaks(path.read_bytes()):
                found.setdefault(str(path.relative_to(data_dir)), []).extend(leaked)
    return found


def _stored_items(data_dir: Path, job_id: str) -> list[tuple[bytes, bytes | None]]:
    with sqlite3.connect(data_dir / "aisf.db") as db:
        query = "select request, response from job_items where job_id = ? order by idx"
        return [
            (bytes(request), response and bytes(response))
            for request, response in db.execute(query, (job_id,))
        ]


def _chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": LLM_DEMO, "messages": [{"role": "user", "content": text}], "max_tokens": 4, **extra}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def models(sample_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pii-models")
    for name in ("tabular-demo", LLM_DEMO):
        shutil.copytree(sample_repository / name, root / name)
    build_embedder(root)
    return root


@pytest.fixture(scope="module")
def everything(models: Path, data_dir: Path) -> Iterator[AisfProcess]:
    with running_aisf(models, data_dir, env={"AISF_PII_SERVICE": "true"}) as process:
        process.wait_logged("pii analyzer ready", timeout_s=120)
        yield process


def _load_every_lane(process: AisfProcess, rest: httpx.Client) -> list[str]:
    """Requests carrying the corpus on every lane; the jobs and batch it submitted."""
    with OpenAI(base_url=f"http://{process.http_url}/v1", api_key="unused", max_retries=0) as openai:
        row = tabular_request([0.1, 0.2, 0.3, 0.4])
        for text in TEXTS:
            openai.chat.completions.create(**_chat(text))
            for _ in openai.chat.completions.create(**_chat(text, stream=True)):
                pass
            openai.completions.create(model=LLM_DEMO, prompt=text, max_tokens=4)
            inferred = rest.post(
                "/v2/models/tabular-demo/infer", json={**row, "id": text, "parameters": {"note": text}}
            )
            assert inferred.status_code == 200, inferred.text
        openai.embeddings.create(model="minilm-embed", input=TEXTS)
        client = grpcclient.InferenceServerClient(process.grpc_url)
        tensor = grpcclient.InferInput("input__0", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 4), np.float32))
        for text in TEXTS[:4]:
            client.infer("tabular-demo", [tensor], request_id=text, parameters={"note": text})
            with pytest.raises(InferenceServerException, match="unknown model"):
                client.infer(f"model {text}", [tensor])
        client.close()
        for text in TEXTS[:4]:
            assert rest.post("/v1/chat/completions", json=_chat(text, temperature=-1)).status_code == 400
        v2_job = submit(
            rest, {"model": "tabular-demo", "requests": [{**row, "parameters": {"note": t}} for t in TEXTS]}
        )
        chat_job = submit(rest, {"model": LLM_DEMO, "endpoint": "/v1/chat/completions", "requests": [
            {"messages": [{"role": "user", "content": t}], "max_tokens": 4} for t in TEXTS
        ]})  # fmt: skip
        lines = [
            json.dumps(
                {"custom_id": f"line-{i}", "method": "POST", "url": "/v1/chat/completions", "body": _chat(t)}
            )
            for i, t in enumerate(TEXTS)
        ]
        upload = openai.files.create(
            file=("input.jsonl", io.BytesIO("\n".join(lines).encode())), purpose="batch"
        )
        batch = openai.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert v2_job.status_code == chat_job.status_code == 202, (v2_job.text, chat_job.text)
        return [v2_job.json()["job_id"], chat_job.json()["job_id"], batch.id]


def test_a_load_through_every_lane_leaves_no_personal_data_in_logs_rows_or_files(
    everything: AisfProcess, data_dir: Path
) -> None:
    with httpx.Client(base_url=f"http://{everything.http_url}", timeout=60) as rest:
        v2_job, chat_job, batch_id = _load_every_lane(everything, rest)
        for job_id in (v2_job, chat_job):
            assert wait_final(rest, job_id, timeout_s=180)["state"] == "succeeded"
        with OpenAI(base_url=f"http://{everything.http_url}/v1", api_key="unused", max_retries=0) as openai:
            deadline = time.monotonic() + 180
            while (batch := openai.batches.retrieve(batch_id)).status not in (
                "completed",
                "failed",
                "expired",
            ):
                assert time.monotonic() < deadline, batch
                time.sleep(0.2)
            assert batch.status == "completed" and batch.output_file_id, batch
            output = openai.files.content(batch.output_file_id).read()
        assert len(output.splitlines()) == len(TEXTS)
    # Answered items are kept redacted (not only sealed): their requests read plain, with placeholders.
    requests = [request for request, _ in _stored_items(data_dir, chat_job)]
    assert not any(is_sealed(r) for r in requests)
    assert b"<EMAIL_ADDRESS>" in b"".join(requests) and b"<KR_RRN>" in b"".join(requests)
    time.sleep(1.0)  # the log handler's last batch
    assert not _leaks(everything.log_text().encode()), _leaks(everything.log_text().encode())
    assert not _leaks_at_rest(data_dir)


def test_answered_items_wait_for_a_pii_role_that_is_down_and_are_kept_redacted_once_it_is_back(
    sample_repository: Path, tmp_path: Path
) -> None:
    port = free_port()
    env = {"AISF_PII_SERVICE": "false", "AISF_PII_ADDRESS": f"127.0.0.1:{port}"}
    with running_aisf(sample_repository, tmp_path / "all", env=env) as process:
        with httpx.Client(base_url=f"http://{process.http_url}", timeout=60) as rest:
            chosen = [t for t in TEXTS if "900101-1234568" in t] + TEXTS[1:3]
            body = {"model": LLM_DEMO, "endpoint": "/v1/chat/completions", "requests": [
                {"messages": [{"role": "user", "content": t}], "max_tokens": 4} for t in chosen
            ]}  # fmt: skip
            job_id = submit(rest, body).json()["job_id"]
            process.wait_logged("job payloads wait for the pii role", timeout_s=120)
            assert rest.get(f"/v1/jobs/{job_id}").json()["state"] == "running"
            stored = _stored_items(tmp_path / "all", job_id)
            assert all(is_sealed(request) and response is None for request, response in stored)
            with running_aisf(sample_repository, tmp_path / "pii", ["--grpc-port", str(port)], role="pii"):
                finished = wait_final(rest, job_id, timeout_s=120)
            assert finished["state"] == "succeeded", finished
            assert len(finished["result"]["responses"]) == 3
        stored = _stored_items(tmp_path / "all", job_id)
        assert all(not is_sealed(request) and not is_sealed(response or b"") for request, response in stored)
        with_rrn = [request for request, _ in stored if b"<KR_RRN>" in request]
        assert with_rrn and not any(b"900101-1234568" in request for request, _ in stored)
    assert not _leaks_at_rest(tmp_path / "all")
