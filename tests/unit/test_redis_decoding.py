"""The Redis fast path's two decoders (numpy for many entities, plain Python for a few) agree."""

from __future__ import annotations

import time

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from aisf.services.feature import feast_layout
from aisf.services.feature.catalog import FeatureField, FeatureViewDef
from aisf.services.feature.redis_store import _decode, _decode_few
from aisf.services.feature.types import ViewRead

FEATURES = (FeatureField("ctr", "FLOAT"), FeatureField("price", "DOUBLE"), FeatureField("age", "INT64"))
_VALUES = {
    "FLOAT": st.floats(width=32, allow_nan=False),
    "DOUBLE": st.floats(allow_nan=False),
    "INT64": st.integers(-(2**63), 2**63 - 1),
}


def _entity() -> st.SearchStrategy[list[bytes | None] | None]:
    """One entity's hash fields (features then timestamp), or None for an entity Redis does not have."""
    fields = [
        st.one_of(
            st.none(),
            st.just(b""),
            _VALUES[f.value_type].map(lambda v, t=f.value_type: feast_layout.encode_value(t, v) or None),
        )
        for f in FEATURES
    ]
    stamp = st.integers(0, 2**32).map(lambda s: Timestamp(seconds=s, nanos=7).SerializeToString())
    return st.one_of(st.none(), st.tuples(*fields, stamp).map(list))


@settings(max_examples=200, deadline=None)
@given(st.lists(_entity(), min_size=1, max_size=8), st.sampled_from([0.0, 3600.0]), st.data())
def test_few_and_many_entity_decoders_answer_the_same_columns(
    entities: list[list[bytes | None] | None], ttl: float, data: st.DataObject
) -> None:
    view = FeatureViewDef("items", ("item_id",), ("INT64",), FEATURES, ttl)
    read = ViewRead(view, FEATURES, tuple(f.name for f in FEATURES))
    replies: list[bytes | None] = []
    for entity in entities:
        replies += entity if entity is not None else [None] * (len(FEATURES) + 1)
    rows = data.draw(st.lists(st.integers(0, len(entities) - 1), min_size=1, max_size=12))
    rows_to_key = np.asarray(
        sorted(set(rows)) if len(set(rows)) == len(entities) else list(range(len(entities))) + rows,
        dtype=np.intp,
    )
    now = time.time_ns()
    many, few = _decode(read, replies, rows_to_key, now), _decode_few(read, replies, rows_to_key, now)
    for a, b in zip(many, few, strict=True):
        assert a.name == b.name and a.values.dtype == b.values.dtype
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a.statuses, b.statuses)
        np.testing.assert_array_equal(a.event_time_ns, b.event_time_ns)
