"""A meter answering the fuzz campaign's freezing GET-with-list reply (issue 10) fails that step alone,
within its deadline, and the rest of the fleet is polled as usual, cycle after cycle.

Real poller and scheduler against the simulator; the bad meter is an L+G E450 on the HDLC bus (its
registers are read with GET-with-list, and its answer to the list holding the import energy register is
replaced by the malformed one), its neighbour a Kamstrup on its own wrapper port.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from drivers.simulator import Framing, MeterFaults, MeterSimulator, SimulatorConfig
from drivers.simulator.fleet import fleet
from gateway.config import parse_config
from gateway.polling.scheduler import Scheduler
from gateway.wiring import open_poller

from . import SECRETS, fleet_toml
from ..drivers.test_malformed_answers import hang_guard

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 2, 3, 10, 0, tzinfo=timezone.utc)
BAD, GOOD = "sim-0001", "sim-0000"


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (bytes.fromhex("01000184FFFFFFFF"), "UnreadableAnswer"),  # 2^32-1 array elements announced, none sent
        (bytes.fromhex("010000"), "UnreadableAnswer"),  # one null-data result for four registers
    ],
    ids=["endless-array", "null-item"],
)
async def test_a_malformed_list_answer_fails_its_step_alone_and_the_fleet_goes_on(
    tmp_path: Path, answer: bytes, error: str
) -> None:
    sim_config = SimulatorConfig(meters=fleet(2), framing=Framing.BOTH, start=NOW, speed=0.0)
    deadline_s = 5.0
    async with MeterSimulator(sim_config) as simulator:
        simulator.set_faults(BAD, MeterFaults(list_answer=answer, list_answer_obis={"1.0.1.8.0.255"}))
        text = fleet_toml(simulator, str(tmp_path / "e.db"), absent=False, deadline_s=deadline_s)
        config = parse_config(text, base_dir=tmp_path)
        with hang_guard(30):
            async with open_poller(config, now=simulator.clock.now, environ=SECRETS) as poller:
                scheduler = Scheduler(config, poller)
                cycles = [{s.meter_id: s for s in await scheduler.run_cycle()} for _ in range(2)]

    for summaries in cycles:
        good, bad = summaries[GOOD], summaries[BAD]
        assert good.ok, good.describe_error()
        # The registers and the load profile (it reads the scalers of its columns) ask for the register.
        assert bad.failed_steps == {"registers", "load_profile"}, bad.errors
        assert {e.kind for e in bad.errors} == {error}
        assert bad.duration_s < deadline_s
    first = cycles[0][BAD]
    # What the other steps read is stored: first contact, clock, event log.
    assert {"MeterRegistered", "ClockChecked", "MeterEventLogged"} <= set(first.stored), first.stored
    assert first.log_entries_read > 0 and first.registers_read == 0 and first.rows_read == 0
