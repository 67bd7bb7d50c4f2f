"""Keys on every endpoint, against a real `aisf serve` with AISF_AUTH=keys: the route list and the method
list come from the running server and the proto descriptors, so a new endpoint cannot slip through."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
import openai
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from aisf.gateway.auth import PUBLIC_ROUTES
from aisf.services.common.auth.permissions import RULES
from tests.support.jobs import tabular_request, wait_final
from tests.support.keys import aisf_admin, bearer, create_key, key_id
from tests.support.processes import AisfProcess, running_aisf


@dataclass(frozen=True)
class Keys:
    admin: str
    acme: str  # infer, tenant acme (gold)
    globex: str  # infer, tenant globex (standard)
    scoped: str  # infer on tabular-demo only
    cheap: str  # tenant of the free tier (2 requests/s here)
    revoked: str


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def keys(data_dir: Path) -> Keys:
    made = Keys(
        admin=create_key(data_dir, "ops", roles="infer,admin"),
        acme=create_key(data_dir, "acme", tier="gold"),
        globex=create_key(data_dir, "globex"),
        scoped=create_key(data_dir, "acme", models="tabular-demo"),
        cheap=create_key(data_dir, "cheap", tier="free"),
        revoked=create_key(data_dir, "globex"),
    )
    aisf_admin(data_dir, "keys", "revoke", key_id(made.revoked))
    return made


@pytest.fixture(scope="module")
def server(sample_repository: Path, data_dir: Path, keys: Keys) -> Iterator[AisfProcess]:
    env = {"AISF_AUTH": "keys", "AISF_AUTH_CACHE_S": "0.5", "AISF_TIER_RATE_LIMITS": '{"free": 2}'}
    with running_aisf(sample_repository, data_dir, env=env) as process:
        yield process


@pytest.fixture(scope="module")
def rest(server: AisfProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{server.http_url}", timeout=60) as client:
        yield client


def _routes(rest: httpx.Client) -> list[tuple[str, str]]:
    paths = rest.get("/openapi.json").json()["paths"]
    return [(method.upper(), path) for path, operations in paths.items() for method in operations]


def _filled(path: str) -> str:
    return path.replace("{", "").replace("}", "")  # /v2/models/{model}/infer -> /v2/models/model/infer


def test_every_rest_route_but_health_refuses_a_caller_without_a_valid_key(
    rest: httpx.Client, keys: Keys
) -> None:
    routes = _routes(rest)
    assert len(routes) > 30  # the whole API, not an empty schema
    for method, path in routes:
        for headers in (
            {},
            bearer("aisf_0123456789ab_" + "z" * 43),
            bearer(keys.revoked),
            {"authorization": "x"},
        ):
            answer = rest.request(method, _filled(path), headers=headers)
            if path in PUBLIC_ROUTES:
                assert answer.status_code != 401, (method, path)
            else:
                assert answer.status_code == 401, (method, path, headers, answer.text)
                assert answer.headers["www-authenticate"].startswith("Bearer")
    assert {path for _, path in routes} >= PUBLIC_ROUTES


def _invoke(channel: grpc.Channel, method: str, metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
    service, name = method.strip("/").split("/")
    descriptor = _descriptors()[service].methods_by_name[name]
    identity = bytes
    try:
        if descriptor.client_streaming:
            call = (
                channel.stream_stream(method, request_serializer=identity, response_deserializer=identity)
                if descriptor.server_streaming
                else channel.stream_unary(method, request_serializer=identity, response_deserializer=identity)
            )
            reply = call(iter([b""]), metadata=metadata, timeout=10)
        elif descriptor.server_streaming:
            reply = channel.unary_stream(method, request_serializer=identity, response_deserializer=identity)(
                b"", metadata=metadata, timeout=10
            )
        else:
            channel.unary_unary(method, request_serializer=identity, response_deserializer=identity)(
                b"", metadata=metadata, timeout=10
            )
            return grpc.StatusCode.OK
        if descriptor.server_streaming:
            list(reply)
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        return error.code()  # type: ignore[no-any-return,attr-defined]


def _descriptors() -> dict[str, object]:
    from tests.unit.test_auth import _served_methods  # the proto descriptors of every service

    _served_methods()
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.Default()
    return {name: pool.FindServiceByName(name) for name in {m.strip("/").split("/")[0] for m in RULES}}


@pytest.fixture(scope="module")
def control_plane(sample_repository: Path, data_dir: Path, server: AisfProcess) -> Iterator[AisfProcess]:
    """The mesh's services are the control-plane role's: its own process, on the same database (keys)."""
    with running_aisf(
        sample_repository, data_dir, env={"AISF_AUTH": "keys"}, role="control-plane"
    ) as process:
        yield process


@pytest.fixture(scope="module")
def channels(server: AisfProcess, control_plane: AisfProcess) -> Iterator[dict[str, grpc.Channel]]:
    """A channel to the process serving each service."""
    opened = [grpc.insecure_channel(p.grpc_url) for p in (server, control_plane)]
    yield {name: channel for channel in opened for name in _served_services(channel)}
    for channel in opened:
        channel.close()


def _service(method: str) -> str:
    return method.strip("/").split("/")[0]


def test_every_grpc_method_but_health_refuses_a_caller_without_a_valid_key(
    channels: dict[str, grpc.Channel], keys: Keys
) -> None:
    # Every service but the feature lane's (no feature repository here) and the pii role's (its own
    # test starts it: its models take seconds to load).
    absent = {"aisf.feature.v1.FeatureService", "aisf.pii.v1.PiiService"}
    assert set(channels) == {_service(m) for m in RULES} - absent
    for method, rule in RULES.items():
        channel = channels.get(_service(method))
        if channel is None:
            continue
        for metadata in (
            (),
            tuple(bearer("aisf_0123456789ab_" + "z" * 43).items()),
            tuple(bearer(keys.revoked).items()),
        ):
            code = _invoke(channel, method, metadata)
            if rule.public:
                assert code != grpc.StatusCode.UNAUTHENTICATED, method
            else:
                assert code == grpc.StatusCode.UNAUTHENTICATED, (method, metadata, code)


def _served_services(channel: grpc.Channel) -> set[str]:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    ask = reflection_pb2.ServerReflectionRequest(list_services="")
    (answer,) = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(iter([ask]))
    names = {service.name for service in answer.list_services_response.service}
    return names - {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}


def test_an_infer_key_may_not_call_any_admin_method(channels: dict[str, grpc.Channel], keys: Keys) -> None:
    for method, rule in RULES.items():
        channel = channels.get(_service(method))
        if rule.role == "admin" and channel is not None:
            assert (
                _invoke(channel, method, tuple(bearer(keys.acme).items()))
                == grpc.StatusCode.PERMISSION_DENIED
            ), method


def _tabular(value: float = 1.0) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("input__0", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.full((1, 4), value, np.float32))
    return tensor


def test_tritonclient_infers_with_its_headers_and_is_refused_outside_a_keys_scope(
    server: AisfProcess, keys: Keys
) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        assert client.is_server_ready()  # health: no key
        answer = client.infer("tabular-demo", [_tabular()], headers=bearer(keys.scoped))
        assert answer.as_numpy("output__0").shape == (1, 1)
        with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
            client.infer("tabular-demo", [_tabular()])
        vision = grpcclient.InferInput("input__0", [1, 3, 64, 64], "FP32")
        vision.set_data_from_numpy(np.zeros((1, 3, 64, 64), np.float32))
        with pytest.raises(InferenceServerException, match="PERMISSION_DENIED.*may not use 'vision-demo'"):
            client.infer("vision-demo", [vision], headers=bearer(keys.scoped))
        with pytest.raises(InferenceServerException, match="PERMISSION_DENIED.*'admin' role"):
            client.load_model("tabular-demo", headers=bearer(keys.acme))
        client.load_model("tabular-demo", headers=bearer(keys.admin))
    finally:
        client.close()


def test_rest_answers_403_for_a_role_or_model_the_key_lacks(rest: httpx.Client, keys: Keys) -> None:
    refused = rest.post("/v2/repository/models/tabular-demo/load", headers=bearer(keys.acme))
    assert refused.status_code == 403 and "'admin' role" in refused.json()["error"]
    body = {
        "inputs": [{"name": "input__0", "shape": [1, 3, 64, 64], "datatype": "FP32", "data": [0.0] * 12288}]
    }
    outside = rest.post("/v2/models/vision-demo/infer", json=body, headers=bearer(keys.scoped))
    assert outside.status_code == 403 and "vision-demo" in outside.json()["error"]
    inside = rest.post(
        "/v2/models/tabular-demo/infer", json=tabular_request([1, 2, 3, 4]), headers=bearer(keys.scoped)
    )
    assert inside.status_code == 200, inside.text


def test_the_openai_sdk_uses_its_api_key_as_is(server: AisfProcess, keys: Keys) -> None:
    url = f"http://{server.http_url}/v1"
    with (
        openai.OpenAI(base_url=url, api_key=keys.acme, max_retries=0) as client,
        openai.OpenAI(base_url=url, api_key="wrong", max_retries=0) as stranger,
        openai.OpenAI(base_url=url, api_key=keys.scoped, max_retries=0) as scoped,
    ):
        answer = client.chat.completions.create(
            model="llm-demo", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert answer.choices[0].message.content is not None
        with pytest.raises(openai.AuthenticationError):
            stranger.models.list()
        with pytest.raises(openai.PermissionDeniedError):
            scoped.chat.completions.create(
                model="llm-demo", messages=[{"role": "user", "content": "hi"}], max_tokens=4
            )


def test_the_tenant_and_tier_come_from_the_key_never_from_a_header(rest: httpx.Client, keys: Keys) -> None:
    job = rest.post(
        "/v1/jobs",
        json={"model": "tabular-demo", "requests": [tabular_request([1, 2, 3, 4])]},
        headers=bearer(keys.acme),
    )
    assert job.status_code == 202, job.text
    made = job.json()
    assert (made["tenant"], made["tier"], made["priority"]) == ("acme", "gold", 1)
    posing = rest.post(
        "/v1/jobs",
        json={"model": "tabular-demo", "requests": [tabular_request([1, 2, 3, 4])]},
        headers={**bearer(keys.acme), "X-Aisf-Tenant": "globex"},
    )
    assert posing.status_code == 403 and "tenant 'acme'" in posing.json()["error"]
    assert rest.get(f"/v1/jobs/{made['job_id']}", headers=bearer(keys.globex)).status_code == 404
    assert made["job_id"] not in {
        j["job_id"] for j in rest.get("/v1/jobs", headers=bearer(keys.globex)).json()["jobs"]
    }
    owner = rest.get("/v1/jobs", headers=bearer(keys.acme)).json()["jobs"]
    assert made["job_id"] in {j["job_id"] for j in owner} and {j["tenant"] for j in owner} == {"acme"}
    assert made["job_id"] in {
        j["job_id"] for j in rest.get("/v1/jobs", headers=bearer(keys.admin)).json()["jobs"]
    }
    with httpx.Client(base_url=str(rest.base_url), headers=bearer(keys.acme), timeout=60) as acme:
        assert wait_final(acme, made["job_id"])["state"] == "succeeded"


def test_a_revoked_key_is_refused_within_the_cache_time(rest: httpx.Client, data_dir: Path) -> None:
    key = create_key(data_dir, "globex")
    assert rest.get("/v2", headers=bearer(key)).status_code == 200
    aisf_admin(data_dir, "keys", "revoke", key_id(key))
    deadline = time.monotonic() + 5
    while rest.get("/v2", headers=bearer(key)).status_code == 200:
        assert time.monotonic() < deadline, "revoked key still accepted after 5 s (cache is 0.5 s)"
        time.sleep(0.1)
    assert rest.get("/v2", headers=bearer(key)).status_code == 401


def test_a_free_tier_tenant_over_its_rate_gets_429_with_retry_after(rest: httpx.Client, keys: Keys) -> None:
    answers = [rest.get("/v2", headers=bearer(keys.cheap)) for _ in range(8)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited and int(limited[0].headers["retry-after"]) >= 1
    assert answers[0].status_code == 200


def test_an_admin_key_acting_for_a_tenant_submits_at_that_tenants_tier(
    rest: httpx.Client, keys: Keys
) -> None:
    body = {"model": "tabular-demo", "requests": [tabular_request([1, 2, 3, 4])]}
    job = rest.post("/v1/jobs", json=body, headers={**bearer(keys.admin), "X-Aisf-Tenant": "acme"})
    assert job.status_code == 202, job.text
    assert (job.json()["tenant"], job.json()["tier"], job.json()["priority"]) == ("acme", "gold", 1)
    own = rest.post("/v1/jobs", json=body, headers=bearer(keys.admin)).json()
    assert (own["tenant"], own["tier"], own["priority"]) == ("ops", "standard", 3)
