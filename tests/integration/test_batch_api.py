"""The OpenAI Batch API on a real aisf, driven by the official openai SDK: files in, a durable batch on the
jobs lane, output and error files out; cancellation, expiry, V2 batches, and files kept in S3."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer
from openai import APIStatusError, BadRequestError, NotFoundError, OpenAI
from temporalio.client import Client

from aisf.services.llm_samples import LLM_DEMO
from tests.support.processes import AisfProcess, free_port, running_aisf
from tests.support.python_models import slow_echo

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def models(sample_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("batch-models")
    for name in ("tabular-demo", LLM_DEMO):
        shutil.copytree(sample_repository / name, root / name)
    slow_echo(root, "slow", delay_s=0.3)
    return root


FILES_LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    return {"AISF_FILES_MAX_BYTES": str(FILES_LIMIT)}


@pytest.fixture(scope="module")
def client(server: AisfProcess) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"http://{server.http_url}/v1", api_key="unused", max_retries=0) as opened:
        yield opened


def _line(custom_id: str, body: dict[str, Any], url: str = CHAT) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def _chat(text: str) -> dict[str, Any]:
    return {
        "model": LLM_DEMO,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 6,
        "temperature": 0,
    }


def _upload(client: OpenAI, lines: list[Any], name: str = "input.jsonl") -> str:
    content = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    return client.files.create(file=(name, io.BytesIO(content.encode())), purpose="batch").id


def _finished(client: OpenAI, batch_id: str, timeout_s: float = 90) -> Any:
    deadline = time.monotonic() + timeout_s
    while (batch := client.batches.retrieve(batch_id)).status not in (
        "completed",
        "failed",
        "cancelled",
        "expired",
    ):
        assert time.monotonic() < deadline, batch
        time.sleep(0.2)
    return batch


def _lines(client: OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    if file_id is None:
        return {}
    text = client.files.content(file_id).text
    return {entry["custom_id"]: entry for entry in map(json.loads, text.splitlines())}


def test_a_chat_batch_runs_to_completed_with_outputs_and_per_line_errors(client: OpenAI) -> None:
    lines = [_line(f"q{i}", _chat(f"question {i}")) for i in range(5)]
    lines.append(_line("broken", {"model": LLM_DEMO, "messages": "not a list"}))
    input_id = _upload(client, lines)
    created = client.batches.create(input_file_id=input_id, endpoint=CHAT, completion_window="24h")
    assert created.status in ("validating", "in_progress") and created.request_counts.total == 6
    batch = _finished(client, created.id)
    assert batch.status == "completed" and batch.completed_at and batch.in_progress_at
    assert (batch.request_counts.completed, batch.request_counts.failed) == (5, 1)
    output, errors = _lines(client, batch.output_file_id), _lines(client, batch.error_file_id)
    assert sorted(output) == [f"q{i}" for i in range(5)]
    answer = output["q0"]["response"]
    assert answer["status_code"] == 200 and answer["body"]["object"] == "chat.completion"
    assert answer["body"]["usage"]["completion_tokens"] == 6 and output["q0"]["error"] is None
    assert errors["broken"]["response"]["status_code"] == 400
    assert "messages" in errors["broken"]["response"]["body"]["error"]["message"]
    assert any(b.id == created.id for b in client.batches.list().data)
    assert client.files.retrieve(batch.output_file_id).purpose == "batch_output"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (["this is not json", "neither is this"], "not JSON lines"),
        ([_line("a", _chat("x")), _line("b", _chat("y"), url="/v1/completions")], "not the batch's endpoint"),
        ([_line("a", _chat("x")), _line("a", _chat("y"))], "appears twice"),
        ([_line("a", _chat("x")), _line("b", {**_chat("y"), "model": "other"})], "same model"),
    ],
)
def test_a_file_that_cannot_be_a_batch_is_refused_at_create_with_a_400(
    client: OpenAI, content: list[Any], message: str
) -> None:
    input_id = _upload(client, content)
    with pytest.raises(BadRequestError, match=message):
        client.batches.create(input_file_id=input_id, endpoint=CHAT, completion_window="24h")


def test_bad_batch_requests_are_typed_errors(client: OpenAI) -> None:
    input_id = _upload(client, [_line("a", _chat("x"))])
    with pytest.raises(NotFoundError):
        client.batches.create(input_file_id="file-nope", endpoint=CHAT, completion_window="24h")
    with pytest.raises(BadRequestError, match="endpoint"):
        client.batches.create(input_file_id=input_id, endpoint="/v1/images", completion_window="24h")  # type: ignore[arg-type]
    with pytest.raises(BadRequestError, match="completion_window"):
        client.batches.create(input_file_id=input_id, endpoint=CHAT, completion_window="soon")  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        client.batches.retrieve("batch_nope")
    with pytest.raises(BadRequestError, match="purpose"):
        client.files.create(file=("x.jsonl", io.BytesIO(b"{}")), purpose="fine-tune")


def test_a_v2_batch_answers_in_the_v2_json_of_a_direct_call(client: OpenAI, server: AisfProcess) -> None:
    url = "/v2/models/tabular-demo/infer"
    rows = [[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 0.5, 0.0]]
    lines = [
        _line(
            f"r{i}", {"inputs": [{"name": "input__0", "shape": [1, 4], "datatype": "FP32", "data": r}]}, url
        )
        for i, r in enumerate(rows)
    ]
    lines.append(
        _line(
            "bad",
            {"inputs": [{"name": "input__0", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
            url,
        )
    )
    batch = _finished(
        client,
        client.batches.create(input_file_id=_upload(client, lines), endpoint=url, completion_window="24h").id,
    )  # type: ignore[arg-type]
    assert batch.status == "completed" and (batch.request_counts.completed, batch.request_counts.failed) == (
        2,
        1,
    )
    output, errors = _lines(client, batch.output_file_id), _lines(client, batch.error_file_id)
    with httpx.Client(base_url=f"http://{server.http_url}") as rest:
        for i, row in enumerate(rows):
            direct = rest.post(url, json={"inputs": lines[i]["body"]["inputs"]}).json()
            assert output[f"r{i}"]["response"]["body"]["outputs"] == direct["outputs"], row
    assert (
        errors["bad"]["response"]["status_code"] == 400
        and "shape" in errors["bad"]["response"]["body"]["error"]
    )


def _slow_lines(count: int) -> list[dict[str, Any]]:
    url = "/v2/models/slow/infer"
    body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
    return [_line(f"s{i}", body, url) for i in range(count)]


def _running_slow_batch(client: OpenAI) -> Any:
    """A batch of 30 slow lines, once two of them are answered."""
    created = client.batches.create(
        input_file_id=_upload(client, _slow_lines(30)),
        endpoint="/v2/models/slow/infer",  # type: ignore[arg-type]
        completion_window="24h",
    )
    deadline = time.monotonic() + 30
    while client.batches.retrieve(created.id).request_counts.completed < 2:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    return created


def test_cancelling_a_batch_keeps_the_answered_lines_and_fails_the_rest(client: OpenAI) -> None:
    created = _running_slow_batch(client)
    cancelling = client.batches.cancel(created.id)
    assert cancelling.status in ("cancelling", "cancelled")
    batch = _finished(client, created.id)
    assert batch.status == "cancelled" and batch.cancelled_at and batch.cancelling_at
    output, errors = _lines(client, batch.output_file_id), _lines(client, batch.error_file_id)
    assert len(output) >= 2 and len(output) + len(errors) == 30 and not set(output) & set(errors)
    assert all(e["error"]["code"] == "batch_cancelled" for e in errors.values())
    assert batch.request_counts.completed == len(output)  # no line kept running after the cancel


def test_a_batch_past_its_completion_window_expires_with_what_it_answered(client: OpenAI) -> None:
    url = "/v2/models/slow/infer"
    created = client.batches.create(
        input_file_id=_upload(client, _slow_lines(30)), endpoint=url, completion_window="3s"
    )  # type: ignore[arg-type]
    batch = _finished(client, created.id)
    assert batch.status == "expired" and batch.expired_at
    output, errors = _lines(client, batch.output_file_id), _lines(client, batch.error_file_id)
    assert 0 < len(output) < 30 and len(output) + len(errors) == 30
    assert {e["error"]["code"] for e in errors.values()} == {"batch_expired"}


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """An S3 API on loopback (moto's server: no real S3 is reachable here) with one bucket."""
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    ).create_bucket(Bucket="aisf-files")
    yield endpoint
    moto.stop()


def test_files_and_batch_outputs_can_live_in_an_s3_bucket(models: Path, s3: str, tmp_path: Path) -> None:
    env = {
        "AISF_FILES_STORAGE": "s3",
        "AISF_FILES_S3_BUCKET": "aisf-files",
        "AISF_FILES_S3_ENDPOINT_URL": s3,
        "AISF_FILES_S3_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
    }
    with (
        running_aisf(models, tmp_path / "data", env=env) as server,
        OpenAI(base_url=f"http://{server.http_url}/v1", api_key="unused", max_retries=0) as client,
    ):
        input_id = _upload(client, [_line("a", _chat("hi")), _line("b", _chat("there"))])
        batch = _finished(
            client, client.batches.create(input_file_id=input_id, endpoint=CHAT, completion_window="24h").id
        )
        assert batch.status == "completed" and len(_lines(client, batch.output_file_id)) == 2
    stored = boto3.client(
        "s3", endpoint_url=s3, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    ).list_objects_v2(Bucket="aisf-files")
    keys = {item["Key"] for item in stored.get("Contents", [])}
    assert f"aisf/files/{input_id}" in keys and f"aisf/files/{batch.output_file_id}" in keys
    assert not (tmp_path / "data" / "files").exists()


def test_a_file_over_the_limit_is_413_whether_its_size_is_declared_or_not(
    client: OpenAI, server: AisfProcess
) -> None:
    """Declared: refused before the upload is spooled. Chunked (no Content-Length): refused once the
    stream passes the limit, still a 413 naming it (never a 500 from the cancelled upload call)."""
    too_big = b"x" * (FILES_LIMIT + 100 * 1024)
    with pytest.raises(APIStatusError) as refused:
        client.files.create(file=("big.jsonl", io.BytesIO(too_big)), purpose="batch")
    assert refused.value.status_code == 413 and "limit" in refused.value.message
    boundary = "aisf-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()

    def chunked() -> Iterator[bytes]:
        yield head
        for start in range(0, len(too_big), 64 * 1024):
            yield too_big[start : start + 64 * 1024]
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    answer = httpx.post(f"http://{server.http_url}/v1/files", content=chunked(), headers=headers, timeout=30)
    assert answer.status_code == 413 and "limit" in answer.json()["error"]["message"]


def test_a_batch_is_not_a_job_of_the_jobs_api(client: OpenAI, rest: httpx.Client) -> None:
    """A batch runs as a job, but its lines, files and status are the Batch API's: the jobs API neither
    lists nor shows nor cancels it."""
    created = client.batches.create(
        input_file_id=_upload(client, [_line("a", _chat("hi"))]), endpoint=CHAT, completion_window="24h"
    )
    assert rest.get(f"/v1/jobs/{created.id}").status_code == 404
    assert rest.delete(f"/v1/jobs/{created.id}").status_code == 404
    assert all(job["job_id"] != created.id for job in rest.get("/v1/jobs").json()["jobs"])
    assert _finished(client, created.id).status == "completed"


def test_a_batch_of_only_malformed_lines_completes_with_an_error_file(client: OpenAI) -> None:
    lines = [_line("a", {"model": LLM_DEMO, "messages": 1}), _line("b", {"model": LLM_DEMO})]
    batch = _finished(
        client,
        client.batches.create(
            input_file_id=_upload(client, lines), endpoint=CHAT, completion_window="24h"
        ).id,
    )
    assert batch.status == "completed" and batch.output_file_id is None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (0, 2)
    assert {e["response"]["status_code"] for e in _lines(client, batch.error_file_id).values()} == {400}


def test_a_custom_id_over_512_characters_is_refused_at_create(client: OpenAI) -> None:
    input_id = _upload(client, [_line("x" * 513, _chat("hi"))])
    with pytest.raises(BadRequestError, match="custom_id"):
        client.batches.create(input_file_id=input_id, endpoint=CHAT, completion_window="24h")


def test_each_answered_line_has_its_own_request_id(client: OpenAI) -> None:
    lines = [_line(f"q{i}", _chat("the same question")) for i in range(4)]
    batch = _finished(
        client,
        client.batches.create(
            input_file_id=_upload(client, lines), endpoint=CHAT, completion_window="24h"
        ).id,
    )
    output = _lines(client, batch.output_file_id)
    assert len({entry["response"]["body"]["id"] for entry in output.values()}) == 4
    assert len({entry["response"]["request_id"] for entry in output.values()}) == 4


async def _terminate(address: str, workflow_id: str) -> None:
    temporal = await Client.connect(address)
    await temporal.get_workflow_handle(workflow_id).terminate("by an operator, outside aisf")


def test_a_batch_whose_workflow_is_terminated_outside_aisf_ends_failed_with_its_files(
    client: OpenAI, temporal_server: object
) -> None:
    """Its workflow never reached finalizing: reading the batch notices the ended job and finishes it
    from what was answered, rather than showing in_progress forever."""
    created = _running_slow_batch(client)
    asyncio.run(_terminate(temporal_server.address, created.id))  # type: ignore[attr-defined]
    batch = _finished(client, created.id, timeout_s=30)
    assert batch.status == "failed" and batch.failed_at
    output, errors = _lines(client, batch.output_file_id), _lines(client, batch.error_file_id)
    assert len(output) >= 2 and len(output) + len(errors) == 30
