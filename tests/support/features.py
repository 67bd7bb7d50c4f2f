"""A sample Feast repository registered and materialized into a Redis of the tests' choosing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import redis

from aisf.services.feature import repo_tools
from aisf.services.feature_samples import build_feature_repo, online_store_yaml

FEATURE_DB = 11  # the tests' own Redis database on the shared server, flushed before use


def materialized_repo(repo: Path, host: str = "127.0.0.1", port: int = 6379, db: int = FEATURE_DB) -> Path:
    with redis.Redis(host=host, port=port, db=db) as client:
        client.flushdb()
    build_feature_repo(repo, online_store_yaml("redis", f"{host}:{port},db={db}"))
    repo_tools.apply(repo)
    repo_tools.materialize(repo, datetime(2000, 1, 1, tzinfo=UTC), None, incremental=False)
    return repo
