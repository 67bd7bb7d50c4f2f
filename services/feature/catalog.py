"""What a feature repository holds, as plain data: views (join keys, typed features, ttl), feature
services, and where its online store is. Built from Feast's registry once, at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class FeatureField:
    name: str
    value_type: str  # Feast's ValueType name: DOUBLE, FLOAT, INT64, ...


@dataclass(frozen=True, slots=True)
class FeatureViewDef:
    name: str
    join_keys: tuple[str, ...]
    join_key_types: tuple[str, ...]
    features: tuple[FeatureField, ...]
    ttl_s: float  # 0: rows never age out

    def feature(self, name: str) -> FeatureField | None:
        return next((f for f in self.features if f.name == name), None)


@dataclass(frozen=True, slots=True)
class OnlineStoreConfig:
    type: str  # "redis", "sqlite", ...
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    redis_db: int = 0
    redis_password: str = field(default="", repr=False)
    redis_ssl: bool = False


@dataclass(frozen=True, slots=True)
class Catalog:
    project: str
    views: dict[str, FeatureViewDef]
    services: dict[str, tuple[tuple[str, str], ...]]  # name -> (view, feature) in order
    online_store: OnlineStoreConfig
    entity_key_version: int = 3


def parse_redis_connection(text: str) -> dict[str, Any]:
    """Feast's Redis `connection_string`: "host:port,db=0,password=...,ssl=true"."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    options: dict[str, Any] = {}
    if parts and "=" not in parts[0]:
        host, _, port = parts.pop(0).rpartition(":")
        options["redis_host"], options["redis_port"] = host or "127.0.0.1", int(port or 6379)
    for part in parts:
        key, _, value = part.partition("=")
        if key == "db":
            options["redis_db"] = int(value)
        elif key == "password":
            options["redis_password"] = value
        elif key == "ssl":
            options["redis_ssl"] = value.lower() in ("true", "1", "yes")
    return options


def load_catalog(store: Any) -> Catalog:
    """Read a `feast.FeatureStore`'s registry (the caller imports feast: it takes seconds)."""
    views = {}
    for view in store.list_feature_views():
        columns = {c.name: c for c in view.entity_columns}
        keys = tuple(view.join_keys)
        types = tuple(_value_type(columns[k].dtype) for k in keys)
        features = tuple(FeatureField(f.name, _value_type(f.dtype)) for f in view.features)
        ttl = view.ttl.total_seconds() if view.ttl else 0.0
        views[view.name] = FeatureViewDef(view.name, keys, types, features, ttl)
    services = {}
    for service in store.list_feature_services():
        refs = []
        for projection in service.feature_view_projections:
            name = projection.name_to_use() if hasattr(projection, "name_to_use") else projection.name
            refs += [(name, f.name) for f in projection.features]
        services[service.name] = tuple(refs)
    config = store.config
    online = config.online_store
    kind = str(getattr(online, "type", "sqlite")).rsplit(".", 1)[-1].lower()
    if "redis" in kind:  # a cluster or sentinel deployment keeps its name and Feast's SDK path
        deployment = str(getattr(online, "redis_type", "redis")).rsplit(".", 1)[-1].lower()
        kind = "redis" if deployment == "redis" else f"redis_{deployment.removeprefix('redis_')}"
    options = parse_redis_connection(online.connection_string) if kind.startswith("redis") else {}
    return Catalog(
        config.project,
        views,
        services,
        OnlineStoreConfig(kind, **options),
        int(config.entity_key_serialization_version),
    )


def _value_type(dtype: Any) -> str:
    return str(dtype.to_value_type().name)


def repository_config(repo: Path) -> Path:
    path = repo / "feature_store.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: AISF_FEATURE_REPO must be a Feast feature repository")
    return path
