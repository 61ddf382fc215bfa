"""The stored JSON form: the fast encoder (orjson) must store what the standard module would.

Old streams were written with ``json.dumps``; every value the standard module accepts must load back
equal to what it wrote, and what it refused stays refused with the same error, with one deliberate
exception pinned below: UUIDs and Enums (orjson writes them as their value).
"""
from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.store import codec


def stdlib_dumps(value: Any) -> str:
    return json.dumps(value, default=codec._default, separators=(",", ":"), sort_keys=True)


scalars = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.decimals(allow_nan=False)
    | st.datetimes(timezones=st.just(timezone.utc))
    | st.datetimes(timezones=st.just(timezone(timedelta(hours=2))))
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b and type(a) is type(b)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(values)
def test_encodes_what_the_standard_module_encodes(value: Any) -> None:
    try:
        expected = stdlib_dumps(value)
    except (TypeError, ValueError) as refused:
        with pytest.raises(type(refused)) as info:
            codec.dumps(value)
        assert str(info.value) == str(refused)
        return
    assert same(json.loads(codec.dumps(value)), json.loads(expected))


@pytest.mark.parametrize("value", [{"t": datetime(2026, 1, 1)}, {"x": object()}, {"d": datetime(2026, 1, 1).date()}])
def test_refuses_what_the_standard_module_refuses(value: Any) -> None:
    with pytest.raises((TypeError, ValueError)) as refused:
        stdlib_dumps(value)
    with pytest.raises(type(refused.value)) as info:
        codec.dumps(value)
    assert str(info.value) == str(refused.value)


def test_big_integers_non_ascii_and_nan_round_trip() -> None:
    assert codec.loads(codec.dumps({"big": 2**80, "neg": -2**70})) == {"big": 2**80, "neg": -2**70}
    assert codec.loads(codec.dumps({"é": "zürich ✓"})) == {"é": "zürich ✓"}
    assert codec.dumps({"f": float("nan")}) == '{"f":NaN}'  # never silently stored as null


def test_uuid_and_enum_are_stored_as_their_value() -> None:
    import enum
    import uuid

    class Phase(enum.Enum):
        L1 = 1

    value = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert codec.loads(codec.dumps({"id": value, "phase": Phase.L1})) == {"id": str(value), "phase": 1}


def test_a_datetime_without_a_utc_form_is_refused_as_a_value_error() -> None:
    # Found by the property test above: 0001-01-01 at +02:00 lies before year 1 in UTC.
    value = {"t": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=2)))}
    with pytest.raises(ValueError, match="no UTC form"):
        codec.dumps(value)
