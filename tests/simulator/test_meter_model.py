"""The meter model's promises: registers only grow, the profile is made of register readings,
the clock drifts linearly, and everything is a function of seed and simulated time."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings, strategies as st

from drivers.simulator import MeterConfig, SimulatedMeter, expected_clock, expected_profile_rows, expected_register
from drivers.simulator.meter import CAPTURE_PERIOD_S, INSTALLED_AT

REF = datetime(2026, 3, 2, tzinfo=timezone.utc)
instants = st.integers(0, 3 * 365 * 86_400).map(lambda s: INSTALLED_AT + timedelta(seconds=s))


def meter(seed: int = 1, model: str = "omnipower", serial: str = "57000001") -> SimulatedMeter:
    return SimulatedMeter(MeterConfig("m", model, serial, seed=seed), REF)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["omnipower", "e450", "e360"]), instants, instants)
def test_energy_registers_only_grow(seed: int, model: str, a: datetime, b: datetime) -> None:
    mt = meter(seed, model)
    early, late = min(a, b), max(a, b)
    for obis in ("1.0.1.8.0.255", "1.0.2.8.0.255"):
        assert expected_register(mt, obis, early).raw <= expected_register(mt, obis, late).raw
    assert expected_register(mt, "1.0.1.7.0.255", a).raw > 0


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 1000))
def test_profile_rows_are_register_readings_at_meter_quarter_hours(seed: int, day: int) -> None:
    mt = meter(seed)
    tz = mt.local_timezone
    start = (INSTALLED_AT + timedelta(days=day + 1)).astimezone(tz)
    rows = expected_profile_rows(mt, start, start + timedelta(days=1), now=start + timedelta(days=2))
    assert len(rows) == 97  # both bounds inclusive
    for a, b in zip(rows, rows[1:]):
        assert (b.clock - a.clock).total_seconds() == CAPTURE_PERIOD_S
        assert a.energy_import <= b.energy_import and a.energy_export <= b.energy_export
    # Each row is the register at the true instant the (drifting) meter clock showed its stamp.
    first = rows[0]
    true_capture = datetime.fromtimestamp(mt.true_seconds(first.clock.timestamp()), timezone.utc)
    assert first.energy_import == expected_register(mt, "1.0.1.8.0.255", true_capture).raw


def test_profile_never_holds_the_future_nor_more_than_its_depth() -> None:
    mt = meter()
    now = REF + timedelta(hours=5, minutes=7)
    rows = expected_profile_rows(mt, REF - timedelta(days=400), REF + timedelta(days=1), now=now)
    assert rows[-1].clock.timestamp() <= mt.meter_seconds(now.timestamp())
    assert len(rows) == mt.config.profile.profile_depth_days * 96


def test_clock_drift_grows_linearly_from_the_sync_reference() -> None:
    mt = meter(seed=42)
    offsets = [mt.clock_offset_seconds(REF + timedelta(days=d)) for d in (0, 10, 20)]
    assert offsets[2] - offsets[1] == pytest.approx(offsets[1] - offsets[0], abs=1e-3)
    assert offsets[2] != pytest.approx(offsets[0], abs=1e-3)
    reading = expected_clock(mt, REF)
    assert reading.deviation == -60 and reading.utc == reading.local_time.replace(
        tzinfo=timezone(timedelta(hours=1))).astimezone(timezone.utc)
    assert expected_clock(meter(model="e360"), REF).deviation is None  # sends 0x8000


def test_values_are_a_function_of_seed_and_time_only() -> None:
    at = REF + timedelta(hours=3)
    assert expected_register(meter(5), "1.0.1.8.0.255", at) == expected_register(meter(5), "1.0.1.8.0.255", at)
    assert expected_register(meter(5), "1.0.1.8.0.255", at) != expected_register(meter(6), "1.0.1.8.0.255", at)


def test_bad_meter_config_is_refused_with_the_meter_named() -> None:
    with pytest.raises(ValueError, match="bad-one"):
        MeterConfig("bad-one", model="e999")
    with pytest.raises(ValueError, match="bad-two"):
        MeterConfig("bad-two", hdlc_address=5)
    assert "12345678" not in repr(MeterConfig("m3"))
