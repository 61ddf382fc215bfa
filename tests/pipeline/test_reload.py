"""`gateway run` reloads its config file on SIGHUP: a real subprocess polling a real simulator.

A meter added to the file is polled after the reload; a broken file, or one that moves the store, is
refused with an ERROR line while the gateway polls on with the config it runs; SIGTERM still stops it
cleanly afterwards.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sys
from collections import Counter
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process

from drivers.simulator import Framing, MeterSimulator, SimulatorConfig
from drivers.simulator.fleet import fleet

from . import SECRETS, fleet_toml

pytestmark = pytest.mark.anyio

GATEWAY = [sys.executable, "-m", "gateway"]
GUARD_S = 90.0  # against a hang, not a performance assertion
POLLED = re.compile(r"meter (\S+): polled ")


def _without_meter(text: str, meter_id: str) -> str:
    head, *blocks = text.split("[[meters]]\n")
    return head + "".join(f"[[meters]]\n{b}" for b in blocks if f'id = "{meter_id}"' not in b)


class Log:
    """The JSON log lines of the running gateway, read as they come."""

    def __init__(self, process: Process) -> None:
        assert process.stderr is not None
        self.stream = process.stderr
        self.messages: list[str] = []
        self.polls: Counter[str] = Counter()
        self._buffer = b""

    async def until(self, done: object) -> None:
        assert callable(done)
        while not done():
            self._buffer += await self.stream.receive()
            *complete, self._buffer = self._buffer.split(b"\n")
            for raw in complete:
                message = str(json.loads(raw)["message"])
                self.messages.append(message)
                if match := POLLED.match(message):
                    self.polls[match.group(1)] += 1

    def seen(self, prefix: str) -> bool:
        return any(m.startswith(prefix) for m in self.messages)


@pytest.mark.slow
async def test_sighup_reloads_the_fleet_and_refuses_a_bad_config(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    config_path = tmp_path / "fleet.toml"
    sim_config = SimulatorConfig(meters=fleet(4), framing=Framing.BOTH, speed=1.0)
    async with MeterSimulator(sim_config) as simulator:
        full = fleet_toml(simulator, str(db), absent=False, interval_s=1.0, deadline_s=2.0, response_s=1.0,
                          connect_s=0.5)
        added = "sim-0003"  # on the bus, which sim-0001 keeps in use
        config_path.write_text(_without_meter(full, added))
        process = await anyio.open_process([*GATEWAY, "run", "--config", str(config_path), "--log-format", "json"],
                                           env={**os.environ, **SECRETS, "PYTHONUNBUFFERED": "1"})
        log = Log(process)
        try:
            with anyio.fail_after(GUARD_S):
                others = sorted(set(simulator.meters) - {added})
                await log.until(lambda: all(log.polls[m] >= 2 for m in others))
                assert log.polls[added] == 0

                config_path.write_text(full)
                process.send_signal(signal.SIGHUP)
                await log.until(lambda: log.polls[added] >= 2)
                assert log.seen("SIGHUP: reloading ") and log.seen("config reloaded: polling 4 meters")
                assert any(f"added: {added}" in m for m in log.messages)

                config_path.write_text(full.replace('max_power_w = 69000', 'max_power_w = "lots"', 1))
                process.send_signal(signal.SIGHUP)
                await log.until(lambda: log.seen("SIGHUP: config "))
                refused = [m for m in log.messages if m.startswith("SIGHUP: config ")]
                assert "not reloaded, going on with the running one: the config is not valid" in refused[-1]
                assert "max_power_w" in refused[-1]

                config_path.write_text(full.replace(str(db), str(tmp_path / "elsewhere.db")))
                process.send_signal(signal.SIGHUP)
                await log.until(lambda: len([m for m in log.messages if m.startswith("SIGHUP: config ")]) == 2)
                assert log.messages[-1].endswith("store changed: that needs a restart")
                # Polling went on under the running config: every meter, the added one included.
                before = dict(log.polls)
                await log.until(lambda: all(log.polls[m] > before[m] for m in simulator.meters))

                process.send_signal(signal.SIGTERM)
                await log.until(lambda: log.seen("stopped: "))
                returncode = await process.wait()
        finally:
            if process.returncode is None:  # a failed assertion or guard must not leave it polling
                process.kill()
                with anyio.CancelScope(shield=True):
                    await process.wait()
    assert returncode == 0
    assert log.messages[-1] == "stopped: writer flushed, store closed"
    assert not (tmp_path / "elsewhere.db").exists()


@pytest.mark.slow
async def test_a_fleet_with_nothing_to_poll_waits_for_a_reload(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    config_path = tmp_path / "fleet.toml"
    sim_config = SimulatorConfig(meters=fleet(2), framing=Framing.BOTH, speed=1.0)
    async with MeterSimulator(sim_config) as simulator:
        full = fleet_toml(simulator, str(db), absent=False, interval_s=1.0, deadline_s=2.0, response_s=1.0,
                          connect_s=0.5)
        config_path.write_text(full.replace("jitter_s = 0.5", "jitter_s = 0.5\nenabled = false"))
        process = await anyio.open_process([*GATEWAY, "run", "--config", str(config_path), "--log-format", "json"],
                                           env={**os.environ, **SECRETS, "PYTHONUNBUFFERED": "1"})
        log = Log(process)
        try:
            with anyio.fail_after(GUARD_S):
                await log.until(lambda: log.seen("no schedule is enabled"))
                assert process.returncode is None and not log.polls  # waiting, not gone
                config_path.write_text(full)
                process.send_signal(signal.SIGHUP)
                await log.until(lambda: all(log.polls[m] >= 1 for m in simulator.meters))
                process.send_signal(signal.SIGTERM)
                await log.until(lambda: log.seen("stopped: "))
                returncode = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                with anyio.CancelScope(shield=True):
                    await process.wait()
    assert returncode == 0
