"""normalize(): readings become domain events in base units, per year stream, once."""
from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.readings import RegisterRefused
from gateway.config.load import load_config
from gateway.domain.events import (
    ClockChecked,
    ClockDriftDetected,
    IntervalsRecorded,
    MeterEventLogged,
    MeterRegistered,
    RegisterRead,
    YearStreamOpened,
)
from gateway.domain.meter import MeterState
from gateway.domain.normalize import (
    MissingState,
    NormalizeError,
    NormalizeSettings,
    needed_years,
    normalize,
)
from gateway.domain.poll_result import InvalidPollResult, PollResult, StepError
from gateway.domain.quantities import quantity_of
from gateway.store.model import NO_STREAM
from gateway.domain.streams import stream_id
from tests.normalize import (
    EVENT_LOG,
    EXPORT,
    IMPORT,
    LOAD_PROFILE,
    METER_ID,
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
    only,
    poll,
    profile,
    register,
    steady_rows,
)

T = at("2026-03-10T12:00:05")


# --- units, quantities, registers ----------------------------------------------------------------


def test_registers_become_register_reads_in_base_units_with_obis_and_quantity() -> None:
    p = poll(T, registers=(
        register(IMPORT, 12_345, scaler=3),  # 12 345 kWh sent as Wh with scaler 3
        register(EXPORT, 7, scaler=-1),  # 0.7 Wh
        register("1.0.1.7.0.255", 1500, scaler=0, unit_code=27, unit="W"),
        register("1.0.32.7.0.255", 2301, scaler=-1, unit_code=35, unit="V"),
        RegisterRefused(obis="1.0.3.8.0.255", class_id=3, result="READ_WRITE_DENIED"),
    ))
    reads = {e.obis: e for e in events_of(FakeHistory().run(p), "RegisterRead")}
    assert set(reads) == {IMPORT, EXPORT, "1.0.1.7.0.255", "1.0.32.7.0.255"}  # the refused one is absent
    energy = reads[IMPORT]
    assert (energy.quantity, energy.value, energy.unit) == ("active_energy_import", Decimal(12_345_000), "Wh")
    assert (reads[EXPORT].quantity, reads[EXPORT].value) == ("active_energy_export", Decimal("0.7"))
    assert (reads["1.0.1.7.0.255"].quantity, reads["1.0.1.7.0.255"].unit) == ("active_power_import", "W")
    assert (reads["1.0.32.7.0.255"].quantity, reads["1.0.32.7.0.255"].value) == ("voltage_l1", Decimal("230.1"))
    # A class 3 register has no time of its own: it is stamped with the poll's read time, in UTC.
    assert energy.capture_time == T and energy.read_time == T and energy.capture_time.tzinfo is not None


def test_extended_register_keeps_its_own_capture_time() -> None:
    captured = at("2026-03-10T11:45:00")
    read = only(events_of(FakeHistory().run(poll(T, registers=(register(IMPORT, 5, capture_time=captured),))),
                          "RegisterRead"))
    assert read.capture_time == captured and read.read_time == T


@pytest.mark.parametrize(("obis", "name", "unit", "kind"), [
    ("1.0.1.8.0.255", "active_energy_import", "Wh", "cumulative"),
    ("1.0.2.8.0.255", "active_energy_export", "Wh", "cumulative"),
    ("1.0.1.8.1.255", "active_energy_import_t1", "Wh", "cumulative"),
    ("1.0.3.8.0.255", "reactive_energy_import", "varh", "cumulative"),
    ("1.0.1.7.0.255", "active_power_import", "W", "instant"),
    ("1.0.32.7.0.255", "voltage_l1", "V", "instant"),
    ("1.0.72.7.0.255", "voltage_l3", "V", "instant"),
    ("1.0.1.29.0.255", "active_energy_import_interval", "Wh", "interval"),
    ("1.0.1.8.0.101", "active_energy_import_f101", "Wh", "cumulative"),
    ("0.0.96.7.9.255", "obis_0_0_96_7_9_255", "", "instant"),
])
def test_quantity_table(obis: str, name: str, unit: str, kind: str) -> None:
    quantity = quantity_of(obis)
    assert (quantity.name, quantity.unit, quantity.kind) == (name, unit, kind)


def test_register_with_a_unit_that_does_not_fit_its_quantity_is_flagged() -> None:
    plans = FakeHistory().run(poll(T, registers=(register(IMPORT, 5, unit_code=27, unit="W"),)))
    assert not events_of(plans, "RegisterRead")
    assert "unit 'W'" in only(events_of(plans, "SuspectReadingFlagged")).reason


# --- identity -------------------------------------------------------------------------------------


def test_meter_registered_on_first_contact_then_only_when_identity_changes() -> None:
    history = FakeHistory()
    first = only(events_of(history.run(poll(T, identity=identity())), "MeterRegistered"))
    assert isinstance(first, MeterRegistered)
    assert (first.make, first.model, first.serial, first.firmware, first.first_contact) == (
        "landis_gyr", "E450", "35000001", "1.2.3", T)
    assert not events_of(history.run(poll(T + timedelta(hours=1), identity=identity())), "MeterRegistered")
    upgraded = only(events_of(history.run(poll(T + timedelta(hours=2), identity=identity("1.3.0"))),
                              "MeterRegistered"))
    assert upgraded.firmware == "1.3.0" and upgraded.event_id() != first.event_id()
    # The aggregate keeps the first contact across the re-registration.
    assert history.states[2026].identity is not None
    assert history.states[2026].identity.first_contact == T


# --- clock ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("offset_s", "drift"), [(0, False), (9.5, False), (10, False), (10.25, True),
                                                 (-10.001, True), (-3, False), (-3600, True)])
def test_clock_checked_always_and_drift_only_over_threshold(offset_s: float, drift: bool) -> None:
    plans = FakeHistory().run(poll(T, clock=clock(T, offset_s)))
    checked = only(events_of(plans, "ClockChecked"))
    assert isinstance(checked, ClockChecked)
    assert checked.offset_s == Decimal(str(offset_s))
    drifts = events_of(plans, "ClockDriftDetected")
    assert len(drifts) == int(drift)
    if drift:
        detected = drifts[0]
        assert isinstance(detected, ClockDriftDetected)
        assert detected.threshold_s == Decimal(10) and detected.offset_s == checked.offset_s


def test_clock_offset_is_exact_to_the_microsecond() -> None:
    reading = clock(T, 0)
    exact = type(reading)(reading.gateway_time + timedelta(seconds=12, microseconds=345), reading.gateway_time,
                          timedelta(seconds=12, microseconds=345), -60, 0, (), b"")
    checked = only(events_of(FakeHistory().run(poll(T, clock=exact)), "ClockChecked"))
    assert checked.offset_s == Decimal("12.000345")


# --- event log -----------------------------------------------------------------------------------


def test_event_log_entries_with_code_and_meaning() -> None:
    entries = (event_entry(at("2026-03-09T02:00:00"), 1), event_entry(at("2026-03-09T02:07:00"), 2),
               event_entry(at("2026-03-09T03:00:00"), 231))
    logged = events_of(FakeHistory().run(poll(T, events=entries)), "MeterEventLogged")
    assert [(e.code, e.meaning) for e in logged] == [
        (1, "power down"), (2, "power up"), (231, "event code 231 (not a standard IDIS/DSMR code)")]
    assert all(isinstance(e, MeterEventLogged) and e.log_obis == EVENT_LOG for e in logged)


# --- year streams --------------------------------------------------------------------------------


def test_new_year_rows_of_31_december_go_to_the_previous_year_and_new_stream_opens_first() -> None:
    history = FakeHistory()
    # 2025: the meter is known, the profile stored up to 23:00 on 31 December.
    history.run(poll(at("2025-12-31T23:00:05"), identity=identity(), registers=(register(IMPORT, 1_000_000),),
                     profiles=(profile(steady_rows(at("2025-12-31T22:00:00"), 5)),)))
    assert history.states[2025].interval_ends[LOAD_PROFILE] == at("2025-12-31T23:00:00")
    version_2025 = history.states[2025].version
    # Poll at 00:05 UTC on 1 January: rows of 23:15 .. 00:00 and a register read now.
    read_time = at("2026-01-01T00:05:00")
    rows = steady_rows(at("2025-12-31T23:15:00"), 4, start_wh=1_001_250)
    plans = history.run(poll(read_time, identity=identity(), clock=clock(read_time, 1),
                             registers=(register(IMPORT, 1_002_200),),
                             profiles=(profile(rows, start=at("2025-12-31T23:00:00"), end=read_time),)))
    assert [(p.stream_id, p.expected_version) for p in plans] == [
        (stream_id(METER_ID, 2025), version_2025), (stream_id(METER_ID, 2026), NO_STREAM)]
    old, new = plans
    assert [e.TYPE for e in old.domain_events] == ["IntervalsRecorded"]
    old_rows = only(events_of([old], "IntervalsRecorded")).rows
    assert [r.end_time for r in old_rows] == [at("2025-12-31T23:15"), at("2025-12-31T23:30"), at("2025-12-31T23:45")]
    assert new.domain_events[0].TYPE == "YearStreamOpened"
    opened = new.domain_events[0]
    assert isinstance(opened, YearStreamOpened)
    # The carry-over includes what this very plan appended to 2025.
    assert opened.previous_version == old.state_after.version
    assert opened.carried.interval_ends[LOAD_PROFILE] == at("2025-12-31T23:45")
    assert new.events[0].type == "YearStreamOpened" and new.events[0].event_id == opened.event_id()
    new_rows = only(events_of([new], "IntervalsRecorded")).rows
    assert [r.end_time for r in new_rows] == [at("2026-01-01T00:00")]
    assert not events_of([new], "MeterRegistered")  # known from the carry-over
    assert only(events_of([new], "RegisterRead")).capture_time == read_time
    assert history.states[2026].interval_ends[LOAD_PROFILE] == at("2026-01-01T00:00")
    assert history.states[2026].identity is not None


def test_first_stream_of_a_meter_has_no_year_stream_opened() -> None:
    plans = FakeHistory().run(poll(T, identity=identity()))
    assert [e.TYPE for e in only(plans).domain_events] == ["MeterRegistered"]


def test_missing_state_is_a_typed_error_naming_the_years() -> None:
    p = poll(T, profiles=(profile(steady_rows(at("2025-12-31T23:45"), 2)),))
    with pytest.raises(MissingState) as caught:
        normalize(p, {2026: MeterState.empty(METER_ID, 2026)}, meter_config(), SETTINGS)
    assert caught.value.years == (2025,)
    assert needed_years(p) == {2025, 2026}


def test_poll_of_another_meter_is_refused() -> None:
    p = PollResult(meter_id="other", read_time=T)
    with pytest.raises(NormalizeError, match="other"):
        normalize(p, {2026: MeterState.empty("other", 2026)}, meter_config(), SETTINGS)


def test_poll_result_validation() -> None:
    with pytest.raises(InvalidPollResult):
        PollResult(meter_id=METER_ID, read_time=datetime(2026, 1, 1))  # naive
    with pytest.raises(InvalidPollResult):
        PollResult(meter_id="", read_time=T)
    p = PollResult(meter_id=METER_ID, read_time=T, errors=(StepError("load_profile", "MeterTimeout", "no answer"),))
    assert p.failed("load_profile")[0].kind == "MeterTimeout" and p.failed("clock") == ()


def test_metadata_and_ids_are_deterministic() -> None:
    p = poll(T, identity=identity(), clock=clock(T, 2), registers=(register(IMPORT, 10),),
             profiles=(profile(steady_rows(at("2026-03-10T11:00"), 4)),))
    a = normalize(p, FakeHistory().states_for(p), meter_config(), SETTINGS)
    b = normalize(p, FakeHistory().states_for(p), meter_config(), SETTINGS)
    assert [e.event_id for e in only(a).events] == [e.event_id for e in only(b).events]
    metadata = only(a).events[0].metadata
    assert metadata.gateway_id == "gw-test" and metadata.recorded_at == T


def test_settings_from_the_example_fleet_config() -> None:
    fleet = load_config(Path(__file__).parents[2] / "config" / "example-fleet.toml", check_secret_files=False)
    settings_ = NormalizeSettings.from_fleet(fleet)
    assert settings_.gateway_id == fleet.gateway_id
    assert settings_.clock_drift_threshold_s == Decimal(str(fleet.clock_drift_threshold_s))
    with pytest.raises(ValueError):
        NormalizeSettings("", Decimal(1))


# --- idempotency ---------------------------------------------------------------------------------


def full_poll(read_time: datetime, rows: int, start_wh: int, offset_s: float) -> PollResult:
    first_end = read_time.replace(minute=0, second=0, microsecond=0) - rows * QUARTER
    return poll(
        read_time, identity=identity(), clock=clock(read_time, offset_s),
        registers=(register(IMPORT, start_wh + rows * 250), register("1.0.32.7.0.255", 2300, -1, 35, "V")),
        profiles=(profile(steady_rows(first_end, rows, start_wh=start_wh),
                          start=first_end - QUARTER, end=read_time),),
        events=(event_entry(first_end, 1), event_entry(first_end + timedelta(minutes=3), 2)),
    )


@settings(max_examples=40, deadline=None)
@given(
    read_time=st.datetimes(min_value=datetime(2024, 12, 30), max_value=datetime(2027, 1, 2)).map(
        lambda d: d.replace(tzinfo=at("2026-01-01").tzinfo)),
    rows=st.integers(min_value=1, max_value=12),
    start_wh=st.integers(min_value=0, max_value=10**9),
    offset_s=st.floats(min_value=-100, max_value=100, allow_nan=False).map(lambda f: round(f, 3)),
)
def test_renormalizing_the_same_poll_after_applying_adds_nothing(
    read_time: datetime, rows: int, start_wh: int, offset_s: float,
) -> None:
    history = FakeHistory()
    p = full_poll(read_time, rows, start_wh, offset_s)
    first = history.run(p)
    assert by_type(first)["IntervalsRecorded"] >= 1 and by_type(first)["RegisterRead"] == 2
    # A re-read adds nothing the store does not have, except event log entries, which MeterState
    # does not track yet (see gateway.domain.normalize._event_log_end): those repeat with identical ids.
    ids = {e.event_id for plan in first for e in plan.events}
    again = normalize(p, history.states_for(p), meter_config(), SETTINGS)
    repeated = [e for plan in again for e in plan.domain_events]
    assert all(e.TYPE == "MeterEventLogged" for e in repeated), [e.TYPE for e in repeated]
    assert all(e.event_id() in ids for e in repeated)


def test_overlapping_re_read_adds_only_the_new_rows() -> None:
    history = FakeHistory()
    history.run(poll(T, profiles=(profile(steady_rows(at("2026-03-10T10:00"), 4)),)))
    plans = history.run(poll(T + QUARTER, profiles=(profile(steady_rows(at("2026-03-10T10:00"), 6)),)))
    recorded = only(events_of(plans, "IntervalsRecorded"))
    assert isinstance(recorded, IntervalsRecorded)
    assert [r.end_time for r in recorded.rows] == [at("2026-03-10T11:00"), at("2026-03-10T11:15")]
    assert not events_of(plans, "ReadingGapDetected")


def test_interval_rows_carry_channels_units_and_status() -> None:
    rows = steady_rows(at("2026-03-10T10:00"), 2, status=0x08)  # DST flag: information, not bad
    recorded = only(events_of(FakeHistory().run(poll(T, profiles=(profile(rows),))), "IntervalsRecorded"))
    first = recorded.rows[0]
    assert dict(first.values) == {IMPORT: Decimal(1_000_000), EXPORT: Decimal(5000)}
    assert dict(first.units) == {IMPORT: "Wh", EXPORT: "Wh"} and first.status == 0x08
    assert recorded.capture_period_s == 900


def test_register_read_event_round_trips_through_the_codec() -> None:
    plan = only(FakeHistory().run(poll(T, registers=(register(IMPORT, 123_456, scaler=-3),))))
    stored = only(plan.events)
    back = RegisterRead.from_data(stored.data, stored.schema_version)
    assert back.value == Decimal("123.456") and stored.data["value"] == "123.456"
