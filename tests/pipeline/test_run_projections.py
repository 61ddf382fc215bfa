"""The views kept up to date inside `gateway run` (`[projections] enabled = true`).

``run_projections`` is driven directly against a real simulator and SQLite store (it follows the
store until cancelled, does nothing when disabled, and survives a view store that cannot be opened),
and `gateway run` is run as an operator would, with `gateway views show` reading what it projected.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest

from drivers.simulator import Framing, MeterSimulator, SimulatorConfig, expected_register
from drivers.simulator.fleet import fleet
from gateway.config import parse_config
from gateway.domain.events import RegisterRead
from gateway.domain.mapper import decode
from gateway.wiring import open_poller
from gateway.projections import DAILY_CONSUMPTION, FLEET_OVERVIEW, LATEST_READING, SqliteViewStore, views_path
from gateway.projections.runner_lock import projection_runner, runner_lock_path
from gateway.projections.run_projections import run_projections
from gateway.polling.scheduler import Scheduler
from gateway.store.sqlite import SqliteEventStore

from . import SECRETS, fleet_toml

pytestmark = pytest.mark.anyio

GATEWAY = [sys.executable, "-m", "gateway"]
START = datetime(2026, 3, 10, 11, 50, tzinfo=timezone.utc)
ENERGY = "1.0.1.8.0.255"
PROJECTIONS_ON = "\n[projections]\nenabled = true\ninterval_s = 0.1\nbatch_size = 200\n"


async def _latest(db: Path) -> dict[str, dict[str, Any]]:
    """The latest_reading view by meter; empty while the views file does not exist yet."""
    path = views_path(db)
    if not path.is_file():
        return {}
    views = await SqliteViewStore.open(path)
    try:
        return {doc.key: dict(doc.body) for doc in await views.query(LATEST_READING, None)}
    finally:
        await views.aclose()


async def _until_latest(db: Path, meters: set[str], capture: datetime) -> dict[str, dict[str, Any]]:
    """Wait until every meter's latest energy register in the view was captured at ``capture``."""
    want = capture.isoformat().replace("+00:00", "Z")
    with anyio.fail_after(30):
        while True:
            latest = await _latest(db)
            if set(latest) >= meters and all(
                    ENERGY in latest[m]["registers"] and latest[m]["registers"][ENERGY]["captureTime"] in
                    (want, capture.isoformat()) for m in meters):
                return latest
            await anyio.sleep(0.05)


def _all_have_registers(latest: dict[str, dict[str, Any]], meters: set[str]) -> bool:
    return set(latest) >= meters and all(latest[m]["registers"] for m in meters)


async def test_run_projections_follows_the_store_until_cancelled(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    sim_config = SimulatorConfig(meters=fleet(3), framing=Framing.BOTH, start=START, speed=0.0)
    async with MeterSimulator(sim_config) as simulator:
        config = parse_config(fleet_toml(simulator, str(db), absent=False) + PROJECTIONS_ON, base_dir=tmp_path)
        meters = set(simulator.meters)
        async with open_poller(config, now=simulator.clock.now, environ=SECRETS) as poller:
            scheduler = Scheduler(config, poller)
            assert all(s.ok for s in await scheduler.run_cycle())
            async with anyio.create_task_group() as tg:
                tg.start_soon(run_projections, config)
                first = await _until_latest(db, meters, START)
                # Still following: the next cycle's readings reach the views without a restart.
                simulator.clock.advance(timedelta(minutes=15))
                assert all(s.ok for s in await scheduler.run_cycle())
                second = await _until_latest(db, meters, START + timedelta(minutes=15))
                tg.cancel_scope.cancel()
        for meter_id in meters:
            meter = simulator.meters[meter_id]
            assert first[meter_id]["identity"]["serial"] == meter.config.serial
            for at, doc in ((START, first[meter_id]), (START + timedelta(minutes=15), second[meter_id])):
                assert Decimal(doc["registers"][ENERGY]["value"]) == expected_register(meter, ENERGY, at).value
                assert doc["registers"][ENERGY]["unit"] == "Wh"

    views = await SqliteViewStore.open(views_path(db))
    try:
        assert {doc.partition for doc in await views.query(DAILY_CONSUMPTION, None)} == meters
        assert {doc.key for doc in await views.query(FLEET_OVERVIEW, None)} >= meters
    finally:
        await views.aclose()


async def test_run_projections_does_nothing_when_disabled(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    async with MeterSimulator(SimulatorConfig(meters=fleet(2), speed=0.0, start=START)) as simulator:
        config = parse_config(fleet_toml(simulator, str(db), absent=False), base_dir=tmp_path)
    assert not config.projections.enabled
    with anyio.fail_after(5):
        await run_projections(config)  # returns at once instead of following the store
    assert not views_path(db).exists() and not db.exists()


async def test_run_projections_retries_a_view_store_that_cannot_be_opened(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "events.db"
    views_path(db).mkdir()  # a directory where the views file belongs: SQLite cannot open it
    sim_config = SimulatorConfig(meters=fleet(2), framing=Framing.BOTH, start=START, speed=0.0)
    async with MeterSimulator(sim_config) as simulator:
        config = parse_config(fleet_toml(simulator, str(db), absent=False) + PROJECTIONS_ON, base_dir=tmp_path)
        async with open_poller(config, now=simulator.clock.now, environ=SECRETS) as poller:
            assert all(s.ok for s in await Scheduler(config, poller).run_cycle())
        caplog.set_level(logging.ERROR, logger="gateway.run.projections")
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: run_projections(config, retry_initial_s=0.05, retry_max_s=0.1))
            with anyio.fail_after(30):  # generous: the suite runs on 2 shared cores
                while not any("projections stopped" in r.getMessage() for r in caplog.records):
                    await anyio.sleep(0.02)
            views_path(db).rmdir()  # the operator fixes it; the gateway never stopped polling
            await _until_latest(db, set(simulator.meters), START)
            tg.cancel_scope.cancel()
    stopped = [r.getMessage() for r in caplog.records if "projections stopped" in r.getMessage()]
    assert stopped and all("view store" in message for message in stopped), [r.getMessage() for r in caplog.records]


async def test_run_projections_waits_quietly_while_another_runner_holds_the_views(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "events.db"
    sim_config = SimulatorConfig(meters=fleet(2), framing=Framing.BOTH, start=START, speed=0.0)
    async with MeterSimulator(sim_config) as simulator:
        config = parse_config(fleet_toml(simulator, str(db), absent=False) + PROJECTIONS_ON, base_dir=tmp_path)
        async with open_poller(config, now=simulator.clock.now, environ=SECRETS) as poller:
            assert all(s.ok for s in await Scheduler(config, poller).run_cycle())
        caplog.set_level(logging.INFO, logger="gateway.run.projections")
        async with anyio.create_task_group() as tg:
            with projection_runner(runner_lock_path(config.store)):  # `gateway project` is running
                tg.start_soon(lambda: run_projections(config, retry_initial_s=0.01, retry_max_s=0.02))
                with anyio.fail_after(30):  # against a hang only
                    while sum("projections paused" in r.getMessage() for r in caplog.records) < 1:
                        await anyio.sleep(0.02)
                    await anyio.sleep(0.3)  # many more retries
            await _until_latest(db, set(simulator.meters), START)  # the runner left: the gateway takes over
            tg.cancel_scope.cancel()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("projections paused" in m for m in messages) == 1, messages
    assert not any("projections stopped" in m for m in messages), messages


@pytest.mark.slow
async def test_gateway_run_with_projections_enabled_fills_the_views(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    config_path = tmp_path / "fleet.toml"
    log_path = tmp_path / "run.log"
    sim_config = SimulatorConfig(meters=fleet(3), framing=Framing.BOTH, speed=1.0)
    async with MeterSimulator(sim_config) as simulator:
        config_path.write_text(fleet_toml(simulator, str(db), absent=False, interval_s=1.0, deadline_s=3.0,
                                          response_s=1.0, connect_s=0.5) + PROJECTIONS_ON)
        env = {**os.environ, **SECRETS, "PYTHONUNBUFFERED": "1"}
        with log_path.open("wb") as log_file:
            process = await anyio.open_process([*GATEWAY, "run", "--config", str(config_path)], env=env,
                                               stdout=log_file, stderr=log_file)
            try:
                with anyio.move_on_after(30) as waited:
                    while not _all_have_registers(await _latest(db), set(simulator.meters)):
                        assert process.returncode is None, log_path.read_text()
                        await anyio.sleep(0.1)
                assert not waited.cancelled_caught, f"no views after 30 s of gateway run:\n{log_path.read_text()}"
            finally:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                with anyio.move_on_after(30, shield=True) as stopping:
                    returncode = await process.wait()
                if stopping.cancelled_caught:
                    process.kill()
                    pytest.fail(f"gateway run did not stop on SIGTERM:\n{log_path.read_text()}")
        log_text = log_path.read_text()
        assert returncode == 0, log_text
        assert "projecting latest_reading, daily_consumption, fleet_overview" in log_text

        shown = await anyio.run_process([*GATEWAY, "views", "show", LATEST_READING, "--json", "--config",
                                         str(config_path)], check=False)
        assert shown.returncode == 0, shown.stderr.decode()
        docs = {doc["meterId"]: doc for doc in json.loads(shown.stdout)}
        assert set(docs) == set(simulator.meters)

    # What the views show is what the store holds: each register as a stored RegisterRead.
    store = await SqliteEventStore.open(db)
    try:
        page = await store.read_all(None, limit=100_000)
    finally:
        await store.aclose()
    stored = {(e.meter_id, e.obis, e.capture_time, e.value) for e in map(decode, page.events)
              if isinstance(e, RegisterRead)}
    for meter_id, doc in docs.items():
        assert doc["identity"]["serial"] == simulator.meters[meter_id].config.serial
        assert doc["registers"], meter_id
        for obis, register in doc["registers"].items():
            capture = datetime.fromisoformat(register["captureTime"].replace("Z", "+00:00"))
            assert (meter_id, obis, capture, Decimal(register["value"])) in stored
