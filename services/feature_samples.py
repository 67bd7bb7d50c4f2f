"""The sample feature repository (Feast: users and items, a ranker's feature service, parquet sources)
and `recsys-demo`, an XGBoost ranker trained on the spot on those features and served with its join."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
import xgboost
import yaml

USERS = 200
ITEMS = 500
USER_FEATURES = ("user_ctr", "user_sessions", "user_spend", "user_tenure_days")
ITEM_FEATURES = ("item_ctr", "item_price", "item_popularity", "item_age_days")
RANKER_FEATURES = 8
FEATURE_SERVICE = "ranker_features"

_DEFINITIONS = '''"""Sample feature definitions (written by `aisf models build-samples`)."""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float32, Float64, Int64

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64)

user_features = FeatureView(
    name="user_features",
    entities=[user],
    ttl=timedelta(days=3650),
    schema=[
        Field(name="user_id", dtype=Int64),
        Field(name="user_ctr", dtype=Float32),
        Field(name="user_sessions", dtype=Float32),
        Field(name="user_spend", dtype=Float64),
        Field(name="user_tenure_days", dtype=Int64),
    ],
    source=FileSource(name="users", path={users!r}, timestamp_field="event_timestamp"),
)
item_features = FeatureView(
    name="item_features",
    entities=[item],
    ttl=timedelta(days=3650),
    schema=[
        Field(name="item_id", dtype=Int64),
        Field(name="item_ctr", dtype=Float32),
        Field(name="item_price", dtype=Float64),
        Field(name="item_popularity", dtype=Float32),
        Field(name="item_age_days", dtype=Int64),
    ],
    source=FileSource(name="items", path={items!r}, timestamp_field="event_timestamp"),
)
ranker_features = FeatureService(name="ranker_features", features=[user_features, item_features])
'''


def online_store_yaml(kind: str, redis_url: str = "127.0.0.1:6379,db=0") -> dict[str, object]:
    if kind == "redis":
        return {"type": "redis", "connection_string": redis_url}
    return {"type": "sqlite", "path": "data/online_store.db"}


def feature_tables(seed: int = 5) -> tuple[pa.Table, pa.Table]:
    """Deterministic users and items, stamped an hour to a day ago."""
    rng = np.random.default_rng(seed)
    now = np.datetime64("now", "us")

    def stamps(n: int) -> npt.NDArray[np.datetime64]:
        return now - rng.integers(3600, 86_400, n).astype("timedelta64[s]")

    users = pa.table(
        {
            "user_id": np.arange(1, USERS + 1, dtype=np.int64),
            "user_ctr": rng.beta(2, 20, USERS).astype(np.float32),
            "user_sessions": rng.gamma(2, 5, USERS).astype(np.float32),
            "user_spend": rng.lognormal(3, 1, USERS),
            "user_tenure_days": rng.integers(1, 2000, USERS),
            "event_timestamp": pa.array(stamps(USERS), pa.timestamp("us", tz="UTC")),
        }
    )
    items = pa.table(
        {
            "item_id": np.arange(1, ITEMS + 1, dtype=np.int64),
            "item_ctr": rng.beta(2, 30, ITEMS).astype(np.float32),
            "item_price": rng.lognormal(2, 0.8, ITEMS),
            "item_popularity": rng.gamma(1.5, 10, ITEMS).astype(np.float32),
            "item_age_days": rng.integers(0, 365, ITEMS),
            "event_timestamp": pa.array(stamps(ITEMS), pa.timestamp("us", tz="UTC")),
        }
    )
    return users, items


def build_feature_repo(repo: Path, online_store: dict[str, object] | None = None) -> Path:
    """Write a Feast repository (definitions, parquet sources); `aisf features apply` registers it."""
    data = repo / "data"
    data.mkdir(parents=True, exist_ok=True)
    users, items = feature_tables()
    pq.write_table(users, data / "users.parquet")
    pq.write_table(items, data / "items.parquet")
    config = {
        "project": "aisf_demo",
        "registry": "data/registry.db",
        "provider": "local",
        "online_store": online_store or online_store_yaml("sqlite"),
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": 3,
    }
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    definitions = _DEFINITIONS.format(
        users=str((data / "users.parquet").resolve()), items=str((data / "items.parquet").resolve())
    )
    (repo / "features.py").write_text(definitions, encoding="utf-8")
    return repo


def ranker_rows(
    users: pa.Table, items: pa.Table, user_ids: npt.NDArray[np.int64], item_ids: npt.NDArray[np.int64]
) -> npt.NDArray[np.float32]:
    """The ranker's input rows in the feature service's column order (user's features, then the item's)."""
    u = np.column_stack([users[f].to_numpy() for f in USER_FEATURES])[user_ids - 1]
    i = np.column_stack([items[f].to_numpy() for f in ITEM_FEATURES])[item_ids - 1]
    return np.hstack([u, i]).astype(np.float32)


def build_recsys_demo(repository: Path, pairs: int = 4000, seed: int = 9) -> Path:
    """XGBoost ranker: click probability of (user, item) from the sample features."""
    users, items = feature_tables()
    rng = np.random.default_rng(seed)
    x = ranker_rows(users, items, rng.integers(1, USERS + 1, pairs), rng.integers(1, ITEMS + 1, pairs))
    score = 40 * x[:, 0] * x[:, 4] + 0.02 * x[:, 6] - 0.01 * x[:, 5] + rng.normal(0, 0.05, pairs)
    labels = (score > np.median(score)).astype(np.float32)
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 4, "eta": 0.3, "nthread": 1, "seed": seed},
        xgboost.DMatrix(x, label=labels),
        num_boost_round=20,
    )
    model_dir = repository / "recsys-demo"
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    booster.save_model(str(model_dir / "1" / "model.json"))
    config = {
        "backend": "xgboost",
        "max_batch_size": 1024,
        "inputs": [{"name": "input__0", "datatype": "FP32", "dims": [RANKER_FEATURES]}],
        "outputs": [{"name": "output__0", "datatype": "FP32", "dims": [1]}],
        "instance_count": 1,
        "features": {
            "entities": [
                {"name": "user_id", "datatype": "INT64", "dims": [-1]},
                {"name": "item_id", "datatype": "INT64", "dims": [-1]},
            ],
            "feature_service": FEATURE_SERVICE,
            "missing": "default",
            "default": 0.0,
        },
    }
    (model_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return model_dir
