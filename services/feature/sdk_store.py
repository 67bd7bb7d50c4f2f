"""The general path: Feast's own SDK read, for online stores aisf does not read directly (SQLite, the
embedded default; Postgres, DynamoDB, ...). Runs in a thread: Feast's read blocks."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from aisf.services.common.errors import FeatureStoreUnavailable
from aisf.services.feature.types import COLUMN_DTYPES, FeatureColumn, ReadPlan, Status

# Feast Value oneof field -> read the scalar out of it.
_VALUE_FIELDS = (
    "double_val",
    "float_val",
    "int64_val",
    "int32_val",
    "string_val",
    "bytes_val",
    "bool_val",
    "unix_timestamp_val",
)


class FeastSdkStore:
    def __init__(self, store: Any, kind: str, threads: int = 4) -> None:
        self._store = store
        self.name = kind
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="aisf-feast")

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def read(self, plan: ReadPlan) -> list[FeatureColumn]:
        loop = asyncio.get_running_loop()
        try:
            response = await loop.run_in_executor(self._pool, self._read, plan)
        except (OSError, RuntimeError) as exc:
            raise FeatureStoreUnavailable(
                f"online store {self.name} is unavailable: {type(exc).__name__}: {exc}"
            ) from None
        return self._columns(plan, response)

    def _read(self, plan: ReadPlan) -> Any:
        entity_rows = [
            {key: values[row].item() for key, values in plan.entities.items()} for row in range(plan.rows)
        ]
        return self._store.get_online_features(
            features=list(plan.refs), entity_rows=entity_rows, full_feature_names=plan.full_feature_names
        ).proto

    def _columns(self, plan: ReadPlan, response: Any) -> list[FeatureColumn]:
        now_ns = time.time_ns()
        by_name = dict(zip(response.metadata.feature_names.val, response.results, strict=True))
        out = []
        for read in plan.reads:
            for feature, name in zip(read.features, read.names, strict=True):
                vector = by_name[name]
                dtype = COLUMN_DTYPES[feature.value_type]
                values = (
                    np.zeros(plan.rows, dtype=dtype) if dtype.kind != "O" else np.full(plan.rows, "", object)
                )
                statuses = np.asarray(vector.statuses, dtype=np.uint8)
                for row, value in enumerate(vector.values):
                    kind = value.WhichOneof("val")
                    if kind in _VALUE_FIELDS:
                        values[row] = getattr(value, kind)
                    elif statuses[row] == Status.PRESENT:
                        statuses[row] = Status.NULL_VALUE  # Feast says PRESENT for a stored null
                event_ns = np.fromiter(
                    (t.seconds * 1_000_000_000 + t.nanos for t in vector.event_timestamps),
                    dtype=np.int64,
                    count=plan.rows,
                )
                if read.view.ttl_s > 0:  # the same age rule as the Redis path (Feast's SDK read has none)
                    stale = (statuses == Status.PRESENT) & (now_ns - event_ns > int(read.view.ttl_s * 1e9))
                    statuses[stale] = Status.OUTSIDE_MAX_AGE
                out.append(FeatureColumn(name, feature.value_type, values, statuses, event_ns))
        return out
