"""A meter that lost its last load-profile rows of the old year (a power cut over New Year's Eve) while
its new year's stream already exists keeps storing (issue 11: it used to fail every poll for good).

The real poller against the simulator: profile stored up to 22:00 UTC on 31 December, registers read
after midnight (the 2026 stream opens), then a load-profile poll whose rows all lie in 2026. The gap
starts in 2025, a year the poll did not touch: the states of both years are needed.
"""
from __future__ import annotations

from contextlib import AsyncExitStack
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from drivers.simulator import Framing, MeterFaults, MeterSimulator, SimulatorConfig
from drivers.simulator.fleet import fleet
from gateway.config import parse_config
from gateway.wiring import open_poller

from . import SECRETS, fleet_toml

pytestmark = pytest.mark.anyio

METER = "sim-0000"
BEFORE = datetime(2025, 12, 31, 22, 0, tzinfo=timezone.utc)
LOST = (BEFORE + timedelta(seconds=1), datetime(2026, 1, 1, 0, 30, tzinfo=timezone.utc))


@pytest.mark.parametrize("restart", [False, True], ids=["same-process", "restarted"])
async def test_a_new_year_gap_is_recorded_and_the_meter_goes_on_storing(tmp_path: Path, restart: bool) -> None:
    sim_config = SimulatorConfig(meters=fleet(2), framing=Framing.BOTH, start=BEFORE, speed=0.0)
    async with MeterSimulator(sim_config) as simulator:
        config = parse_config(fleet_toml(simulator, str(tmp_path / "e.db"), absent=False), base_dir=tmp_path)
        clock = simulator.clock
        async with AsyncExitStack() as stack:
            poller = await stack.enter_async_context(open_poller(config, now=clock.now, environ=SECRETS))
            first = await poller.poll(METER, {"identity", "registers", "load_profile"})
            assert first.ok and first.rows_read > 0, first.describe_error()
            simulator.set_faults(METER, MeterFaults(lost_profile=LOST))
            clock.set(datetime(2026, 1, 1, 0, 20, tzinfo=timezone.utc))
            opened = await poller.poll(METER, {"registers"})
            assert opened.ok and opened.streams == (f"Meter:{METER}:2026",)
            if restart:  # the states then come from the store, not from the poller's cache
                await stack.aclose()
                poller = await stack.enter_async_context(open_poller(config, now=clock.now, environ=SECRETS))
            clock.set(datetime(2026, 1, 1, 1, 0, tzinfo=timezone.utc))
            across = await poller.poll(METER, {"load_profile"})
            clock.set(datetime(2026, 1, 1, 1, 15, tzinfo=timezone.utc))
            after = await poller.poll(METER, {"load_profile"})

    assert across.ok, across.describe_error()
    assert across.stored.get("ReadingGapDetected") == 1 and across.stored.get("IntervalsRecorded")
    assert across.rows_read == 3  # 00:30, 00:45, 01:00; 22:15 .. 00:15 are gone from the meter
    assert after.ok and after.rows_read == 1 and after.stored.get("IntervalsRecorded") == 1
