"""Clock synchronisation in the poller (issue 14, item 2): real poller, real simulator (whose clock
drifts and can be set), real SQLite store; the simulator's clock is frozen so its oracle is exact.

A meter 90 s fast is set, read again and verified (ClockSynchronised stored, the meter's clock
right); a meter 2 h off is refused and flagged (ClockSyncRefused, a WARNING, and no SET sent); a
meter whose clock is read-only refuses the SET: the clock step fails with AccessDenied, a
ClockSyncRefused names the reason, and the rest of the poll is stored.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from drivers.simulator import Framing, MeterSimulator, SecurityLevel, SimulatorConfig
from drivers.simulator.fleet import fleet
from drivers.simulator.meter import SimulatedMeter
from gateway.config import parse_config
from gateway.domain.events import ClockSynchronised, ClockSyncRefused, DomainEvent
from gateway.domain.mapper import decode
from gateway.domain.poll_result import STEP_ORDER
from gateway.polling.poller import Poller
from gateway.wiring import open_poller

from . import SECRETS, fleet_toml

pytestmark = pytest.mark.anyio

START = datetime(2026, 4, 14, 9, 5, tzinfo=timezone.utc)  # 300 s after a quarter hour
METER = "sim-0000"  # omnipower on its own wrapper port
CLOCK = ("0.0.1.0.0.255", 2)
CLOCK_SYNC = "\n".join(["[clock_sync]", "enabled = true", "threshold_s = 10", "max_step_s = 300",
                        "safe_window_s = 60"])


@asynccontextmanager
async def polling(
    tmp_path: Path, *, level: SecurityLevel = SecurityLevel.LLS, start: datetime = START,
    meter_options: str = "", **clock: object,
) -> AsyncIterator[tuple[SimulatedMeter, Poller]]:
    meters = fleet(2, security=level)
    meters = (replace(meters[0], clock_drift_ppm=0.0, **clock), *meters[1:])  # type: ignore[arg-type]
    async with MeterSimulator(SimulatorConfig(meters=meters, framing=Framing.BOTH, start=start, speed=0.0)) as sim:
        text = fleet_toml(sim, str(tmp_path / "events.db"), absent=False, deadline_s=20, response_s=5)
        if meter_options:
            text = text.replace(f'id = "{METER}"\n', f'id = "{METER}"\n{meter_options}\n', 1)
        config = parse_config(text + "\n" + CLOCK_SYNC + "\n", base_dir=tmp_path)
        async with open_poller(config, now=sim.clock.now, environ=SECRETS) as poller:
            yield sim.meter(METER), poller


async def stored(poller: Poller) -> list[DomainEvent]:
    return [decode(e) for e in await poller.history.repository.store.load(f"Meter:{METER}:{START.year}")]


def types(events: list[DomainEvent]) -> Counter[str]:
    return Counter(type(e).__name__ for e in events)


@pytest.mark.parametrize("level", [SecurityLevel.LLS, SecurityLevel.HLS_GMAC], ids=["lls", "hls"])
async def test_a_meter_90_s_fast_is_synchronised_once_and_verified(tmp_path: Path, level: SecurityLevel) -> None:
    async with polling(tmp_path, level=level, clock_offset_s=90.0) as (meter, poller):
        assert meter.clock_offset_seconds(START) == pytest.approx(90.0)
        first = await poller.poll(METER, STEP_ORDER)
        second = await poller.poll(METER, ["clock"])
        events = await stored(poller)
        offset_now = meter.clock_offset_seconds(START)
        sets = list(meter.sets)
        state = await poller.history.current(METER, START.year)

    assert first.ok and second.ok, (first.describe_error(), second.describe_error())
    assert sets == [CLOCK]  # once: the second poll finds the clock right
    assert abs(offset_now) < 0.01
    (synced,) = [e for e in events if isinstance(e, ClockSynchronised)]
    assert synced.method == "set" and synced.verified
    assert synced.offset_before_s == Decimal("90") and abs(synced.offset_after_s) <= 2
    assert synced.meter_time_before == START + timedelta(seconds=90)
    assert abs(synced.meter_time_after - synced.gateway_time_after) <= timedelta(seconds=2)
    assert synced.deviation_min == -60  # the meter's deviation as read (UTC+1, COSEM sign)
    counts = types(events)
    # The drift is on record too (read before the correction), and the poll stored everything else.
    assert counts["ClockDriftDetected"] == 1 and counts["ClockSyncRefused"] == 0
    assert counts["RegisterRead"] > 0 and counts["IntervalsRecorded"] > 0
    assert state.clock_offset_s is not None and abs(state.clock_offset_s) <= 2


async def test_shift_time_per_meter_override(tmp_path: Path) -> None:
    async with polling(tmp_path, clock_offset_s=-45.0, meter_options='clock_sync = { method = "shift_time" }') as (
        meter, poller
    ):
        summary = await poller.poll(METER, ["clock"])
        events = await stored(poller)
        assert summary.ok, summary.describe_error()
        assert meter.actions == [("0.0.1.0.0.255", 6)] and meter.sets == []
        assert abs(meter.clock_offset_seconds(START)) < 0.01
    (synced,) = [e for e in events if isinstance(e, ClockSynchronised)]
    assert synced.method == "shift_time" and synced.verified and synced.offset_before_s == Decimal("-45")


async def test_a_meter_2_hours_off_is_refused_and_flagged_without_a_set(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with polling(tmp_path, clock_offset_s=7200.0) as (meter, poller):
        with caplog.at_level(logging.WARNING, logger="gateway.polling.meter_reading"):
            summary = await poller.poll(METER, ["clock", "registers"])
        events = await stored(poller)
        assert meter.sets == [] and meter.actions == []
        assert meter.clock_offset_seconds(START) == pytest.approx(7200.0)
    assert summary.ok  # nothing failed: the refusal is a finding, not an error
    (refused,) = [e for e in events if isinstance(e, ClockSyncRefused)]
    assert refused.offset_s == Decimal("7200") and refused.max_step_s == Decimal("300")
    assert "beyond max_step_s" in refused.reason
    assert types(events)["ClockSynchronised"] == 0
    assert any(r.levelno == logging.WARNING and METER in r.getMessage() and "tamper" in r.getMessage()
               for r in caplog.records)


async def test_a_read_only_clock_fails_the_clock_step_alone(tmp_path: Path) -> None:
    async with polling(tmp_path, clock_offset_s=90.0, clock_read_only=True) as (meter, poller):
        summary = await poller.poll(METER, STEP_ORDER)
        events = await stored(poller)
        assert meter.sets == [CLOCK]  # sent, and refused by the meter
        assert meter.clock_offset_seconds(START) == pytest.approx(90.0)
    assert [(e.step, e.kind) for e in summary.errors] == [("clock", "AccessDenied")]
    assert "READ_WRITE_DENIED" in summary.errors[0].message
    (refused,) = [e for e in events if isinstance(e, ClockSyncRefused)]
    assert refused.reason.startswith("AccessDenied: ") and "READ_WRITE_DENIED" in refused.reason
    counts = types(events)
    # The clock read itself, and every later step of the same session, are stored.
    assert counts["ClockChecked"] == 1 and counts["RegisterRead"] > 0 and counts["IntervalsRecorded"] > 0
    assert counts["ClockSynchronised"] == 0


async def test_near_an_interval_boundary_the_sync_waits_for_the_next_poll(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # True time 08:59:30, the meter 90 s fast at 09:01:00 (local 10:01): setting it back would make
    # it capture the 10:00 interval twice; the next poll, later in the quarter, sets it.
    early = START.replace(minute=0) - timedelta(seconds=30)
    async with polling(tmp_path, start=early, clock_offset_s=90.0) as (meter, poller):
        with caplog.at_level(logging.INFO, logger="gateway.polling.meter_reading"):
            summary = await poller.poll(METER, ["clock"])
        assert summary.ok and meter.sets == []
        assert any("deferred" in r.getMessage() and "boundary" in r.getMessage() for r in caplog.records)
