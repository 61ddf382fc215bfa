"""Our profile buffer parser, capture objects, units and scaling, on constructed A-XDR bytes.

The buffers are built with the decode layer's A-XDR encoder, so these tests state in bytes what a
meter sends: null cells (which dlms-cosem's parser drops, shifting the row) must stay in their
column, and a null timestamp is the previous one plus the capture period.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.decode.axdr import Data, DataType, encode_data
from drivers.errors import DecodeError
from drivers.readers import parse_capture_objects, parse_profile_buffer
from drivers.readings import CaptureColumn
from drivers.units import convert, scale, unit_symbol

UTC_PLUS_1 = timezone(timedelta(hours=1))
COLUMNS = (
    CaptureColumn(8, "0.0.1.0.0.255", 2, 0),
    CaptureColumn(1, "0.0.96.10.1.255", 2, 0),
    CaptureColumn(3, "1.0.1.8.0.255", 2, 0, scaler=1, unit_code=30),
    CaptureColumn(3, "1.0.2.8.0.255", 2, 0, scaler=-3, unit_code=32),
)
NULL = Data(DataType.NULL, None)


def stamp(local: datetime, deviation: int | None = -60, status: int = 0) -> Data:
    dev = 0x8000 if deviation is None else deviation & 0xFFFF
    raw = (local.year.to_bytes(2, "big") + bytes((local.month, local.day, local.isoweekday(), local.hour,
                                                   local.minute, local.second, 0)) + dev.to_bytes(2, "big")
           + bytes((status,)))
    return Data(DataType.OCTET_STRING, raw)


def u32(value: int) -> Data:
    return Data(DataType.DOUBLE_LONG_UNSIGNED, value)


def buffer(rows: list[list[Data]]) -> bytes:
    return encode_data(Data(DataType.ARRAY, tuple(Data(DataType.STRUCTURE, tuple(r)) for r in rows)))


def test_null_cells_stay_in_their_columns() -> None:
    raw = buffer([
        [stamp(datetime(2026, 3, 1, 0, 15)), Data(DataType.UNSIGNED, 0), u32(100), NULL],
        [stamp(datetime(2026, 3, 1, 0, 30)), NULL, NULL, u32(7)],
        [stamp(datetime(2026, 3, 1, 0, 45)), Data(DataType.UNSIGNED, 0x80), u32(102), u32(8)],
    ])
    rows = parse_profile_buffer("m", raw, COLUMNS, capture_period_s=900, meter_tz=None)
    assert [r.values[1:] for r in rows] == [
        (0, Decimal(1000), None),
        (None, None, Decimal("0.007")),
        (0x80, Decimal(1020), Decimal("0.008")),
    ]
    assert rows[1].time == datetime(2026, 2, 28, 23, 30, tzinfo=timezone.utc)
    assert rows[1].values[0] == rows[1].time


def test_null_timestamp_is_previous_plus_capture_period() -> None:
    raw = buffer([
        [stamp(datetime(2026, 3, 1, 0, 15)), NULL, u32(1), u32(2)],
        [NULL, NULL, u32(3), u32(4)],
        [NULL, NULL, u32(5), u32(6)],
    ])
    rows = parse_profile_buffer("m", raw, COLUMNS, capture_period_s=900, meter_tz=None)
    assert [r.time for r in rows] == [
        datetime(2026, 2, 28, 23, 15, tzinfo=timezone.utc) + timedelta(minutes=15 * i) for i in range(3)
    ]
    assert [r.time_inferred for r in rows] == [False, True, True]


def test_unspecified_deviation_uses_the_meter_timezone() -> None:
    raw = buffer([[stamp(datetime(2026, 3, 1, 12, 0), deviation=None), NULL, u32(1), u32(2)]])
    with pytest.raises(DecodeError, match="timezone"):
        parse_profile_buffer("m", raw, COLUMNS, capture_period_s=900, meter_tz=None)
    rows = parse_profile_buffer("m", raw, COLUMNS, capture_period_s=900, meter_tz=UTC_PLUS_1)
    assert rows[0].time == datetime(2026, 3, 1, 11, 0, tzinfo=timezone.utc)


def test_inverted_deviation_quirk() -> None:
    # A meter that sends +60 for UTC+1 (against the COSEM sign) is read right only with the quirk.
    raw = buffer([[stamp(datetime(2026, 3, 1, 12, 0), deviation=60), NULL, u32(1), u32(2)]])
    plain = parse_profile_buffer("m", raw, COLUMNS, capture_period_s=900, meter_tz=None)
    quirky = parse_profile_buffer("m", raw, COLUMNS, capture_period_s=900, meter_tz=None,
                                  quirks=frozenset({"clock-deviation-inverted"}))
    assert plain[0].time == datetime(2026, 3, 1, 13, 0, tzinfo=timezone.utc)
    assert quirky[0].time == datetime(2026, 3, 1, 11, 0, tzinfo=timezone.utc)


def test_row_with_a_missing_cell_is_an_error_not_a_shift() -> None:
    raw = buffer([[stamp(datetime(2026, 3, 1, 0, 15)), u32(100), u32(7)]])
    with pytest.raises(DecodeError, match="3 cells for 4 capture objects") as caught:
        parse_profile_buffer("meter-9", raw, COLUMNS, capture_period_s=900, meter_tz=None)
    assert caught.value.meter_id == "meter-9"


@pytest.mark.parametrize("raw", [b"", b"\x01", b"\x01\x01\x02", b"\x02\x00", b"\x01\x01\x02\x04\x00\x00\x00\xff"])
def test_malformed_buffers_end_in_decode_error(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_profile_buffer("m", raw, COLUMNS, capture_period_s=900, meter_tz=None)


cells = st.one_of(st.none(), st.integers(min_value=0, max_value=2**32 - 1))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), cells, cells, cells), min_size=1, max_size=20))
def test_columns_stay_aligned_for_any_null_pattern(table: list[tuple[bool, int | None, int | None, int | None]]) -> None:
    start = datetime(2026, 3, 1, 0, 15)
    rows = []
    for i, (has_time, status, imp, exp) in enumerate(table):
        rows.append([
            stamp(start + timedelta(minutes=15 * i)) if has_time or i == 0 else NULL,
            NULL if status is None else Data(DataType.DOUBLE_LONG_UNSIGNED, status),
            NULL if imp is None else u32(imp),
            NULL if exp is None else u32(exp),
        ])
    parsed = parse_profile_buffer("m", buffer(rows), COLUMNS, capture_period_s=900, meter_tz=None)
    assert len(parsed) == len(table)
    for i, (row, (_, status, imp, exp)) in enumerate(zip(parsed, table)):
        assert row.values[1] == status
        assert row.values[2] == (None if imp is None else Decimal(imp).scaleb(1))
        assert row.values[3] == (None if exp is None else Decimal(exp).scaleb(-3))
        assert row.time == datetime(2026, 2, 28, 23, 15, tzinfo=timezone.utc) + timedelta(minutes=15 * i)


def test_capture_objects_parse() -> None:
    def obj(class_id: int, obis: bytes, attr: int) -> Data:
        return Data(DataType.STRUCTURE, (Data(DataType.LONG_UNSIGNED, class_id), Data(DataType.OCTET_STRING, obis),
                                         Data(DataType.INTEGER, attr), Data(DataType.LONG_UNSIGNED, 0)))

    raw = encode_data(Data(DataType.ARRAY, (obj(8, bytes([0, 0, 1, 0, 0, 255]), 2),
                                            obj(3, bytes([1, 0, 1, 8, 0, 255]), 2))))
    columns = parse_capture_objects("m", raw)
    assert columns == (CaptureColumn(8, "0.0.1.0.0.255", 2, 0), CaptureColumn(3, "1.0.1.8.0.255", 2, 0))
    assert columns[0].is_clock and not columns[1].is_clock
    with pytest.raises(DecodeError):
        parse_capture_objects("m", encode_data(Data(DataType.ARRAY, (Data(DataType.UNSIGNED, 1),))))


def test_units_and_scaling() -> None:
    assert unit_symbol(30) == "Wh" and unit_symbol(27) == "W" and unit_symbol(35) == "V"
    assert unit_symbol(33) == "A" and unit_symbol(32) == "varh" and unit_symbol(255) == ""
    assert unit_symbol(None) == ""
    with pytest.raises(DecodeError):
        unit_symbol(200)
    assert scale(12345, -2) == Decimal("123.45")
    assert scale(7, 3) == Decimal(7000)
    assert convert(Decimal(1500), "Wh", "kWh") == Decimal("1.5")
    assert convert(Decimal("2.5"), "kvarh", "varh") == Decimal(2500)
    assert convert(Decimal(230), "V", "mV") == Decimal(230000)
    with pytest.raises(DecodeError):
        convert(Decimal(1), "Wh", "W")
    with pytest.raises(DecodeError):
        convert(Decimal(1), "min", "s")
