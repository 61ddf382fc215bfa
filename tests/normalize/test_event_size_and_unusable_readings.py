"""normalize(): one IntervalsRecorded never exceeds what a store item can hold, and a reading the
normalizer cannot use is set aside (``usable_readings``) without losing the rest of the poll."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from drivers.readings import CaptureColumn, ProfileReading, ProfileRow
from gateway.domain.events import IntervalsRecorded
from gateway.domain.mapper import to_new_event
from gateway.domain.normalize import MAX_INTERVALS_EVENT_BYTES, UnusableReading, normalize, usable_readings
from gateway.store import codec
from gateway.store.cosmos_client import CosmosConfig
from gateway.store.cosmos_items import commit_item
from gateway.store.model import EventMetadata
from tests.normalize import (
    IMPORT,
    LOAD_PROFILE,
    METER_ID,
    PROFILE_COLUMNS,
    QUARTER,
    SETTINGS,
    FakeHistory,
    at,
    by_type,
    clock,
    event_entry,
    events_of,
    identity,
    meter_config,
    poll,
    profile,
    register,
    steady_rows,
)

T = at("2026-03-10T12:00:05")
METADATA = EventMetadata(gateway_id="gw-test", recorded_at=T, correlation_id="poll:test")
# Import and export per tariff (0 = total, 1..7): a meter capturing 16 energy channels.
CHANNELS = [f"1.0.{c}.8.{e}.255" for c in (1, 2) for e in range(8)]


def _wide_profile(first_end: datetime, count: int) -> ProfileReading:
    columns = (CaptureColumn(8, "0.0.1.0.0.255", 2, 0), CaptureColumn(1, "0.0.96.10.1.255", 2, 0),
               *(CaptureColumn(3, obis, 2, 0, scaler=0, unit_code=30) for obis in CHANNELS))
    rows = []
    for i in range(count):
        time = first_end + i * QUARTER
        values = tuple(Decimal(1_000_000 * (n + 1) + 100 * i) for n in range(len(CHANNELS)))
        rows.append(ProfileRow(time=time, time_inferred=False, values=(time, 0, *values)))
    return ProfileReading(obis=LOAD_PROFILE, columns=columns, capture_period_s=900,
                          start=first_end - QUARTER, end=first_end + (count - 1) * QUARTER, rows=tuple(rows))


def test_a_week_of_a_wide_load_profile_is_split_so_no_event_exceeds_a_store_item() -> None:
    first = at("2026-03-02T00:00:00")  # 7 UTC days of 96 rows (00:00 .. 23:45)
    count = 7 * 96
    week = _wide_profile(first, count)
    plans = FakeHistory().run(poll(T, profiles=(week,)))

    recorded: list[IntervalsRecorded] = events_of(plans, "IntervalsRecorded")
    # Every row once, in order, none flagged.
    assert [row.end_time for e in recorded for row in e.rows] == [first + i * QUARTER for i in range(count)]
    assert by_type(plans).get("SuspectReadingFlagged", 0) == 0
    assert len({e.event_id() for e in recorded}) == len(recorded)
    limit = CosmosConfig.__dataclass_fields__["max_commit_bytes"].default
    for event in recorded:
        # Each within one UTC day, and small enough for the normalizer's bound and for a Cosmos commit.
        assert len({row.end_time.date() for row in event.rows}) == 1
        assert len(codec.dumps(event.to_data()).encode()) <= MAX_INTERVALS_EVENT_BYTES
        item = commit_item(f"Meter:{METER_ID}:2026", 1, [to_new_event(event, METADATA)])
        assert len(codec.dumps(item).encode()) <= limit
    # A day of 16 channels is more than one bound: the days are cut further, into equal halves.
    assert len(recorded) == 14 and {len(e.rows) for e in recorded} == {48}


def test_intervals_are_one_event_per_utc_day() -> None:
    rows = steady_rows(at("2026-03-09T22:00:00"), 12)  # 22:00 .. 00:45 UTC
    plans = FakeHistory().run(poll(T, profiles=(profile(rows),)))
    recorded = events_of(plans, "IntervalsRecorded")
    assert [[row.end_time for row in e.rows] for e in recorded] == [
        [t for t, *_ in rows[:8]], [t for t, *_ in rows[8:]]]


def _clockless(rows: int) -> ProfileReading:
    reading = profile(steady_rows(at("2026-03-10T10:00:00"), rows))
    return ProfileReading(
        obis=reading.obis, columns=PROFILE_COLUMNS[1:], capture_period_s=900, start=None, end=None,
        rows=tuple(ProfileRow(time=None, time_inferred=False, values=r.values[1:]) for r in reading.rows),
    )


@pytest.mark.parametrize("bad, why", [
    (_clockless(4), "has no clock column"),
    (profile(steady_rows(at("2026-03-10T10:00:00"), 4), period_s=0), "has capture period 0 s"),
], ids=["no-clock-column", "no-capture-period"])
def test_a_load_profile_the_normalizer_cannot_use_is_set_aside_and_the_rest_is_recorded(
    bad: ProfileReading, why: str
) -> None:
    full = poll(T, identity=identity(), clock=clock(T, 1.0), registers=(register(IMPORT, 2_000_000),),
                profiles=(bad,), events=(event_entry(at("2026-03-10T08:00:00"), 1),))
    with pytest.raises(UnusableReading):
        normalize(full, FakeHistory().states_for(full), meter_config(), SETTINGS)

    usable, unusable = usable_readings(full)
    assert [(u.step, u.obis) for u in unusable] == [("load_profile", LOAD_PROFILE)]
    assert why in str(unusable[0])
    assert usable.profiles == () and usable.registers == full.registers and usable.events == full.events
    counts = by_type(FakeHistory().run(usable))
    assert {k: counts.get(k, 0) for k in ("MeterRegistered", "ClockChecked", "RegisterRead", "MeterEventLogged",
                                           "IntervalsRecorded")} == {
        "MeterRegistered": 1, "ClockChecked": 1, "RegisterRead": 1, "MeterEventLogged": 1, "IntervalsRecorded": 0}


def test_readings_dated_outside_the_stream_years_are_set_aside_alone() -> None:
    old = at("1969-12-31T23:45:00")
    rows = steady_rows(at("2026-03-10T10:00:00"), 4)
    reading = profile([(old, 0, Decimal(999_000), Decimal(5_000)), *rows])
    full = poll(T, registers=(register(IMPORT, 2_000_000, capture_time=old),), profiles=(reading,),
                events=(event_entry(old, 1), event_entry(at("2026-03-10T08:00:00"), 2)))
    usable, unusable = usable_readings(full)
    assert sorted((u.step, u.obis) for u in unusable) == [
        ("event_log", "0.0.99.98.0.255"), ("load_profile", LOAD_PROFILE), ("registers", IMPORT)]
    plans = FakeHistory().run(usable)
    assert [p.year for p in plans] == [2026]
    assert [row.end_time for e in events_of(plans, "IntervalsRecorded") for row in e.rows] == [t for t, *_ in rows]
    assert [e.code for e in events_of(plans, "MeterEventLogged")] == [2]

