"""Similarity indexes of the semantic cache: in process (exact for small scopes, an HNSW graph for large
ones), or Redis (brute force over one scope's entries: stock Redis has no vector search)."""

from __future__ import annotations

import collections
import json
import math
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast

import numpy as np
import numpy.typing as npt
import redis.asyncio as redis
from redis.exceptions import RedisError
from usearch.index import Index

from aisf.services.common.errors import EngineUnavailable
from aisf.services.common.llm_types import FinishReason, Usage

Vector = npt.NDArray[np.float32]
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A finished generation: each choice's whole text and finish reason, and its usage."""

    texts: tuple[str, ...]
    finish_reasons: tuple[FinishReason, ...]
    usage: Usage

    def to_json(self) -> bytes:
        usage = [self.usage.prompt_tokens, self.usage.completion_tokens]
        return json.dumps({"texts": self.texts, "finish": self.finish_reasons, "usage": usage}).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> CachedAnswer:
        data = json.loads(raw)
        return cls(tuple(data["texts"]), tuple(data["finish"]), Usage(*data["usage"]))


class VectorIndex(Protocol):
    """Entries live in scopes (tenant, model, version, parameters); a search never leaves its scope."""

    async def nearest(self, scope: str, vector: Vector) -> tuple[float, CachedAnswer] | None: ...

    async def add(self, scope: str, vector: Vector, answer: CachedAnswer) -> None: ...

    async def close(self) -> None: ...


def unit(vector: Vector) -> Vector:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def _nearest(entries: list[_Entry], query: Vector) -> tuple[float, CachedAnswer] | None:
    """The closest entry; entries of another dimension (another embedder wrote them) never compare."""
    alike = [e for e in entries if e.vector.shape == query.shape]
    if not alike:
        return None
    scores = np.stack([e.vector for e in alike]) @ unit(query)
    best = int(np.argmax(scores))
    return float(scores[best]), alike[best].answer


@dataclass(slots=True)
class _Entry:
    expires: float
    vector: Vector
    answer: CachedAnswer


@dataclass(slots=True)
class _Kept:
    expires: float
    vector: Vector
    answer: CachedAnswer


class _Scope:
    """One scope's entries in least-recently-used order, searched exactly while small and through an HNSW
    graph (usearch, cosine) once it holds `GRAPH_AT` entries: a graph costs ~50 KB resident even for one
    entry, and the cache may keep thousands of small scopes (one per tenant and model)."""

    GRAPH_AT = 512

    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions
        self.kept: collections.OrderedDict[int, _Kept] = collections.OrderedDict()
        self.graph: Index | None = None
        self.next_key = 0

    def add(self, expires: float, vector: Vector, answer: CachedAnswer) -> None:
        key, self.next_key = self.next_key, self.next_key + 1
        self.kept[key] = _Kept(expires, vector, answer)
        if self.graph is not None:
            self.graph.add(key, vector)
        elif len(self.kept) >= self.GRAPH_AT:
            self.graph = Index(ndim=self.dimensions, metric="cos", dtype="f32")
            self.graph.add(
                np.fromiter(self.kept, dtype=np.uint64), np.stack([k.vector for k in self.kept.values()])
            )

    def drop(self, key: int) -> None:
        if self.kept.pop(key, None) is not None and self.graph is not None:
            self.graph.remove(key)

    def candidates(self, query: Vector, count: int) -> list[tuple[int, float]]:
        """(key, similarity) of the nearest entries, nearest first."""
        if self.graph is None:
            keys = list(self.kept)
            scores = np.stack([self.kept[k].vector for k in keys]) @ query
            best = np.argsort(-scores)[:count]
            return [(keys[i], float(scores[i])) for i in best]
        matches = self.graph.search(query, min(count, len(self.kept)))
        return [
            (int(k), 1.0 - float(d))
            for k, d in zip(matches.keys.tolist(), matches.distances.tolist(), strict=True)
        ]


class MemoryIndex:
    """Per-process nearest-neighbour index: exact for small scopes, HNSW (usearch) for large ones. Each
    scope (one tenant's model, version, parameters and embedder) keeps at most `max_entries`, the least
    recently hit evicted first, each for `ttl_s`; at most `max_scopes` scopes are kept, the least
    recently used dropped first (tenants come and go)."""

    _CANDIDATES = 4  # neighbours read per search: expired ones are dropped and the search repeated

    def __init__(
        self, ttl_s: float, max_entries: int, clock: Clock = time.monotonic, max_scopes: int = 10_000
    ) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._max_scopes = max_scopes
        self._clock = clock
        self._scopes: collections.OrderedDict[str, _Scope] = collections.OrderedDict()

    def scopes(self) -> int:
        return len(self._scopes)

    def entries(self, scope: str) -> int:
        found = self._scopes.get(scope)
        return len(found.kept) if found else 0

    def _forget_if_empty(self, scope: str, found: _Scope) -> None:
        if not found.kept:
            self._scopes.pop(scope, None)

    async def nearest(self, scope: str, vector: Vector) -> tuple[float, CachedAnswer] | None:
        found = self._scopes.get(scope)
        if found is None or found.dimensions != vector.shape[-1]:
            return None  # vectors of another dimension: another embedder wrote them, never compared
        self._scopes.move_to_end(scope)
        now, query = self._clock(), unit(vector).astype(np.float32)
        while found.kept:
            expired = False
            for key, similarity in found.candidates(query, self._CANDIDATES):
                kept = found.kept[key]
                if kept.expires <= now:
                    found.drop(key)
                    expired = True
                    continue
                found.kept.move_to_end(key)
                return similarity, kept.answer
            if not expired:
                break
        self._forget_if_empty(scope, found)
        return None

    async def add(self, scope: str, vector: Vector, answer: CachedAnswer) -> None:
        found = self._scopes.get(scope)
        if found is None or found.dimensions != vector.shape[-1]:
            found = self._scopes[scope] = _Scope(int(vector.shape[-1]))
        self._scopes.move_to_end(scope)
        now = self._clock()
        if len(found.kept) >= self._max_entries:
            for key in [k for k, kept in found.kept.items() if kept.expires <= now]:
                found.drop(key)
        while found.kept and len(found.kept) >= self._max_entries:
            found.drop(next(iter(found.kept)))  # the least recently used
        found.add(now + self._ttl_s, unit(vector).astype(np.float32), answer)
        while len(self._scopes) > self._max_scopes:
            self._scopes.popitem(last=False)

    async def close(self) -> None:
        self._scopes.clear()


_HEADER = struct.Struct("<dI")  # expiry (unix seconds), vector length


def _pack(expires: float, vector: Vector, answer: CachedAnswer) -> bytes:
    return _HEADER.pack(expires, len(vector)) + vector.astype("<f4").tobytes() + answer.to_json()


def _unpack(raw: bytes) -> _Entry:
    expires, size = _HEADER.unpack_from(raw)
    start, end = _HEADER.size, _HEADER.size + 4 * size
    vector = np.frombuffer(raw[start:end], dtype="<f4").astype(np.float32)
    return _Entry(expires, vector, CachedAnswer.from_json(raw[end:]))


class RedisIndex:
    """One Redis hash per scope (entry id -> expiry, vector, answer). Stock Redis 7 has no vector search,
    so a lookup reads the scope's entries and compares them here; `max_entries` bounds that cost. Each
    entry carries its own expiry (hash fields cannot expire in Redis 7.0) and the whole hash expires
    after `ttl_s` without writes."""

    def __init__(
        self,
        url: str,
        ttl_s: float,
        max_entries: int,
        prefix: str = "aisf:semcache:",
        clock: Clock = time.time,
        timeout_s: float = 0.25,
    ) -> None:
        # Bounded sockets: a hung Redis must fail a lookup quickly, not hold every cacheable request.
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry_on_timeout=False
        )
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._prefix = prefix
        self._clock = clock

    async def _entries(self, key: str) -> dict[bytes, _Entry]:
        # bytes both ways: the client is built without decode_responses.
        # redis 7's annotations give async replies as `Awaitable[T] | T` and fields as str: bytes work.
        raw = cast(dict[bytes, bytes], await self._client.hgetall(key))  # type: ignore[misc]
        now = self._clock()
        entries = {field: _unpack(value) for field, value in raw.items()}
        expired = [field for field, entry in entries.items() if entry.expires <= now]
        if expired:
            await self._client.hdel(key, *expired)  # type: ignore[misc, arg-type]
        return {field: entry for field, entry in entries.items() if entry.expires > now}

    async def nearest(self, scope: str, vector: Vector) -> tuple[float, CachedAnswer] | None:
        try:
            entries = list((await self._entries(self._prefix + scope)).values())
        except RedisError as exc:
            raise EngineUnavailable(f"semantic cache index: {exc}") from exc
        return _nearest(entries, vector)

    async def add(self, scope: str, vector: Vector, answer: CachedAnswer) -> None:
        key = self._prefix + scope
        packed = _pack(self._clock() + self._ttl_s, unit(vector), answer)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.hset(key, uuid.uuid4().hex, packed)  # type: ignore[arg-type]
                pipe.expire(key, math.ceil(self._ttl_s))
                pipe.hlen(key)
                *_, size = await pipe.execute()
            if size > self._max_entries:
                entries = await self._entries(key)
                oldest = sorted(entries, key=lambda field: entries[field].expires)
                if len(oldest) > self._max_entries:
                    await self._client.hdel(key, *oldest[: len(oldest) - self._max_entries])  # type: ignore[misc, arg-type]
        except RedisError as exc:
            raise EngineUnavailable(f"semantic cache index: {exc}") from exc

    async def close(self) -> None:
        await self._client.aclose()
