"""Domain types of an online-feature read (no protobuf, no feast)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from aisf.services.feature.catalog import FeatureField, FeatureViewDef

EntityValue = int | str
# One join key's values: a list (JSON, protobuf), or an integer array (the router's feature join).
EntityValues = Sequence[EntityValue] | npt.NDArray[np.integer]


class Status(IntEnum):
    """Feast's FieldStatus numbers."""

    INVALID = 0
    PRESENT = 1
    NULL_VALUE = 2
    NOT_FOUND = 3
    OUTSIDE_MAX_AGE = 4


# Feast value type -> the numpy dtype of a column of it.
COLUMN_DTYPES: dict[str, np.dtype[np.generic]] = {
    "DOUBLE": np.dtype(np.float64),
    "FLOAT": np.dtype(np.float32),
    "INT64": np.dtype(np.int64),
    "UNIX_TIMESTAMP": np.dtype(np.int64),
    "INT32": np.dtype(np.int32),
    "BOOL": np.dtype(np.bool_),
    "STRING": np.dtype(np.object_),
    "BYTES": np.dtype(np.object_),
}


@dataclass(frozen=True, slots=True)
class FeatureQuery:
    entities: Mapping[str, EntityValues]  # join key -> one value per row
    features: tuple[str, ...] = ()  # "<view>:<feature>"
    feature_service: str = ""
    full_feature_names: bool = False


@dataclass(slots=True)
class FeatureColumn:
    """One column, one entry per row; `values` holds the type's zero where the status means null."""

    name: str
    value_type: str
    values: npt.NDArray[np.generic]
    statuses: npt.NDArray[np.uint8]
    event_time_ns: npt.NDArray[np.int64]


@dataclass(slots=True)
class FeatureResult:
    columns: list[FeatureColumn]
    online_store: str

    def column(self, name: str) -> FeatureColumn:
        return next(c for c in self.columns if c.name == name)


@dataclass(frozen=True, slots=True)
class ViewRead:
    """The features one request reads from one feature view, and the names they answer under."""

    view: FeatureViewDef
    features: tuple[FeatureField, ...]
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """A validated request: the entity key columns (typed) and the views to read, in answer order."""

    entities: Mapping[str, npt.NDArray[np.generic]]
    rows: int
    reads: tuple[ViewRead, ...]
    refs: tuple[str, ...]  # the "<view>:<feature>" references, in answer order
    full_feature_names: bool
