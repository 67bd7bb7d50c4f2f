"""The fast path: Feast's Redis layout read directly. Every entity of a request in one round trip (a
server-side script doing the HMGETs), decoded straight into typed columns, no per-entity dicts."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from aisf.services.common.errors import FeatureStoreUnavailable
from aisf.services.feature import feast_layout
from aisf.services.feature.catalog import Catalog, FeatureField, FeatureViewDef
from aisf.services.feature.resp_client import RedisReplyError, RedisUnavailable, RespClient, Script
from aisf.services.feature.types import COLUMN_DTYPES, FeatureColumn, ReadPlan, Status, ViewRead

# KEYS: every entity's hash; ARGV: view count, then per view its key count, field count and fields. The
# answer is flat (entity after entity, field after field): the client slices a column in one step.
_READ_SCRIPT = """
local out, n, k, a = {}, 0, 1, 2
for _ = 1, tonumber(ARGV[1]) do
  local nkeys, nfields = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local fields = {unpack(ARGV, a + 2, a + 1 + nfields)}
  a = a + 2 + nfields
  for _ = 1, nkeys do
    local values = redis.call('HMGET', KEYS[k], unpack(fields))
    for i = 1, nfields do
      out[n + i] = values[i]
    end
    n = n + nfields
    k = k + 1
  end
end
return out
"""


class RedisFeatureStore:
    name = "redis"

    def __init__(self, catalog: Catalog, timeout_s: float) -> None:
        config = catalog.online_store
        self._client = RespClient(
            config.redis_host,
            config.redis_port,
            config.redis_db,
            config.redis_password,
            config.redis_ssl,
            timeout_s,
        )
        self._script = Script(self._client, _READ_SCRIPT)
        self._where = f"redis://{config.redis_host}:{config.redis_port}/{config.redis_db}"
        self._keys = {
            v.name: feast_layout.EntityKeys(v.join_keys, v.join_key_types, catalog.project)
            for v in catalog.views.values()
        }
        self._read_fields_cache: dict[tuple[str, tuple[FeatureField, ...]], list[bytes]] = {}
        self._fields = {
            v.name: [feast_layout.field_hash(v.name, f.name) for f in v.features]
            for v in catalog.views.values()
        }

    async def close(self) -> None:
        await self._client.close()

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
        except (RedisUnavailable, RedisReplyError) as exc:
            raise FeatureStoreUnavailable(
                f"online store {self._where} is unavailable: {type(exc).__name__}: {exc}"
            ) from None
        columns: list[FeatureColumn] = []
        start = 0
        now_ns = time.time_ns()
        for read, rows_to_key in zip(plan.reads, row_keys, strict=True):
            size = (int(rows_to_key.max()) + 1) * (len(read.features) + 1)
            decode = _decode_few if size <= _FEW * (len(read.features) + 1) else _decode
            columns += decode(read, replies[start : start + size], rows_to_key, now_ns)
            start += size
        return columns

    def _read_fields(self, read: ViewRead) -> list[bytes]:
        key = (read.view.name, read.features)
        fields = self._read_fields_cache.get(key)
        if fields is None:
            hashes = dict(
                zip((f.name for f in read.view.features), self._fields[read.view.name], strict=True)
            )
            fields = [*(hashes[f.name] for f in read.features), feast_layout.timestamp_field(read.view.name)]
            if len(self._read_fields_cache) < 4096:
                self._read_fields_cache[key] = fields
        return fields

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
    read: ViewRead, replies: list[bytes | None], rows_to_key: npt.NDArray[np.intp], now_ns: int
) -> list[FeatureColumn]:
    """`replies`: the view's fields then its timestamp, entity after entity (Lua's false for a missing
    field arrives as None)."""
    width = len(read.features) + 1
    count = len(replies) // width
    event_ns = feast_layout.decode_timestamp_column(replies[width - 1 :: width])
    present = np.fromiter((r is not None for r in replies), dtype=np.bool_, count=len(replies))
    found = present.reshape(count, width).any(axis=1)
    entity_status = np.where(found, np.uint8(Status.PRESENT), np.uint8(Status.NOT_FOUND))
    if read.view.ttl_s > 0:
        stale = found & (now_ns - event_ns > int(read.view.ttl_s * 1e9))
        entity_status[stale] = Status.OUTSIDE_MAX_AGE
    distinct = count == len(rows_to_key)  # keys are numbered by first appearance: rows map 1:1
    rows_event_ns = event_ns if distinct else event_ns[rows_to_key]
    out = []
    for i, (feature, name) in enumerate(zip(read.features, read.names, strict=True)):
        raws = replies[i::width]
        values = feast_layout.decode_fixed_column(raws, feature.value_type)
        statuses = entity_status
        if values is None:
            values, nulls = _decode_each(raws, feature.value_type)
            if nulls.any():
                statuses = entity_status.copy()
                statuses[nulls & found] = Status.NULL_VALUE
        if not distinct:
            values, statuses = values[rows_to_key], statuses[rows_to_key]
        out.append(FeatureColumn(name, feature.value_type, values, statuses, rows_event_ns))
    return out


_FEW = 8  # entities of a view below which numpy's per-call cost outweighs its loops


def _decode_few(
    read: ViewRead, replies: list[bytes | None], rows_to_key: npt.NDArray[np.intp], now_ns: int
) -> list[FeatureColumn]:
    """_decode for a handful of entities, in plain Python (a single-entity lookup is the common case)."""
    width = len(read.features) + 1
    count = len(replies) // width
    stamps = [feast_layout.decode_timestamp_ns(replies[j * width + width - 1]) for j in range(count)]
    ttl_ns = int(read.view.ttl_s * 1e9)
    status = []
    for j in range(count):
        if all(v is None for v in replies[j * width : (j + 1) * width]):
            status.append(Status.NOT_FOUND)
        elif ttl_ns and now_ns - stamps[j] > ttl_ns:
            status.append(Status.OUTSIDE_MAX_AGE)
        else:
            status.append(Status.PRESENT)
    rows = rows_to_key.tolist()
    event_ns = np.asarray([stamps[k] for k in rows], dtype=np.int64)
    out = []
    for i, (feature, name) in enumerate(zip(read.features, read.names, strict=True)):
        dtype = COLUMN_DTYPES[feature.value_type]
        zero: object = "" if dtype.kind == "O" else 0
        values, statuses = [], []
        for k in rows:
            raw = replies[k * width + i]
            if raw:
                values.append(feast_layout.decode_value(raw))
                statuses.append(status[k])
            else:
                values.append(zero)
                statuses.append(Status.NOT_FOUND if status[k] == Status.NOT_FOUND else Status.NULL_VALUE)
        column = FeatureColumn(
            name, feature.value_type, np.asarray(values, dtype), np.asarray(statuses, np.uint8), event_ns
        )
        out.append(column)
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
