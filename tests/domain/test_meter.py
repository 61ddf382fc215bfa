"""The meter aggregate: folding events, year carry-over and snapshot round trips (no store)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from gateway.domain.events import (
    ClockChecked,
    ClockDriftDetected,
    IntervalRow,
    IntervalsRecorded,
    MeterEventLogged,
    MeterRegistered,
    RegisterValue,
    YearStreamOpened,
)
from gateway.domain.meter import SNAPSHOT_SCHEMA_VERSION, MeterState, UnsupportedSnapshot, WrongMeter
from gateway.store.codec import dumps, loads
from tests.builders import IMPORT, PROFILE, fold, register_read

UTC = timezone.utc
T0 = datetime(2025, 12, 31, 22, 0, tzinfo=UTC)


def intervals(*ends: datetime) -> IntervalsRecorded:
    rows = tuple(IntervalRow(e, {IMPORT: Decimal("1")}, {IMPORT: "Wh"}, 0) for e in ends)
    return IntervalsRecorded("M1", PROFILE, 900, rows)


def history() -> list:
    return [
        MeterRegistered("M1", "Landis+Gyr", "E450", "LGZ1", "fw1", T0),
        register_read("100.5", T0),
        register_read("2.5", T0, obis="1.0.2.8.0.255"),
        intervals(T0 + timedelta(minutes=15), T0 + timedelta(minutes=30)),
        ClockChecked("M1", T0 + timedelta(seconds=3), T0, Decimal("3")),
        register_read("101.25", T0 + timedelta(hours=1)),
        MeterEventLogged("M1", "0.0.99.98.0.255", T0, 1, "power down"),
    ]


def test_apply_keeps_last_values_counts_and_version() -> None:
    state = fold(history())
    assert state.version == 7
    assert state.identity is not None and state.identity.serial == "LGZ1"
    assert state.registers[IMPORT] == RegisterValue(
        "active_energy_import", Decimal("101.25"), "Wh", T0 + timedelta(hours=1)
    )
    assert state.registers["1.0.2.8.0.255"].value == Decimal("2.5")
    assert state.interval_ends == {PROFILE: T0 + timedelta(minutes=30)}
    assert state.clock_offset_s == Decimal("3")
    assert state.counts == {
        "MeterRegistered": 1, "RegisterRead": 3, "IntervalsRecorded": 1, "ClockChecked": 1,
        "MeterEventLogged": 1,
    }


def test_apply_returns_a_new_state() -> None:
    empty = MeterState.empty("M1")
    after = empty.apply(register_read("1", T0))
    assert empty.registers == {} and empty.version == 0
    assert after.version == 1


def test_late_readings_do_not_replace_newer_ones() -> None:
    state = fold([
        register_read("200", T0 + timedelta(hours=2)),
        register_read("150", T0),  # an older capture fetched later
        intervals(T0 + timedelta(hours=1)),
        intervals(T0 + timedelta(minutes=15)),  # backfill of older rows
        ClockChecked("M1", T0, T0 + timedelta(hours=1), Decimal("-1")),
        ClockDriftDetected("M1", T0, T0, Decimal("40"), Decimal("30")),
    ])
    assert state.registers[IMPORT].value == Decimal("200")
    assert state.interval_ends[PROFILE] == T0 + timedelta(hours=1)
    assert state.clock_offset_s == Decimal("-1")
    assert state.counts["RegisterRead"] == 2  # still counted


def test_reregistration_keeps_first_contact() -> None:
    later = T0 + timedelta(days=30)
    state = fold([
        MeterRegistered("M1", "L+G", "E450", "LGZ1", "fw1", T0),
        MeterRegistered("M1", "L+G", "E450", "LGZ1", "fw2", later),
    ])
    assert state.identity.firmware == "fw2" and state.identity.first_contact == T0


def test_events_of_another_meter_are_refused() -> None:
    with pytest.raises(WrongMeter):
        MeterState.empty("M1").apply(register_read("1", T0, meter="M2"))


def test_apply_with_explicit_version() -> None:
    assert MeterState.empty("M1").apply(register_read("1", T0), version=42).version == 42


def test_carry_over_gives_the_closing_state_to_the_next_year() -> None:
    year_2025 = fold(history())
    opened = year_2025.open_year(2026)
    assert isinstance(opened, YearStreamOpened) and opened.previous_version == 7
    year_2026 = MeterState.from_carry_over(opened)
    assert year_2026.year == 2026 and year_2026.version == 1
    assert year_2026.counts == {"YearStreamOpened": 1}
    assert year_2026.identity == year_2025.identity
    assert year_2026.registers == year_2025.registers
    assert year_2026.interval_ends == year_2025.interval_ends
    assert year_2026.clock_offset_s == year_2025.clock_offset_s
    assert year_2026.closing_state() == year_2025.closing_state()


def test_carry_over_survives_the_payload_round_trip() -> None:
    opened = fold(history()).open_year(2026)
    back = YearStreamOpened.from_data(loads(dumps(opened.to_data())), 1)
    assert MeterState.from_carry_over(back) == MeterState.from_carry_over(opened)


def test_snapshot_round_trip_through_json() -> None:
    state = fold(history())
    restored = MeterState.from_snapshot(loads(dumps(state.to_snapshot())), SNAPSHOT_SCHEMA_VERSION)
    assert restored == state
    # and it folds on exactly like the original
    more = register_read("102", T0 + timedelta(hours=3))
    assert restored.apply(more) == state.apply(more)


def test_empty_state_snapshot_round_trip() -> None:
    state = MeterState.empty("M1", 2026)
    assert MeterState.from_snapshot(loads(dumps(state.to_snapshot())), 1) == state


def test_unknown_snapshot_schema_is_refused() -> None:
    with pytest.raises(UnsupportedSnapshot):
        MeterState.from_snapshot(fold(history()).to_snapshot(), SNAPSHOT_SCHEMA_VERSION + 1)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.pop("carried"),
        lambda s: s.update(version="7"),
        lambda s: s["carried"]["registers"][IMPORT].update(value=1.5),
        lambda s: s.update(counts=[1, 2]),
    ],
)
def test_malformed_snapshot_is_refused(mutate) -> None:
    state = loads(dumps(fold(history()).to_snapshot()))
    mutate(state)
    with pytest.raises(UnsupportedSnapshot):
        MeterState.from_snapshot(state, SNAPSHOT_SCHEMA_VERSION)


def test_event_log_end_is_kept_and_carried_into_the_next_year() -> None:
    from gateway.domain.events import MeterEventLogged, YearStreamOpened

    log = "0.0.99.98.0.255"
    entry = MeterEventLogged(
        meter_id="m1", log_obis=log, event_time=datetime(2025, 12, 31, 22, tzinfo=timezone.utc),
        code=1, meaning="power down",
    )
    older = MeterEventLogged(
        meter_id="m1", log_obis=log, event_time=datetime(2025, 12, 1, tzinfo=timezone.utc),
        code=2, meaning="power up",
    )
    state = MeterState.empty("m1", 2025).apply(entry).apply(older)
    assert state.event_log_ends == {log: entry.event_time}
    opened = state.open_year(2026)
    decoded = YearStreamOpened.from_data(opened.to_data(), YearStreamOpened.SCHEMA_VERSION)
    assert MeterState.from_carry_over(decoded).event_log_ends == {log: entry.event_time}


def test_carry_over_written_before_event_log_ends_existed_still_loads() -> None:
    from gateway.domain.events import YearStreamOpened

    data = MeterState.empty("m1", 2025).open_year(2026).to_data()
    del data["carried"]["eventLogEnds"]
    assert MeterState.from_carry_over(YearStreamOpened.from_data(data, 1)).event_log_ends == {}
