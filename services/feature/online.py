"""The feature lane's one entry point, behind both transports and the router's feature join: plan the
read, ask the online store, answer the entity columns then the features, and count it."""

from __future__ import annotations

import time
from typing import Protocol

import numpy as np

from aisf.services.common.errors import AisfError
from aisf.services.feature.catalog import Catalog
from aisf.services.feature.metrics import FeatureMetrics
from aisf.services.feature.planning import plan
from aisf.services.feature.types import FeatureColumn, FeatureQuery, FeatureResult, ReadPlan, Status


class OnlineStore(Protocol):
    name: str

    async def read(self, plan: ReadPlan) -> list[FeatureColumn]: ...

    async def close(self) -> None: ...


class OnlineFeatures(Protocol):
    """What the router's feature join calls: in process under --role all, over gRPC otherwise."""

    async def get(self, query: FeatureQuery) -> FeatureResult: ...


class FeatureLookup:
    def __init__(self, catalog: Catalog, store: OnlineStore, metrics: FeatureMetrics, max_rows: int) -> None:
        self.catalog = catalog
        self._store = store
        self._metrics = metrics
        self._max_rows = max_rows

    async def close(self) -> None:
        await self._store.close()

    async def get(self, query: FeatureQuery) -> FeatureResult:
        started = time.perf_counter()
        try:
            read = plan(self.catalog, query, self._max_rows)
            columns = await self._store.read(read)
        except AisfError as exc:
            self._metrics.failed(self._store.name, exc.reason, time.perf_counter() - started)
            raise
        self._metrics.answered(self._store.name, read.rows, time.perf_counter() - started)
        return FeatureResult([*_entity_columns(read), *columns], self._store.name)


def _entity_columns(read: ReadPlan) -> list[FeatureColumn]:
    types = {k: t for r in read.reads for k, t in zip(r.view.join_keys, r.view.join_key_types, strict=True)}
    present = np.full(read.rows, Status.PRESENT, dtype=np.uint8)
    never = np.zeros(read.rows, dtype=np.int64)
    return [FeatureColumn(key, types[key], values, present, never) for key, values in read.entities.items()]
