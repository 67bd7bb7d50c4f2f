"""The fast path: Feast's Redis layout read directly. Every entity of a request in one round trip (a
server-side script doing the HMGETs), decoded straight into typed columns, no per-entity dicts."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import redis.asyncio as redis
from redis.exceptions import RedisError

from aisf.services.common.errors import FeatureStoreUnavailable
from aisf.services.feature import feast_layout
from aisf.services.feature.catalog import Catalog, FeatureViewDef
from aisf.services.feature.types import COLUMN_DTYPES, FeatureColumn, ReadPlan, Status, ViewRead

# KEYS: every entity's hash; ARGV: view count, then per view its key count, field count and fields.
_READ_SCRIPT = """
local out, k, a = {}, 1, 2
for _ = 1, tonumber(ARGV[1]) do
  local nkeys, nfields = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local fields = {unpack(ARGV, a + 2, a + 1 + nfields)}
  a = a + 2 + nfields
  for _ = 1, nkeys do
    out[#out + 1] = redis.call('HMGET', KEYS[k], unpack(fields))
    k = k + 1
  end
end
return out
"""


class RedisFeatureStore:
    name = "redis"

    def __init__(self, catalog: Catalog, timeout_s: float) -> None:
        config = catalog.online_store
        self._catalog = catalog
        self._client = redis.Redis(
            host=config.redis_host,
            port=config.redis_port,
            db=config.redis_db,
            password=config.redis_password or None,
            ssl=config.redis_ssl,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            max_connections=64,
        )
        self._script = self._client.register_script(_READ_SCRIPT)
        self._where = f"redis://{config.redis_host}:{config.redis_port}/{config.redis_db}"
        self._keys = {
            v.name: feast_layout.EntityKeys(v.join_keys, v.join_key_types, catalog.project)
            for v in catalog.views.values()
        }
        self._fields = {
            v.name: [*(feast_layout.field_hash(v.name, f.name) for f in v.features)]
            for v in catalog.views.values()
        }

    async def close(self) -> None:
        await self._client.aclose()

    async def read(self, plan: ReadPlan) -> list[FeatureColumn]:
        keys: list[bytes] = []
        argv: list[bytes | int] = [len(plan.reads)]
        row_keys: list[npt.NDArray[np.intp]] = []
        for read in plan.reads:
            unique, rows_to_key = self._entity_keys(read.view, plan)
            row_keys.append(rows_to_key)
            fields = self._read_fields(read)
            keys += unique
            argv += [len(unique), len(fields), *fields]
        try:
            replies = await self._script(keys=keys, args=argv)
        except (RedisError, OSError) as exc:
            raise FeatureStoreUnavailable(
                f"online store {self._where} is unavailable: {type(exc).__name__}: {exc}"
            ) from None
        columns: list[FeatureColumn] = []
        start = 0
        now_ns = time.time_ns()
        for read, rows_to_key in zip(plan.reads, row_keys, strict=True):
            count = int(rows_to_key.max()) + 1
            columns += _decode(read, replies[start : start + count], rows_to_key, now_ns)
            start += count
        return columns

    def _read_fields(self, read: ViewRead) -> list[bytes]:
        hashes = dict(zip((f.name for f in read.view.features), self._fields[read.view.name], strict=True))
        return [*(hashes[f.name] for f in read.features), feast_layout.timestamp_field(read.view.name)]

    def _entity_keys(self, view: FeatureViewDef, plan: ReadPlan) -> tuple[list[bytes], npt.NDArray[np.intp]]:
        """One key per distinct entity (a ranking request repeats its user N times), and each row's key."""
        columns = [plan.entities[k].tolist() for k in view.join_keys]
        encode = self._keys[view.name].encode
        index: dict[tuple[object, ...], int] = {}
        rows_to_key = np.empty(plan.rows, dtype=np.intp)
        keys: list[bytes] = []
        for row, values in enumerate(zip(*columns, strict=True)):
            at = index.get(values)
            if at is None:
                at = index[values] = len(keys)
                keys.append(encode(values))
            rows_to_key[row] = at
        return keys, rows_to_key


def _decode(
    read: ViewRead, replies: Sequence[Sequence[bytes | None]], rows_to_key: npt.NDArray[np.intp], now_ns: int
) -> list[FeatureColumn]:
    count = len(replies)
    event_ns = feast_layout.decode_timestamp_column([r[-1] for r in replies])
    found = np.fromiter((any(r) for r in replies), dtype=np.bool_, count=count)
    entity_status = np.where(found, np.uint8(Status.PRESENT), np.uint8(Status.NOT_FOUND))
    if read.view.ttl_s > 0:
        stale = found & (now_ns - event_ns > int(read.view.ttl_s * 1e9))
        entity_status[stale] = Status.OUTSIDE_MAX_AGE
    out = []
    for i, (feature, name) in enumerate(zip(read.features, read.names, strict=True)):
        raws = [r[i] for r in replies]
        values = feast_layout.decode_fixed_column(raws, feature.value_type)
        statuses = entity_status
        if values is None:
            values, nulls = _decode_each(raws, feature.value_type)
            if nulls.any():
                statuses = entity_status.copy()
                statuses[nulls & found] = Status.NULL_VALUE
        out.append(
            FeatureColumn(
                name, feature.value_type, values[rows_to_key], statuses[rows_to_key], event_ns[rows_to_key]
            )
        )
    return out


def _decode_each(
    raws: Sequence[bytes | None], value_type: str
) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.bool_]]:
    decoded = [feast_layout.decode_value(raw) if raw else None for raw in raws]
    nulls = np.fromiter((v is None for v in decoded), dtype=np.bool_, count=len(decoded))
    dtype = COLUMN_DTYPES[value_type]
    zero: object = "" if dtype.kind == "O" else 0
    values = np.array([zero if v is None else v for v in decoded], dtype=dtype)
    return values, nulls
