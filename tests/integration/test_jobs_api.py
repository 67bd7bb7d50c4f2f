"""/v1/jobs and aisf.job.v1: accepted at once, readable, watchable, cancellable, listable; typed errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as v2_pb

from aisf.job.v1 import job_service_pb2 as pb
from aisf.job.v1 import job_service_pb2_grpc as pb_grpc
from tests.support.jobs import submit, tabular_request, wait_final
from tests.support.processes import AisfProcess, running_aisf

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def jobs_server(sample_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AisfProcess]:
    env = {
        "AISF_JOB_MAX_ITEMS": "50",
        "AISF_TENANT_TIERS": '{"acme": "gold"}',
        "AISF_JOB_INLINE_RESULT_BYTES": "2000",
    }
    with running_aisf(sample_repository, tmp_path_factory.mktemp("data"), env=env) as server:
        yield server


@pytest.fixture(scope="module")
def rest(jobs_server: AisfProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{jobs_server.http_url}", timeout=30) as client:
        yield client


ROWS = [[0.1 * i, -0.2 * i, 0.3, 1.0] for i in range(5)]


def test_submit_answers_202_at_once_and_the_result_equals_direct_inference(rest: httpx.Client) -> None:
    answer = submit(rest, {"model": "tabular-demo", "requests": [tabular_request(r) for r in ROWS]})
    assert answer.status_code == 202
    job = answer.json()
    assert answer.headers["location"] == f"/v1/jobs/{job['job_id']}"
    assert job["state"] == "queued" and job["progress"] == {"done": 0, "total": 5}
    finished = wait_final(rest, job["job_id"])
    assert finished["state"] == "succeeded", finished
    assert finished["attempts"] == 1 and finished["start_time"] and finished["end_time"]
    responses = finished["result"]["responses"]
    for row, response in zip(ROWS, responses, strict=True):
        direct = rest.post("/v2/models/tabular-demo/infer", json=tabular_request(row)).json()
        assert response["outputs"] == direct["outputs"]
    paged = rest.get(f"/v1/jobs/{job['job_id']}/result", params={"page_size": 2}).json()
    assert paged["responses"] == responses[:2] and paged["next_page_token"] == "2"


def test_a_large_result_comes_by_reference_and_pages_in_order(rest: httpx.Client) -> None:
    rows = [[i / 50, 0.0, 0.0, 0.0] for i in range(50)]
    job = submit(rest, {"model": "tabular-demo", "requests": [tabular_request(r) for r in rows]}).json()
    finished = wait_final(rest, job["job_id"])
    assert finished["state"] == "succeeded"
    assert finished["result"] is None
    assert finished["result_url"] == f"/v1/jobs/{job['job_id']}/result"
    responses, token = [], ""
    while True:
        page = rest.get(finished["result_url"], params={"page_size": 20, "page_token": token}).json()
        responses += page["responses"]
        if not page["next_page_token"]:
            break
        token = page["next_page_token"]
    assert len(responses) == 50
    for row in (rows[0], rows[49]):
        direct = rest.post("/v2/models/tabular-demo/infer", json=tabular_request(row)).json()
        assert responses[rows.index(row)]["outputs"] == direct["outputs"]


def test_same_idempotency_key_returns_the_same_job(rest: httpx.Client) -> None:
    body = {"model": "tabular-demo", "requests": [tabular_request(ROWS[0])], "idempotency_key": "order-42"}
    first = submit(rest, body)
    again = submit(rest, body)
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["job_id"] == first.json()["job_id"]
    other_tenant = submit(rest, body, tenant="someone-else")
    assert other_tenant.status_code == 202 and other_tenant.json()["job_id"] != first.json()["job_id"]


def test_events_stream_every_state_change_until_the_end(rest: httpx.Client) -> None:
    job = submit(rest, {"model": "tabular-demo", "requests": [tabular_request(r) for r in ROWS]}).json()
    states = []
    with rest.stream("GET", f"/v1/jobs/{job['job_id']}/events") as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        for line in events.iter_lines():
            if line.startswith("data: "):
                states.append(httpx.Response(200, content=line[6:]).json()["state"])
    order = ["queued", "running", "succeeded"]
    assert states[-1] == "succeeded"
    assert [order.index(s) for s in states] == sorted(order.index(s) for s in states)


def test_list_filters_and_pages_newest_first(rest: httpx.Client) -> None:
    ids = [
        submit(
            rest, {"model": "tabular-demo", "requests": [tabular_request(ROWS[0])]}, tenant="lister"
        ).json()["job_id"]
        for _ in range(3)
    ]
    for job_id in ids:
        wait_final(rest, job_id)
    first = rest.get("/v1/jobs", params={"tenant": "lister", "page_size": 2}).json()
    second = rest.get(
        "/v1/jobs", params={"tenant": "lister", "page_size": 2, "page_token": first["next_page_token"]}
    ).json()
    listed = [j["job_id"] for j in first["jobs"] + second["jobs"]]
    assert listed == ids[::-1]
    assert second["next_page_token"] is None
    succeeded = rest.get("/v1/jobs", params={"tenant": "lister", "state": "succeeded"}).json()["jobs"]
    assert len(succeeded) == 3


def test_tier_sets_priority_and_only_lower_overrides_are_allowed(rest: httpx.Client) -> None:
    body = {"model": "tabular-demo", "requests": [tabular_request(ROWS[0])]}
    assert submit(rest, body, tenant="acme").json()["priority"] == 1
    assert submit(rest, body).json()["priority"] == 3
    assert submit(rest, {**body, "priority": 4}).json()["priority"] == 4
    denied = submit(rest, {**body, "priority": 1})
    assert (
        denied.status_code == 400
        and "priority: 1 is not allowed for tier 'standard'" in denied.json()["error"]
    )


def test_cancelling_a_finished_job_is_409_and_unknown_jobs_404(rest: httpx.Client) -> None:
    job = submit(rest, {"model": "tabular-demo", "requests": [tabular_request(ROWS[0])]}).json()
    wait_final(rest, job["job_id"])
    cancelled = rest.delete(f"/v1/jobs/{job['job_id']}")
    assert cancelled.status_code == 409 and "already succeeded" in cancelled.json()["error"]
    for response in (rest.get("/v1/jobs/job-missing"), rest.delete("/v1/jobs/job-missing")):
        assert response.status_code == 404 and "unknown job 'job-missing'" in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"model": "ghost", "requests": [tabular_request(ROWS[0])]}, 404, "unknown model 'ghost'"),
        ({"model": "tabular-demo", "requests": []}, 400, "requests"),
        ({"model": "tabular-demo", "requests": [{"inputs": [{"name": "input__0"}]}]}, 400, "requests[0]"),
        (
            {"model": "tabular-demo", "requests": [tabular_request(ROWS[0]), tabular_request([1.0, 2.0])]},
            400,
            "requests[1]: input 'input__0': shape [1, 4] holds 4 elements",
        ),
        (
            {"model": "tabular-demo", "requests": [tabular_request(ROWS[0])] * 51},
            400,
            "exceed the limit of 50",
        ),
        ({"model": "tabular-demo", "requests": [tabular_request(ROWS[0])], "surprise": 1}, 400, "surprise"),
    ],
)
def test_bad_submissions_get_typed_errors_and_write_nothing(
    rest: httpx.Client, body: dict[str, object], status: int, message: str
) -> None:
    before = len(rest.get("/v1/jobs", params={"tenant": "bad-input"}).json()["jobs"])
    answer = submit(rest, body, tenant="bad-input")
    assert answer.status_code == status
    assert message in answer.json()["error"]
    assert len(rest.get("/v1/jobs", params={"tenant": "bad-input"}).json()["jobs"]) == before


def test_invalid_json_body_is_400(rest: httpx.Client) -> None:
    answer = rest.post("/v1/jobs", content=b"{nope", headers={"content-type": "application/json"})
    assert answer.status_code == 400


def test_openapi_documents_the_jobs_api(rest: httpx.Client) -> None:
    schema = rest.get("/openapi.json").json()
    assert {"post", "get"} <= set(schema["paths"]["/v1/jobs"])
    assert "delete" in schema["paths"]["/v1/jobs/{job_id}"]
    assert "/v1/jobs/{job_id}/events" in schema["paths"]
    body = schema["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"model", "requests", "endpoint", "idempotency_key"} <= set(body["properties"])


def test_grpc_clients_submit_and_watch_through_the_job_contract(jobs_server: AisfProcess) -> None:
    request = v2_pb.ModelInferRequest()
    request.inputs.add(name="input__0", datatype="FP32", shape=[2, 4])
    request.raw_input_contents.append(np.ones((2, 4), np.float32).tobytes())
    with grpc.insecure_channel(jobs_server.grpc_url) as channel:
        stub = pb_grpc.JobServiceStub(channel)
        answer = stub.SubmitJob(
            pb.SubmitJobRequest(model_name="tabular-demo", requests=[request.SerializeToString()]), timeout=10
        )
        assert answer.created and answer.job.state == pb.JOB_STATE_QUEUED
        states = [
            update.job.state
            for update in stub.WatchJob(pb.WatchJobRequest(job_id=answer.job.job_id), timeout=30)
        ]
        assert states[-1] == pb.JOB_STATE_SUCCEEDED
        job = stub.GetJob(pb.GetJobRequest(job_id=answer.job.job_id), timeout=10).job
        response = v2_pb.ModelInferResponse.FromString(job.responses[0])
        assert list(response.outputs[0].shape) == [2, 1]
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetJob(pb.GetJobRequest(job_id="job-nope"), timeout=10)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
