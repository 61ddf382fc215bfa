"""Simulator -> scheduler + poller -> SQLite, over several poll cycles in simulated time.

The simulator's clock is frozen and moved 15 minutes between cycles; the gateway reads the same
clock, so the simulator's oracle (``expected_register``, ``expected_profile_rows``,
``expected_events``) says exactly what must be stored. The cycles cross a new year (the profile rows
and readings after midnight UTC go to the next year's stream) and the poller is replaced halfway,
as after a restart: the load-profile catch-up and the event-log cursor must come from the store.
"""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from drivers.simulator import (
    Framing,
    MeterSimulator,
    SimulatorConfig,
    expected_events,
    expected_profile_rows,
    expected_register,
)
from drivers.simulator.fleet import fleet
from gateway.config import FleetConfig, parse_config
from gateway.domain.events import (
    IntervalsRecorded,
    MeterEventLogged,
    MeterRegistered,
    RegisterRead,
    YearStreamOpened,
)
from gateway.domain.mapper import decode
from gateway.polling.health import HealthStore
from gateway.domain.poll_result import PollSummary
from gateway.history.repository import MeterRepository
from gateway.polling.scheduler import Scheduler
from gateway.wiring import open_poller
from tests.backends import sqlite_events

from . import ABSENT, SECRETS, fleet_toml

pytestmark = pytest.mark.anyio

START = datetime(2025, 12, 31, 23, 20, tzinfo=timezone.utc)
STEP = timedelta(minutes=15)
CYCLES = 4  # 23:20, 23:35, 23:50, 00:05: the last one in 2026
REGISTERS = ("1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.1.7.0.255", "1.0.32.7.0.255")
UNITS = {30: "Wh", 27: "W", 35: "V"}


async def _cycles(simulator: MeterSimulator, config: FleetConfig, count: int) -> list[tuple[datetime, list[PollSummary]]]:
    """``count`` cycles with one poller (a gateway process), moving simulated time after each."""
    done = []
    async with open_poller(config, now=simulator.clock.now, environ=SECRETS) as poller:
        scheduler = Scheduler(config, poller)
        for _ in range(count):
            at = simulator.clock.now()
            done.append((at, await scheduler.run_cycle()))
            simulator.clock.advance(STEP)
        # The poller's in-memory meter states are exactly what folding the stored streams gives.
        fresh = MeterRepository(poller.history.repository.store)
        for meter_id in simulator.meters:
            for year in (2025, 2026):
                assert await poller.history.repository.load(meter_id, year) == await fresh.load(meter_id, year)
    return done


@pytest.mark.slow
async def test_every_reading_is_stored_once_in_its_meter_year_stream(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    sim_config = SimulatorConfig(meters=fleet(7), framing=Framing.BOTH, start=START, speed=0.0)
    async with MeterSimulator(sim_config) as simulator:
        # Timeouts generous for a loaded 2-core box; the absent meter costs its deadline per cycle.
        text = fleet_toml(simulator, str(db), deadline_s=2.5, response_s=1.0, connect_s=0.5)
        config = parse_config(text, base_dir=tmp_path)
        # Two gateway "processes" one after the other: the second knows only what the store holds.
        cycles = await _cycles(simulator, config, 2) + await _cycles(simulator, config, CYCLES - 2)
        meters = dict(simulator.meters)
    times = [at for at, _ in cycles]
    last = times[-1]

    # The fleet never stalled: every simulated meter read in every cycle, the absent one failed each time.
    for _, summaries in cycles:
        by_meter = {s.meter_id: s for s in summaries}
        assert set(by_meter) == {*meters, ABSENT}
        for meter_id in meters:
            assert by_meter[meter_id].ok, by_meter[meter_id].describe_error()
        absent = by_meter[ABSENT]
        assert not absent.ok and absent.first_error is not None
        assert absent.first_error.kind == "MeterTimeout"

    recorded = await sqlite_events(db)
    assert len({e.event_id for e in recorded}) == len(recorded)
    decoded = [(e.stream_id, e.version, decode(e)) for e in recorded]
    assert not any(event.meter_id == ABSENT for _, _, event in decoded)
    types = Counter(type(event).__name__ for _, _, event in decoded)
    assert types["SuspectReadingFlagged"] == 0 and types["ReadingGapDetected"] == 0, types

    for meter_id, meter in meters.items():
        mine = [(stream, version, event) for stream, version, event in decoded if event.meter_id == meter_id]

        registered = [event for _, _, event in mine if isinstance(event, MeterRegistered)]
        assert len(registered) == 1 and registered[0].serial == meter.config.serial

        # Registers: one RegisterRead per register per cycle, with the meter's value and unit.
        reads = [(stream, event) for stream, _, event in mine if isinstance(event, RegisterRead)]
        assert sorted((e.obis, e.capture_time) for _, e in reads) == sorted(
            (obis, at) for obis in REGISTERS for at in times)
        for stream, event in reads:
            want = expected_register(meter, event.obis, event.capture_time)
            assert (event.value, event.unit) == (want.value, UNITS[want.unit])
            assert stream == f"Meter:{meter_id}:{event.capture_time.year}"

        # Load profile: every interval the meter held, once, in the stream of its end time's year.
        rows = [(stream, row) for stream, _, e in mine if isinstance(e, IntervalsRecorded) for row in e.rows]
        ends = [row.end_time for _, row in rows]
        assert len(ends) == len(set(ends))
        expected_rows = {
            r.clock.astimezone(timezone.utc): r
            for r in expected_profile_rows(meter, times[0] - timedelta(days=1), last, now=last)
        }
        assert set(ends) == set(expected_rows)
        scaler = meter.config.profile.energy_scaler
        for stream, row in rows:
            want = expected_rows[row.end_time]
            assert row.values["1.0.1.8.0.255"] == Decimal(want.energy_import).scaleb(scaler)
            assert row.values["1.0.2.8.0.255"] == Decimal(want.energy_export).scaleb(scaler)
            assert row.units["1.0.1.8.0.255"] == "Wh" and row.status == want.status
            assert stream == f"Meter:{meter_id}:{row.end_time.year}"
        assert {end.year for end in ends} == {2025, 2026}  # the cycles crossed the new year

        # The 2026 stream starts with the carry-over of 2025.
        first_2026 = [e for s, v, e in mine if s == f"Meter:{meter_id}:2026" and v == 1]
        assert len(first_2026) == 1 and isinstance(first_2026[0], YearStreamOpened)

        # Event log: every entry of the week before the first poll and since, once.
        logged = [e for _, _, e in mine if isinstance(e, MeterEventLogged)]
        want_log = expected_events(meter, times[0] - timedelta(days=7), last, now=last)
        assert sorted((e.event_time, e.code) for e in logged) == sorted(
            (r.clock.astimezone(timezone.utc), r.code) for r in want_log)

    health_store = await HealthStore.open(db)
    try:
        health = await health_store.all()
    finally:
        await health_store.aclose()
    assert health[ABSENT].consecutive_failures == CYCLES and "MeterTimeout" in (health[ABSENT].last_error or "")
    for meter_id in meters:
        assert health[meter_id].consecutive_failures == 0 and health[meter_id].last_success_at == last
