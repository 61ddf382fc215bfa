"""VEE: suspect readings become SuspectReadingFlagged with a reason and never move the last good value."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.events import SuspectReadingFlagged
from gateway.domain.normalize import NormalizeSettings
from gateway.domain.vee import (
    DEFAULT_BAD_STATUS_MASK,
    STATUS_POWER_DOWN,
    Verdict,
    VeeRules,
    check_counter_step,
    check_interval_energy,
    check_status,
    status_names,
)
from tests.normalize import (
    EXPORT,
    IMPORT,
    LOAD_PROFILE,
    QUARTER,
    FakeHistory,
    at,
    events_of,
    meter_config,
    only,
    poll,
    profile,
    register,
    steady_rows,
)

T = at("2026-05-04T08:00:00")
HOUR = timedelta(hours=1)
RULES = VeeRules()


def seeded(value_wh: int = 1_000_000) -> FakeHistory:
    """A meter whose last good +A register is ``value_wh`` at T (max power 20 kW)."""
    history = FakeHistory()
    history.run(poll(T, registers=(register(IMPORT, value_wh),)))
    return history


def flagged(plans: list) -> SuspectReadingFlagged:
    flag = only(events_of(plans, "SuspectReadingFlagged"))
    assert isinstance(flag, SuspectReadingFlagged)
    return flag


# --- registers -----------------------------------------------------------------------------------


def test_register_going_backwards_is_flagged_and_keeps_the_last_good_value() -> None:
    history = seeded()
    plans = history.run(poll(T + HOUR, registers=(register(IMPORT, 999_000),)))
    flag = flagged(plans)
    assert not events_of(plans, "RegisterRead")
    assert "backwards" in flag.reason and flag.value == Decimal(999_000) and flag.obis == IMPORT
    assert history.states[2026].registers[IMPORT].value == Decimal(1_000_000)
    # The next reading is checked against the last good value, not the suspect one.
    plans = history.run(poll(T + 2 * HOUR, registers=(register(IMPORT, 1_010_000),)))
    assert only(events_of(plans, "RegisterRead")).value == Decimal(1_010_000)


def test_register_rising_faster_than_max_power_is_flagged() -> None:
    history = seeded()
    # 20 kW for one hour is 20 000 Wh; 2 % tolerance and one step of resolution on top.
    plans = history.run(poll(T + HOUR, registers=(register(IMPORT, 1_020_402),)))
    flag = flagged(plans)
    assert "more than max power 20000 W" in flag.reason
    assert history.states[2026].registers[IMPORT].value == Decimal(1_000_000)
    assert history.states[2026].registers[IMPORT].capture_time == T


def test_register_rising_just_within_max_power_is_stored() -> None:
    history = seeded()
    plans = history.run(poll(T + HOUR, registers=(register(IMPORT, 1_020_401),)))
    assert only(events_of(plans, "RegisterRead")).value == Decimal(1_020_401)
    assert not events_of(plans, "SuspectReadingFlagged")


def test_coarse_register_may_jump_by_one_resolution_step() -> None:
    history = FakeHistory()
    history.run(poll(T, registers=(register(IMPORT, 1000, scaler=3),)))  # 1 000 kWh
    # One minute at most 333 Wh, but a kWh register shows the rise as one 1000 Wh step.
    plans = history.run(poll(T + timedelta(minutes=1), registers=(register(IMPORT, 1001, scaler=3),)))
    assert only(events_of(plans, "RegisterRead")).value == Decimal(1_001_000)


def test_instantaneous_values_are_not_rate_checked() -> None:
    history = FakeHistory()
    history.run(poll(T, registers=(register("1.0.1.7.0.255", 5, unit_code=27, unit="W"),)))
    plans = history.run(poll(T + timedelta(seconds=1), registers=(register("1.0.1.7.0.255", 90_000, unit_code=27,
                                                                            unit="W"),)))
    assert only(events_of(plans, "RegisterRead")).value == Decimal(90_000)


@settings(max_examples=60, deadline=None)
@given(
    last=st.integers(min_value=0, max_value=10**9),
    rise=st.integers(min_value=-10**6, max_value=10**6),
    minutes=st.integers(min_value=1, max_value=24 * 60),
)
def test_counter_step_verdict_matches_the_rule(last: int, rise: int, minutes: int) -> None:
    start = T
    verdict = check_counter_step(
        start, Decimal(last), start + timedelta(minutes=minutes), Decimal(last + rise), unit="Wh",
        max_power_w=Decimal(20_000), resolution=Decimal(1), rules=RULES,
    )
    limit = Decimal(20_000) * minutes / 60 * Decimal("1.02") + 1
    assert verdict.ok == (0 <= rise <= limit)
    assert verdict.ok or verdict.reason


def test_counter_step_needs_time_to_pass() -> None:
    with pytest.raises(ValueError):
        check_counter_step(T, Decimal(1), T, Decimal(1), unit="Wh", max_power_w=Decimal(1),
                           resolution=Decimal(1), rules=RULES)


def test_verdict_is_consistent() -> None:
    with pytest.raises(ValueError):
        Verdict(False)
    with pytest.raises(ValueError):
        Verdict(True, "why?")


# --- load profile rows ---------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "names"), [
    (0x04, "data not valid"), (0x02, "clock invalid"), (0x01, "critical error"), (0x84, "data not valid")])
def test_row_with_bad_status_is_kept_out_of_the_intervals_and_flagged(status: int, names: str) -> None:
    rows = steady_rows(at("2026-05-04T06:00"), 4)
    rows[1] = (rows[1][0], status, rows[1][2], rows[1][3])
    history = FakeHistory()
    plans = history.run(poll(T, profiles=(profile(rows),)))
    recorded = only(events_of(plans, "IntervalsRecorded"))
    assert [r.end_time for r in recorded.rows] == [rows[0][0], rows[2][0], rows[3][0]]
    flags = events_of(plans, "SuspectReadingFlagged")
    assert {f.obis for f in flags} == {IMPORT, EXPORT}  # every value of the row, each with its value
    assert all(f.capture_time == rows[1][0] and names in f.reason and LOAD_PROFILE in f.reason for f in flags)
    assert {f.value for f in flags} == {rows[1][2], rows[1][3]}
    # The refused row is present, just not trusted: it is not a gap.
    assert not events_of(plans, "ReadingGapDetected")


def test_power_down_row_is_information_by_default_and_bad_when_configured() -> None:
    rows = steady_rows(at("2026-05-04T06:00"), 3)
    rows[1] = (rows[1][0], STATUS_POWER_DOWN, rows[1][2], rows[1][3])
    default = FakeHistory().run(poll(T, profiles=(profile(rows),)))
    assert [r.status for r in only(events_of(default, "IntervalsRecorded")).rows] == [0, 0x80, 0]
    strict = NormalizeSettings("gw", Decimal(10), VeeRules(bad_status_mask=DEFAULT_BAD_STATUS_MASK | STATUS_POWER_DOWN))
    plans = FakeHistory().run(poll(T, profiles=(profile(rows),)), settings=strict)
    assert len(only(events_of(plans, "IntervalsRecorded")).rows) == 2
    assert all("power down" in f.reason for f in events_of(plans, "SuspectReadingFlagged"))


def test_interval_rising_more_than_max_power_times_period_is_flagged_channel_only() -> None:
    rows = steady_rows(at("2026-05-04T06:00"), 4, step_wh=1000)
    # 20 kW x 15 min = 5000 Wh (+2 % + 1 Wh): a 9000 Wh rise in one interval is impossible.
    rows[2] = (rows[2][0], 0, rows[1][2] + 9000, rows[2][3])
    rows[3] = (rows[3][0], 0, rows[1][2] + 2000, rows[3][3])
    history = FakeHistory()
    plans = history.run(poll(T, profiles=(profile(rows),)))
    flag = flagged(plans)
    assert flag.obis == IMPORT and flag.capture_time == rows[2][0] and "max power" in flag.reason
    recorded = only(events_of(plans, "IntervalsRecorded")).rows
    # The row keeps its good channel; the next row is checked against the last good value (2 intervals).
    assert dict(recorded[2].values) == {EXPORT: rows[2][3]}
    assert dict(recorded[3].values)[IMPORT] == rows[1][2] + 2000


def test_profile_counter_going_backwards_against_the_stored_register_is_flagged() -> None:
    history = seeded(1_000_000)  # +A register 1 000 000 Wh at 08:00
    rows = steady_rows(at("2026-05-04T08:15"), 2, start_wh=999_000)
    plans = history.run(poll(T + HOUR, profiles=(profile(rows),)))
    flags = events_of(plans, "SuspectReadingFlagged")
    assert [f.capture_time for f in flags] == [rows[0][0], rows[1][0]]
    assert all("backwards" in f.reason for f in flags)


def test_interval_energy_channel_checked_against_max_power_times_period() -> None:
    ok = check_interval_energy(Decimal(5000), 900, unit="Wh", max_power_w=Decimal(20_000),
                               resolution=Decimal(1), rules=RULES)
    too_much = check_interval_energy(Decimal(5200), 900, unit="Wh", max_power_w=Decimal(20_000),
                                     resolution=Decimal(1), rules=RULES)
    negative = check_interval_energy(Decimal(-1), 900, unit="Wh", max_power_w=Decimal(20_000),
                                     resolution=Decimal(1), rules=RULES)
    assert ok.ok and not too_much.ok and not negative.ok and "negative" in negative.reason


def test_refused_tail_is_pending_until_a_good_row_follows() -> None:
    history = FakeHistory()
    rows = steady_rows(at("2026-05-04T06:00"), 4)
    rows[3] = (rows[3][0], 0x04, rows[3][2], rows[3][3])
    first = history.run(poll(T, profiles=(profile(rows),)))
    assert not events_of(first, "SuspectReadingFlagged")  # the refused last row: not yet
    assert history.states[2026].interval_ends[LOAD_PROFILE] == rows[2][0]
    # The next poll reads it again, with a good row after it: now it is flagged, once.
    more = rows + steady_rows(rows[3][0] + QUARTER, 1, start_wh=int(rows[3][2]) + 250)
    second = history.run(poll(T + QUARTER, profiles=(profile(more),)))
    assert only(sorted({f.capture_time for f in events_of(second, "SuspectReadingFlagged")})) == rows[3][0]
    assert history.states[2026].interval_ends[LOAD_PROFILE] == more[-1][0]
    assert not history.run(poll(T + 2 * QUARTER, profiles=(profile(more),)))


def test_status_helpers() -> None:
    assert status_names(0xA5) == ("critical error", "data not valid", "clock adjusted", "power down")
    assert check_status(0x28, RULES).ok  # DST + clock adjusted: information only
    assert check_status(0x06, RULES).reason == "status 0x06 (clock invalid, data not valid)"
    with pytest.raises(ValueError):
        VeeRules(bad_status_mask=0x100)


def test_max_power_comes_from_the_meter_config() -> None:
    history = FakeHistory()
    small = meter_config(max_power_w=Decimal(1000))
    history.run(poll(T, registers=(register(IMPORT, 0),)), meter=small)
    plans = history.run(poll(T + HOUR, registers=(register(IMPORT, 5000),)), meter=small)
    assert "max power 1000 W" in flagged(plans).reason
