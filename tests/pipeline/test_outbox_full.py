"""A full outbox, as the operator sees it: one ERROR when it fills (not one per refused poll), the
refusals counted, and `gateway status` (its own process, beside the polling one) saying FULL.

Real simulator, the local Cosmos DB-compatible test server as the far store (the forwarder does not
run: an outage as far as the outbox can tell), a real outbox file filled close to its bound first.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import anyio
import pytest

from drivers.simulator import Framing, MeterSimulator, SimulatorConfig
from drivers.simulator.fleet import fleet
from gateway.config import load_config
from gateway.history.outbox import Outbox
from gateway.domain.poll_result import STEP_ORDER
from gateway.store.cosmos import CosmosEventStore
from gateway.wiring import ForwarderSettings, open_poller
from tests.cosmos_fixture import EMULATOR_KEY, KEY_ENV, CosmosServer, cosmos_server  # noqa: F401 (fixture)
from tests.builders import reading

from . import SECRETS, cosmos_store, fleet_toml

pytestmark = [pytest.mark.anyio, pytest.mark.cosmos]

START = datetime(2026, 6, 10, 8, 0, tzinfo=timezone.utc)
BOUND = 1024 * 1024  # outbox_max_mb = 1
POLLS_PER_METER = 3
GUARD_S = 60.0  # against a hang, not a performance assertion


async def _fill_close_to_the_bound(path: Path) -> None:
    """Pending filler events up to a few hundred bytes short of the bound, without a refusal."""
    async with await Outbox.open(path, BOUND) as outbox:
        await outbox.put("Filler:0", [reading("f-base")])
        base = (await outbox.state()).bytes  # one event without padding
        n = 0
        while (pad := min(50_000, BOUND - (await outbox.state()).bytes - base - 64)) > 0:
            await outbox.put("Filler:0", [reading(f"f-{n:05d}", pad=pad)])
            n += 1
        state = await outbox.state()
        assert not state.full and BOUND - state.bytes < 1_000


@pytest.mark.slow
async def test_refused_polls_raise_one_error_and_status_says_full(
    cosmos_server: CosmosServer, tmp_path: Path, caplog: pytest.LogCaptureFixture,  # noqa: F811
) -> None:
    os.environ.setdefault(KEY_ENV, EMULATOR_KEY)
    cosmos = cosmos_server.config()
    async with await CosmosEventStore.open(cosmos, create_if_missing=True):
        pass
    outbox_path = tmp_path / "outbox.sqlite3"
    await _fill_close_to_the_bound(outbox_path)
    sim_config = SimulatorConfig(meters=fleet(2), framing=Framing.BOTH, start=START, speed=0.0)
    async with MeterSimulator(sim_config) as simulator:
        store = cosmos_store(cosmos.endpoint, cosmos.database, cosmos.container, KEY_ENV, str(outbox_path))
        config_path = tmp_path / "fleet.toml"
        config_path.write_text(fleet_toml(simulator, "unused", absent=False, deadline_s=10, response_s=2,
                                          store=store.replace("outbox_max_mb = 64", "outbox_max_mb = 1")))
        config = load_config(config_path)
        meters = sorted(simulator.meters)
        caplog.set_level(logging.DEBUG)
        with anyio.fail_after(GUARD_S):
            async with open_poller(config, now=simulator.clock.now, environ=SECRETS,
                                   forwarding=ForwarderSettings(run=False)) as poller:
                for _ in range(POLLS_PER_METER):
                    for meter_id in meters:
                        summary = await poller.poll(meter_id, STEP_ORDER)
                        # The poll and its health row still say why nothing was stored.
                        assert summary.store_error is not None and summary.store_error.startswith("OutboxFull"), (
                            summary.describe_error())
                errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
                assert len(errors) == 1 and "is FULL" in errors[0], errors

                # `gateway status` beside the polling process: a fresh process, no alarm memory.
                environ = {**os.environ, **SECRETS}
                shown = await anyio.run_process(
                    [sys.executable, "-m", "gateway", "status", "--config", str(config_path), "--json"],
                    env=environ, check=False)
                assert shown.returncode == 0, shown.stderr.decode()
                rows = json.loads(shown.stdout)
                assert {r["meter_id"]: (r["outbox_full"], r["outbox_refused_puts"]) for r in rows} == {
                    m: (True, POLLS_PER_METER * len(meters)) for m in meters}
                assert all(r["last_error"].startswith("store: OutboxFull") for r in rows), rows
                table = await anyio.run_process(
                    [sys.executable, "-m", "gateway", "status", "--config", str(config_path)],
                    env=environ, check=False)
                summary_line = table.stdout.decode().splitlines()[-1]
                assert summary_line.startswith("outbox: ") and "FULL since" in summary_line, summary_line
                assert f"{POLLS_PER_METER * len(meters)} puts refused in all" in summary_line
