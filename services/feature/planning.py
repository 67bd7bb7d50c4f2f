"""Turns a feature query into a read plan, or a typed error naming the field at fault."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from aisf.services.common.errors import InvalidInput
from aisf.services.feature.catalog import Catalog, FeatureField, FeatureViewDef
from aisf.services.feature.types import EntityValues, FeatureQuery, ReadPlan, ViewRead

_INT_BOUNDS = {"INT64": (-(2**63), 2**63 - 1), "INT32": (-(2**31), 2**31 - 1)}


def plan(catalog: Catalog, query: FeatureQuery, max_rows: int) -> ReadPlan:
    refs = _references(catalog, query)
    grouped: dict[str, list[tuple[FeatureField, str]]] = {}
    for i, (view_name, feature_name) in enumerate(refs):
        view = catalog.views[view_name]
        feature = view.feature(feature_name)
        if feature is None:
            raise InvalidInput(
                f"{_where(query, i)}: feature view '{view_name}' has no feature '{feature_name}'"
            )
        name = f"{view_name}__{feature_name}" if query.full_feature_names else feature_name
        grouped.setdefault(view_name, []).append((feature, name))
    reads = tuple(
        ViewRead(catalog.views[v], tuple(f for f, _ in fs), tuple(n for _, n in fs))
        for v, fs in grouped.items()
    )
    answer_names = [n for read in reads for n in read.names]
    if len(set(answer_names)) != len(answer_names):
        raise InvalidInput(
            "full_feature_names: two views answer a feature of the same name; ask with full_feature_names"
        )
    entities, rows = _entities(query, reads, max_rows)
    ordered = tuple(f"{r.view.name}:{f.name}" for r in reads for f in r.features)
    return ReadPlan(entities, rows, reads, ordered, query.full_feature_names)


def _where(query: FeatureQuery, index: int) -> str:
    return f"feature_service '{query.feature_service}'" if query.feature_service else f"features[{index}]"


def _references(catalog: Catalog, query: FeatureQuery) -> list[tuple[str, str]]:
    if bool(query.features) == bool(query.feature_service):
        raise InvalidInput("features: give either features or feature_service (exactly one)")
    if query.feature_service:
        refs = catalog.services.get(query.feature_service)
        if refs is None:
            known = ", ".join(sorted(catalog.services)) or "none"
            raise InvalidInput(
                f"feature_service: unknown feature service '{query.feature_service}' (known: {known})"
            )
        return list(refs)
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i, ref in enumerate(query.features):
        view, sep, feature = ref.partition(":")
        if not sep or not view or not feature:
            raise InvalidInput(f"features[{i}]: '{ref}' is not '<feature view>:<feature>'")
        if view not in catalog.views:
            raise InvalidInput(f"features[{i}]: unknown feature view '{view}'")
        if ref in seen:
            raise InvalidInput(f"features[{i}]: '{ref}' is asked for twice")
        seen.add(ref)
        out.append((view, feature))
    return out


def _entities(
    query: FeatureQuery, reads: Sequence[ViewRead], max_rows: int
) -> tuple[dict[str, npt.NDArray[np.generic]], int]:
    needed: dict[str, tuple[str, FeatureViewDef]] = {}
    for read in reads:
        for key, key_type in zip(read.view.join_keys, read.view.join_key_types, strict=True):
            needed.setdefault(key, (key_type, read.view))
    for key in query.entities:
        if key not in needed:
            raise InvalidInput(
                f"entities.{key}: not a join key of the requested feature views "
                f"(they need {', '.join(sorted(needed)) or 'none'})"
            )
    columns: dict[str, npt.NDArray[np.generic]] = {}
    rows = -1
    for key, (key_type, view) in needed.items():
        values = query.entities.get(key)
        if values is None:
            raise InvalidInput(f"entities: missing join key '{key}' (feature view '{view.name}' needs it)")
        if rows == -1:
            rows = len(values)
            if rows > max_rows:  # before looking at any value
                raise InvalidInput(
                    f"entities: {rows} rows, the limit is {max_rows} (AISF_FEATURE_MAX_ENTITIES)"
                )
        elif len(values) != rows:
            raise InvalidInput(f"entities.{key}: {len(values)} values, the other join keys have {rows}")
        columns[key] = _typed(key, key_type, values)
    if rows <= 0:
        raise InvalidInput("entities: no rows (every join key needs at least one value)")
    return columns, rows


def _typed(key: str, key_type: str, values: EntityValues) -> npt.NDArray[np.generic]:
    if key_type in _INT_BOUNDS:
        low, high = _INT_BOUNDS[key_type]
        if isinstance(values, np.ndarray) and values.dtype.kind in "iu":  # the router's join: no loop
            outside = (values < low) | (values > high)
            if outside.any():
                i = int(np.argmax(outside))
                raise InvalidInput(f"entities.{key}[{i}]: {values[i]} is out of {key_type}'s range")
            return values.astype(np.int64, copy=False)
        for i, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise InvalidInput(
                    f"entities.{key}[{i}]: join key '{key}' is {key_type}, got {type(value).__name__}"
                )
            if not low <= value <= high:
                raise InvalidInput(f"entities.{key}[{i}]: {value} is out of {key_type}'s range")
        return np.asarray(values, dtype=np.int64)
    for i, value in enumerate(values):
        if not isinstance(value, str | bytes):
            raise InvalidInput(
                f"entities.{key}[{i}]: join key '{key}' is {key_type}, got {type(value).__name__}"
            )
        if not value:
            raise InvalidInput(f"entities.{key}[{i}]: empty key")
    return np.asarray(values, dtype=object)
