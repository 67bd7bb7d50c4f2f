"""aisf's own encoders of Feast's online layout agree with Feast's code, byte for byte."""

from __future__ import annotations

import math

from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from aisf.services.feature import feast_layout

_INT64 = st.integers(-(2**63), 2**63 - 1)
_NAMES = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=12)


@given(st.dictionaries(_NAMES, st.one_of(_INT64, st.text(max_size=20)), min_size=1, max_size=3))
def test_entity_keys_serialize_as_feast_v3_does(row: dict[str, int | str]) -> None:
    keys = list(row)
    types = ["INT64" if isinstance(v, int) else "STRING" for v in row.values()]
    proto = EntityKey(
        join_keys=keys,
        entity_values=[
            Value(int64_val=v) if isinstance(v, int) else Value(string_val=v) for v in row.values()
        ],
    )
    ours = feast_layout.entity_key(keys, types, list(row.values()))
    assert ours == serialize_entity_key(proto, entity_key_serialization_version=3)


@given(_INT64, _NAMES)
def test_the_single_integer_key_shortcut_matches_the_general_encoding(value: int, project: str) -> None:
    keys = feast_layout.EntityKeys(["user_id"], ["INT64"], project)
    general = feast_layout.entity_key(["user_id"], ["INT64"], [value]) + project.encode()
    assert keys.encode([value]) == general


@given(_NAMES, _NAMES)
def test_field_hashes_are_feasts_murmur3(view: str, feature: str) -> None:
    assert feast_layout.field_hash(view, feature) == _mmh3(f"{view}:{feature}")


_SCALARS = st.one_of(
    st.tuples(st.just("DOUBLE"), st.floats(allow_nan=False)),
    st.tuples(st.just("FLOAT"), st.floats(width=32, allow_nan=False)),
    st.tuples(st.just("INT64"), _INT64),
    st.tuples(st.just("INT32"), st.integers(-(2**31), 2**31 - 1)),
    st.tuples(st.just("UNIX_TIMESTAMP"), _INT64),
    st.tuples(st.just("BOOL"), st.booleans()),
    st.tuples(st.just("STRING"), st.text(max_size=40)),
    st.tuples(st.just("BYTES"), st.binary(max_size=40)),
)
_FIELDS = {
    "DOUBLE": "double_val",
    "FLOAT": "float_val",
    "INT64": "int64_val",
    "INT32": "int32_val",
    "UNIX_TIMESTAMP": "unix_timestamp_val",
    "BOOL": "bool_val",
    "STRING": "string_val",
    "BYTES": "bytes_val",
}


@given(_SCALARS)
def test_values_feast_serialized_decode_to_the_same_scalar(typed: tuple[str, object]) -> None:
    value_type, value = typed
    serialized = Value(**{_FIELDS[value_type]: value}).SerializeToString()
    decoded = feast_layout.decode_value(serialized)
    if isinstance(value, float) and value_type == "FLOAT":
        assert math.isclose(decoded, value, rel_tol=1e-6) or decoded == value  # type: ignore[arg-type]
    elif value in (0, 0.0, "", b"", False) and not serialized:
        assert decoded is None  # proto3 writes nothing for a zero: Feast reads it back as null too
    else:
        assert decoded == value
    if serialized:
        assert feast_layout.encode_value(value_type, value) == serialized


@given(st.integers(0, 2**40), st.integers(0, 999_999_999))
def test_event_timestamps_decode_to_nanoseconds(seconds: int, nanos: int) -> None:
    raw = Timestamp(seconds=seconds, nanos=nanos).SerializeToString()
    assert feast_layout.decode_timestamp_ns(raw) == seconds * 1_000_000_000 + nanos


def test_an_absent_timestamp_is_zero_and_an_empty_value_is_null() -> None:
    assert feast_layout.decode_timestamp_ns(None) == 0
    assert feast_layout.decode_value(b"") is None


def test_a_list_value_is_refused_by_name_not_misread() -> None:
    serialized = Value(int64_list_val={"val": [1, 2]}).SerializeToString()
    try:
        feast_layout.decode_value(serialized)
    except feast_layout.UnsupportedValue as exc:
        assert "not a scalar" in str(exc)
    else:
        raise AssertionError("a list value decoded as a scalar")


@given(
    st.lists(
        st.one_of(st.none(), st.tuples(st.integers(0, 2**33), st.integers(0, 999_999_999))),
        min_size=60,
        max_size=80,
    )
)
def test_a_column_of_timestamps_decodes_as_each_one_does(stamps: list[tuple[int, int] | None]) -> None:
    raws = [None if s is None else Timestamp(seconds=s[0], nanos=s[1]).SerializeToString() for s in stamps]
    column = feast_layout.decode_timestamp_column(raws)
    assert column.tolist() == [feast_layout.decode_timestamp_ns(r) for r in raws]


@given(st.lists(st.floats(allow_nan=False), min_size=1, max_size=50))
def test_a_column_of_doubles_decodes_in_one_view_as_each_one_does(values: list[float]) -> None:
    raws = [Value(double_val=v).SerializeToString() or None for v in values]
    column = feast_layout.decode_fixed_column(raws, "DOUBLE")
    if any(r is None for r in raws):
        assert column is None  # a null (or a proto3-omitted 0.0) takes the per-value path
    else:
        assert column is not None and column.tolist() == values
