"""Stream naming per meter and UTC year, and splitting profile rows across years."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from gateway.domain.events import (
    CarryOver,
    ClockChecked,
    IntervalRow,
    IntervalsRecorded,
    MeterEventLogged,
    RegisterRead,
    YearStreamOpened,
)
from gateway.domain.streams import (
    EventSpansYears,
    InvalidMeterId,
    InvalidStreamId,
    InvalidYear,
    StreamNameError,
    meter_stream_prefix,
    parse_stream_id,
    split_by_year,
    stream_id,
    year_of,
)

UTC = timezone.utc
PROFILE = "1.0.99.1.0.255"
CH = "1.0.1.29.0.255"


def row(end: datetime) -> IntervalRow:
    return IntervalRow(end, {CH: Decimal("0.25")}, {CH: "Wh"}, 0)


def test_stream_id_and_back() -> None:
    assert stream_id("KFM_1234-5.a", 2026) == "Meter:KFM_1234-5.a:2026"
    assert parse_stream_id("Meter:KFM_1234-5.a:2026") == ("KFM_1234-5.a", 2026)
    assert meter_stream_prefix("M1") == "Meter:M1:"


@pytest.mark.parametrize("meter_id", ["", "a:b", "a/b", "a b", "#1", "-lead", "x" * 65, 12, None])
def test_bad_meter_ids_are_refused(meter_id) -> None:
    with pytest.raises(InvalidMeterId):
        stream_id(meter_id, 2026)


@pytest.mark.parametrize("year", [1969, 10000, "2026", True, 2026.0])
def test_bad_years_are_refused(year) -> None:
    with pytest.raises(InvalidYear):
        stream_id("M1", year)


@pytest.mark.parametrize(
    "text",
    ["Meter:M1", "Meter:M1:26", "Meter:M1:2026:x", "Device:M1:2026", "Meter::2026", "Meter:a b:2026",
     "Meter:M1:0999", None],
)
def test_bad_stream_ids_are_refused(text) -> None:
    with pytest.raises(InvalidStreamId):
        parse_stream_id(text)


def test_errors_share_a_base() -> None:
    assert issubclass(InvalidMeterId, StreamNameError) and issubclass(StreamNameError, ValueError)


def test_year_is_the_utc_year_of_the_capture_time() -> None:
    # 00:30 on 1 January in CET is still 2025 in UTC.
    capture = datetime(2026, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    read_time = datetime(2026, 1, 1, 8, tzinfo=UTC)
    event = RegisterRead("M1", "1.0.1.8.0.255", "q", Decimal(1), "Wh", capture, read_time)
    assert year_of(event) == 2025


def test_clock_checks_use_the_gateway_clock() -> None:
    meter_time = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)  # meter runs ahead across the new year
    gateway_time = datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert year_of(ClockChecked("M1", meter_time, gateway_time, Decimal(6))) == 2025


def test_other_event_years() -> None:
    t = datetime(2027, 3, 1, tzinfo=UTC)
    assert year_of(MeterEventLogged("M1", "0.0.99.98.0.255", t, 1, "x")) == 2027
    empty = CarryOver(None, {}, {}, None, None)
    assert year_of(YearStreamOpened("M1", 2028, 3, empty)) == 2028


def test_late_december_row_goes_to_the_previous_year() -> None:
    # Fetched on 2 January: the profile buffer still holds the last rows of 31 December.
    rows = (
        row(datetime(2025, 12, 31, 23, 45, tzinfo=UTC)),
        row(datetime(2026, 1, 1, 0, 0, tzinfo=UTC)),
        row(datetime(2026, 1, 1, 0, 15, tzinfo=UTC)),
    )
    event = IntervalsRecorded("M1", PROFILE, 900, rows)
    with pytest.raises(EventSpansYears) as info:
        year_of(event)
    assert info.value.years == [2025, 2026]

    parts = split_by_year(event)
    assert [year for year, _ in parts] == [2025, 2026]
    (y2025, old), (y2026, new) = parts
    assert old.rows == rows[:1] and new.rows == rows[1:]
    assert year_of(old) == 2025 and year_of(new) == 2026
    assert stream_id(old.meter_id, y2025) == "Meter:M1:2025"
    assert old.event_id() != new.event_id() != event.event_id()


def test_late_rows_alone_stay_in_their_year_unchanged() -> None:
    event = IntervalsRecorded("M1", PROFILE, 900, (row(datetime(2025, 12, 31, 23, 45, tzinfo=UTC)),))
    assert split_by_year(event) == [(2025, event)]
