"""The feature lane against real parts: Feast's registry and Redis online store, aisf's fast path read
beside Feast's own SDK, Feast's REST format and its `remote` online store reading through aisf, and
recsys-demo fetching its own features on the real-time lane and in a job."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import redis
import tritonclient.grpc as triton
import xgboost
import yaml
from prometheus_client import CollectorRegistry

from aisf.feature.v1 import feature_service_pb2 as pb
from aisf.feature.v1 import feature_service_pb2_grpc as pb_grpc
from aisf.services.feature import feast_layout
from aisf.services.feature.catalog import Catalog, load_catalog
from aisf.services.feature.metrics import FeatureMetrics
from aisf.services.feature.online import FeatureLookup
from aisf.services.feature.server import online_store, open_feature_store
from aisf.services.feature.types import FeatureQuery, FeatureResult, Status
from aisf.services.feature_samples import (
    ITEMS,
    USERS,
    build_recsys_demo,
    feature_tables,
    ranker_rows,
)
from tests.support.features import FEATURE_DB, materialized_repo
from tests.support.jobs import submit, wait_final
from tests.support.processes import AisfProcess, running_aisf

MISSING_ITEM = ITEMS + 1000


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return materialized_repo(tmp_path_factory.mktemp("features"))


@pytest.fixture(scope="module")
def feast_store(repo: Path) -> Any:
    return open_feature_store(repo)


@pytest.fixture(scope="module")
def catalog(feast_store: Any) -> Catalog:
    return load_catalog(feast_store)


def lookup(catalog: Catalog, feast_store: Any) -> FeatureLookup:
    return FeatureLookup(
        catalog, online_store(catalog, feast_store, 0.5), FeatureMetrics(CollectorRegistry()), 1000
    )


def read(catalog: Catalog, feast_store: Any, query: FeatureQuery) -> FeatureResult:
    async def go() -> FeatureResult:
        features = lookup(catalog, feast_store)
        try:
            return await features.get(query)
        finally:
            await features.close()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("models")
    demo = build_recsys_demo(repository)
    strict = repository / "recsys-strict"
    (strict / "1").mkdir(parents=True)
    (strict / "1" / "model.json").write_bytes((demo / "1" / "model.json").read_bytes())
    config = yaml.safe_load((demo / "config.yaml").read_text())
    config["features"]["missing"] = "not_found"
    (strict / "config.yaml").write_text(yaml.safe_dump(config))
    return repository


@pytest.fixture(scope="module")
def server(models: Path, repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AisfProcess]:
    env = {"AISF_FEATURE_REPO": str(repo), "AISF_FEATURE_MAX_ENTITIES": "300"}
    with running_aisf(models, tmp_path_factory.mktemp("data"), env=env) as process:
        yield process


@pytest.fixture(scope="module")
def rest(server: AisfProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{server.http_url}", timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def features_stub(server: AisfProcess) -> Iterator[pb_grpc.FeatureServiceStub]:
    with grpc.insecure_channel(server.grpc_url) as channel:
        yield pb_grpc.FeatureServiceStub(channel)


def test_the_fast_path_answers_what_feasts_sdk_answers_for_the_same_keys(
    catalog: Catalog, feast_store: Any
) -> None:
    users = list(range(1, USERS + 1))
    items = [((u * 7) % ITEMS) + 1 for u in users]
    entities = {"user_id": users, "item_id": items}
    ours = read(catalog, feast_store, FeatureQuery(entities, feature_service="ranker_features"))
    theirs = feast_store.get_online_features(
        features=feast_store.get_feature_service("ranker_features"),
        entity_rows=[{"user_id": u, "item_id": i} for u, i in zip(users, items, strict=True)],
    ).proto
    names = list(theirs.metadata.feature_names.val)
    assert sorted(c.name for c in ours.columns) == sorted(names)
    for name, vector in zip(names, theirs.results, strict=True):
        column = ours.column(name)
        expected = [getattr(v, v.WhichOneof("val")) for v in vector.values]
        np.testing.assert_array_equal(column.values, np.asarray(expected, dtype=column.values.dtype))
        assert column.statuses.tolist() == list(vector.statuses)
        if name not in entities:
            stamps = [t.seconds * 10**9 + t.nanos for t in vector.event_timestamps]
            # Feast keeps microseconds of the event time it wrote; so do we.
            assert (np.abs(column.event_time_ns - np.asarray(stamps)) < 1000).all()


def test_a_missing_entity_is_not_found_where_feast_says_present_with_nulls(
    catalog: Catalog, feast_store: Any
) -> None:
    ours = read(
        catalog, feast_store, FeatureQuery({"item_id": [1, MISSING_ITEM]}, ("item_features:item_ctr",))
    )
    assert ours.column("item_ctr").statuses.tolist() == [Status.PRESENT, Status.NOT_FOUND]
    theirs = feast_store.get_online_features(
        features=["item_features:item_ctr"], entity_rows=[{"item_id": 1}, {"item_id": MISSING_ITEM}]
    ).proto
    assert list(theirs.results[1].statuses) == [Status.PRESENT, Status.PRESENT]  # Feast 0.67 on Redis
    assert theirs.results[1].values[1].WhichOneof("val") is None


def test_rows_older_than_their_views_ttl_are_outside_max_age_and_keep_their_value(
    catalog: Catalog, feast_store: Any
) -> None:
    views = dict(catalog.views)
    views["item_features"] = dataclasses.replace(views["item_features"], ttl_s=1.0)  # rows are hours old
    aged = dataclasses.replace(catalog, views=views)
    fresh = read(catalog, feast_store, FeatureQuery({"item_id": [3]}, ("item_features:item_price",)))
    old = read(aged, feast_store, FeatureQuery({"item_id": [3]}, ("item_features:item_price",)))
    assert old.column("item_price").statuses.tolist() == [Status.OUTSIDE_MAX_AGE]
    assert old.column("item_price").values.tolist() == fresh.column("item_price").values.tolist()


def test_an_expired_redis_key_reads_as_not_found(catalog: Catalog, feast_store: Any) -> None:
    key = feast_layout.entity_key(["item_id"], ["INT64"], [ITEMS]) + catalog.project.encode()
    with redis.Redis(db=FEATURE_DB) as client:
        saved = client.hgetall(key)
        assert saved, "the sample item should be materialized"
        client.pexpire(key, 50)  # what Feast's key_ttl_seconds does to a key
        time.sleep(0.2)
        try:
            result = read(
                catalog, feast_store, FeatureQuery({"item_id": [ITEMS]}, ("item_features:item_ctr",))
            )
            assert result.column("item_ctr").statuses.tolist() == [Status.NOT_FOUND]
        finally:
            client.hset(key, mapping=saved)


def test_rest_speaks_feasts_feature_server_format(rest: httpx.Client) -> None:
    body = {
        "features": ["user_features:user_ctr", "user_features:user_tenure_days"],
        "entities": {"user_id": [1, 2]},
    }
    answer = rest.post("/v1/features/get-online-features", json=body)
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert document["metadata"]["feature_names"] == ["user_id", "user_ctr", "user_tenure_days"]
    users, _ = feature_tables()
    assert document["results"][0]["values"] == [1, 2]
    assert document["results"][1]["values"] == pytest.approx(users["user_ctr"].to_numpy()[:2].tolist())
    assert document["results"][2]["values"] == users["user_tenure_days"].to_numpy()[:2].tolist()
    assert document["results"][1]["statuses"] == ["PRESENT", "PRESENT"]
    assert document["results"][1]["event_timestamps"][0].endswith("Z")
    full = rest.post(
        "/v1/features/get-online-features",
        json={
            "feature_service": "ranker_features",
            "entities": {"user_id": [1], "item_id": [MISSING_ITEM]},
            "full_feature_names": True,
        },
    ).json()
    assert "item_features__item_ctr" in full["metadata"]["feature_names"]
    at = full["metadata"]["feature_names"].index("item_features__item_ctr")
    assert full["results"][at]["values"] == [None] and full["results"][at]["statuses"] == ["NOT_FOUND"]


def test_feasts_remote_online_store_reads_through_aisf(
    repo: Path, server: AisfProcess, tmp_path: Path
) -> None:
    from feast import FeatureStore

    client_repo = tmp_path / "client"
    client_repo.mkdir()
    config = yaml.safe_load((repo / "feature_store.yaml").read_text())
    config["registry"] = str(repo / "data" / "registry.db")
    config["online_store"] = {"type": "remote", "path": f"http://{server.http_url}/v1/features"}
    (client_repo / "feature_store.yaml").write_text(yaml.safe_dump(config))
    remote = (
        FeatureStore(repo_path=str(client_repo))
        .get_online_features(
            features=["item_features:item_price", "item_features:item_age_days"],
            entity_rows=[{"item_id": 4}, {"item_id": 5}],
        )
        .to_dict()
    )
    _, items = feature_tables()
    assert remote["item_price"] == pytest.approx(items["item_price"].to_numpy()[3:5].tolist())
    assert remote["item_age_days"] == items["item_age_days"].to_numpy()[3:5].tolist()


def test_grpc_answers_typed_columns(features_stub: pb_grpc.FeatureServiceStub) -> None:
    request = pb.GetOnlineFeaturesRequest(features=["item_features:item_price"])
    request.entities["item_id"].int64_values.values.extend([1, MISSING_ITEM])
    reply = features_stub.GetOnlineFeatures(request)
    assert reply.online_store == "redis"
    assert [c.name for c in reply.columns] == ["item_id", "item_price"]
    price = reply.columns[1]
    _, items = feature_tables()
    assert price.value_type == "DOUBLE" and price.double_values.values[0] == items["item_price"].to_numpy()[0]
    assert list(price.statuses) == [pb.FIELD_STATUS_PRESENT, pb.FIELD_STATUS_NOT_FOUND]
    listed = features_stub.ListFeatures(pb.ListFeaturesRequest())
    assert {v.name for v in listed.feature_views} == {"user_features", "item_features"}


BAD_BODIES = [
    ({"features": ["nope:x"], "entities": {"user_id": [1]}}, "features[0]: unknown feature view 'nope'"),
    ({"features": ["user_features:nope"], "entities": {"user_id": [1]}}, "has no feature 'nope'"),
    ({"feature_service": "nope", "entities": {"user_id": [1]}}, "unknown feature service 'nope'"),
    ({"features": ["user_features:user_ctr"], "entities": {"user_id": ["a"]}}, "entities.user_id[0]"),
    ({"features": ["user_features:user_ctr"], "entities": {"user_id": list(range(301))}}, "the limit is 300"),
    ({"features": ["user_features:user_ctr"], "entities": {"user_id": []}}, "entities: no rows"),
    (
        {"features": ["user_features:user_ctr"], "entities": {"item_id": [1]}},
        "entities.item_id: not a join key",
    ),
    (
        {"features": ["user_features:user_ctr", "user_features:user_ctr"], "entities": {"user_id": [1]}},
        "features[1]: 'user_features:user_ctr' is asked for twice",
    ),
    ({"features": ["user_features"], "entities": {"user_id": [1]}}, "is not '<feature view>:<feature>'"),
    ({"entities": {"user_id": [1]}}, "exactly one"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
def test_bad_requests_are_typed_400s_and_invalid_argument_naming_the_field(
    rest: httpx.Client, features_stub: pb_grpc.FeatureServiceStub, body: dict[str, Any], message: str
) -> None:
    answer = rest.post("/v1/features/get-online-features", json=body)
    assert answer.status_code == 400 and message in answer.json()["error"], answer.text
    request = pb.GetOnlineFeaturesRequest(
        features=body.get("features", []), feature_service=body.get("feature_service", "")
    )
    for key, values in body["entities"].items():
        target = request.entities[key]
        if values and isinstance(values[0], str):
            target.string_values.values.extend(values)
        else:
            target.int64_values.values.extend(values)
    with pytest.raises(grpc.RpcError) as failure:
        features_stub.GetOnlineFeatures(request)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in (
        failure.value.details() or ""
    )


def test_a_duplicate_json_key_is_a_400_not_a_silent_last_one_wins(rest: httpx.Client) -> None:
    raw = b'{"features": ["user_features:user_ctr"], "entities": {"user_id": [1], "user_id": [2]}}'
    answer = rest.post("/v1/features/get-online-features", content=raw)
    assert answer.status_code == 400 and "user_id: given twice" in answer.json()["error"]


def _ranker_scores(user: int, items: list[int], models: Path) -> np.ndarray:
    users, table = feature_tables()
    booster = xgboost.Booster(model_file=str(models / "recsys-demo" / "1" / "model.json"))
    rows = ranker_rows(users, table, np.full(len(items), user), np.asarray(items))
    return booster.predict(xgboost.DMatrix(rows))


def _rank(server: AisfProcess, model: str, user: int, items: list[int]) -> np.ndarray:
    client = triton.InferenceServerClient(server.grpc_url)
    inputs = [triton.InferInput("user_id", [1], "INT64"), triton.InferInput("item_id", [len(items)], "INT64")]
    inputs[0].set_data_from_numpy(np.asarray([user], dtype=np.int64))
    inputs[1].set_data_from_numpy(np.asarray(items, dtype=np.int64))
    result = client.infer(model, inputs)
    return result.as_numpy("output__0").reshape(-1)


def test_recsys_demo_ranks_candidates_from_entity_ids_alone(server: AisfProcess, models: Path) -> None:
    items = list(range(1, 101))
    scores = _rank(server, "recsys-demo", 17, items)
    np.testing.assert_allclose(scores, _ranker_scores(17, items, models), rtol=1e-6)


def test_a_missing_candidate_gets_default_features_or_a_typed_not_found_by_policy(
    server: AisfProcess,
) -> None:
    scores = _rank(server, "recsys-demo", 17, [1, MISSING_ITEM])
    assert scores.shape == (2,) and np.isfinite(scores).all()
    with pytest.raises(triton.InferenceServerException) as failure:
        _rank(server, "recsys-strict", 17, [1, MISSING_ITEM])
    assert failure.value.status() == "StatusCode.NOT_FOUND"
    assert f"item_id={MISSING_ITEM}" in failure.value.message()


def test_a_job_on_recsys_demo_fetches_its_features_too(rest: httpx.Client, models: Path) -> None:
    body = {
        "inputs": [
            {"name": "user_id", "shape": [1], "datatype": "INT64", "data": [5]},
            {"name": "item_id", "shape": [3], "datatype": "INT64", "data": [1, 2, 3]},
        ]
    }
    answer = submit(rest, {"model": "recsys-demo", "requests": [body]})
    assert answer.status_code == 202, answer.text
    job = answer.json()
    finished = wait_final(rest, job["job_id"])
    assert finished["state"] == "succeeded", finished
    scores = finished["result"]["responses"][0]["outputs"][0]["data"]
    np.testing.assert_allclose(scores, _ranker_scores(5, [1, 2, 3], models), rtol=1e-6)


def test_feasts_sdk_path_on_sqlite_answers_what_the_redis_fast_path_answers(
    catalog: Catalog, feast_store: Any, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    from aisf.services.feature import repo_tools
    from aisf.services.feature_samples import build_feature_repo

    sqlite_repo = build_feature_repo(tmp_path / "sqlite")
    repo_tools.apply(sqlite_repo)
    repo_tools.materialize(sqlite_repo, datetime(2000, 1, 1, tzinfo=UTC), None, incremental=False)
    sqlite_store = open_feature_store(sqlite_repo)
    sqlite_catalog = load_catalog(sqlite_store)
    assert sqlite_catalog.online_store.type == "sqlite"
    query = FeatureQuery(
        {"user_id": [1, 2, 3], "item_id": [4, MISSING_ITEM, 6]}, feature_service="ranker_features"
    )
    fast, sdk = read(catalog, feast_store, query), read(sqlite_catalog, sqlite_store, query)
    assert sdk.online_store == "sqlite" and fast.online_store == "redis"
    for column in fast.columns:
        other = sdk.column(column.name)
        np.testing.assert_array_equal(column.values, other.values)
        assert column.statuses.tolist() == other.statuses.tolist(), column.name
