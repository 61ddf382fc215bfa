"""`gateway poll` beside `gateway run`: a poller notices that another process polled one of its meters,
also when that poll was recorded while its own poll of the meter was running, and does not trust its
cached state of the meter afterwards. Real simulator, real SQLite store and health table; the other
process is a second connection to the same health table."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from drivers.simulator import Framing, MeterSimulator, SimulatorConfig
from drivers.simulator.fleet import fleet
from gateway.config import parse_config
from gateway.polling.health import HealthStore, PollOutcome
from gateway.history.meter_history import CachedHistory
from gateway.domain.poll_result import STEP_ORDER
from gateway.wiring import open_poller

from . import SECRETS, fleet_toml

pytestmark = pytest.mark.anyio

START = datetime(2026, 6, 10, 8, 0, tzinfo=timezone.utc)
NOTICED = "polled by another process since our last poll; reloading its state"
GUARD_S = 60.0  # against a hang, not a performance assertion


@pytest.mark.slow
async def test_a_poll_recorded_by_another_process_during_ours_is_noticed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "events.db"
    # Slow replies keep our poll running while the other process records its own.
    sim_config = SimulatorConfig(meters=fleet(2, latency_ms=150), framing=Framing.BOTH, start=START, speed=0.0)
    async with MeterSimulator(sim_config) as simulator:
        config = parse_config(fleet_toml(simulator, str(db), absent=False, deadline_s=20, response_s=5),
                              base_dir=tmp_path)
        meter = sorted(simulator.meters)[0]
        with anyio.fail_after(GUARD_S):
            async with open_poller(config, now=simulator.clock.now, environ=SECRETS) as poller:
                assert isinstance(poller.history, CachedHistory)
                assert (await poller.poll(meter, STEP_ORDER)).ok
                assert poller.history.repository.is_cached(meter, START.year)
                other = await HealthStore.open(poller.health.path)
                try:
                    with caplog.at_level(logging.INFO, logger="gateway.history.meter_history"):
                        async with anyio.create_task_group() as tg:
                            tg.start_soon(poller.poll, meter, STEP_ORDER)
                            await wait_all_tasks_blocked()  # ours is waiting for the meter's reply
                            elsewhere = simulator.clock.now() + timedelta(seconds=1)  # its own clock reading
                            await other.record(PollOutcome(meter_id=meter, at=elsewhere, ok=True))
                finally:
                    await other.aclose()
                noticed = [r.getMessage() for r in caplog.records if NOTICED in r.getMessage()]
                assert noticed == [f"meter {meter}: {NOTICED}"]
                # Its cached state is gone: the next poll loads the meter's state from the store.
                assert not poller.history.repository.is_cached(meter, START.year)
                caplog.clear()
                with caplog.at_level(logging.INFO, logger="gateway.history.meter_history"):
                    assert (await poller.poll(meter, STEP_ORDER)).ok
                assert not [r for r in caplog.records if NOTICED in r.getMessage()]
