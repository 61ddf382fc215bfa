"""The gateway's commands as an operator runs them: real subprocesses, a real simulator, real files.

`gateway demo` on its own (no config edits, no network); `gateway run` against a simulated fleet,
stopped with SIGTERM; `gateway poll` and `gateway status` on the store it left.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import anyio
import pytest

from drivers.simulator import Framing, MeterSimulator, SimulatorConfig
from drivers.simulator.fleet import fleet
from gateway.config.logsetup import configure, register_secret

from tests.pipeline import ABSENT, SECRETS, fleet_toml

GATEWAY = [sys.executable, "-m", "gateway"]


def _env() -> dict[str, str]:
    return {**os.environ, **SECRETS, "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
def test_demo_runs_the_simulated_fleet_and_summarises(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    done = subprocess.run([*GATEWAY, "demo", "--cycles", "2", "--db", str(db)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "summary: 7 of 8 meters read in 2 cycles" in out
    for event_type in ("MeterRegistered", "RegisterRead", "IntervalsRecorded", "ClockChecked", "MeterEventLogged"):
        assert re.search(rf"^\s+{event_type}\s+[1-9]\d*$", out, re.M), event_type
    assert len(re.findall(r"^\s+Meter:sim-000\d:\d{4}\s+\d+ events$", out, re.M)) == 7
    assert re.search(r"^\s+absent-0007\s+2 failed polls, last: MeterTimeout", out, re.M)
    # The summary's totals are what the store holds.
    total = int(re.search(r"^\s+total\s+(\d+)$", out, re.M).group(1))  # type: ignore[union-attr]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == total
    assert "12345678" not in out + done.stderr  # the demo's LLS password never printed


@pytest.mark.slow
def test_demo_refuses_to_overwrite_a_given_store(tmp_path: Path) -> None:
    db = tmp_path / "taken.db"
    db.write_bytes(b"")
    done = subprocess.run([*GATEWAY, "demo", "--db", str(db)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "exists" in done.stderr


@pytest.mark.slow
@pytest.mark.anyio
async def test_run_stops_on_sigterm_after_flushing_then_status_and_poll_report(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    config_path = tmp_path / "fleet.toml"
    sim_config = SimulatorConfig(meters=fleet(4), framing=Framing.BOTH, speed=1.0)
    async with MeterSimulator(sim_config) as simulator:
        config_path.write_text(fleet_toml(simulator, str(db), interval_s=1.0, deadline_s=2.0,
                                                 response_s=1.0, connect_s=0.5))
        process = await anyio.open_process([*GATEWAY, "run", "--config", str(config_path), "--log-format", "json"],
                                           env=_env())
        try:
            assert process.stderr is not None
            log_lines: list[dict[str, object]] = []
            buffer = b""
            with anyio.fail_after(60):
                # Until every simulated meter has been polled and the absent one has failed at least once.
                polled: set[str] = set()
                absent_failed = False
                while not (polled >= set(simulator.meters) and absent_failed):
                    buffer += await process.stderr.receive()
                    *complete, buffer = buffer.split(b"\n")
                    for line in complete:
                        record = json.loads(line)
                        log_lines.append(record)
                        if match := re.match(r"meter (\S+): polled ", str(record["message"])):
                            polled.add(match.group(1))
                        absent_failed |= str(record["message"]).startswith(f"meter {ABSENT}: MeterTimeout")
                process.send_signal(signal.SIGTERM)
                async for chunk in process.stderr:
                    buffer += chunk
                log_lines += [json.loads(line) for line in buffer.split(b"\n") if line.strip()]
                returncode = await process.wait()
        finally:
            if process.returncode is None:  # a failed assertion or guard must not leave it polling
                process.kill()
                with anyio.CancelScope(shield=True):
                    await process.wait()

        assert returncode == 0
        messages = [str(line["message"]) for line in log_lines]
        assert any(m.startswith("SIGTERM: finishing the polls in flight") for m in messages)
        assert messages[-1] == "stopped: writer flushed, store closed"
        # Flushed: every event a poll reported as stored is in the store, nothing more.
        reported = sum(int(n) for m in messages for n in re.findall(r"stored (\d+) events", m))
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == reported > 0
        assert all(SECRETS[name] not in "\n".join(messages) for name in SECRETS)

        status = await anyio.run_process([*GATEWAY, "status", "--config", str(config_path)], check=False)
        assert status.returncode == 0
        table = status.stdout.decode()
        assert table.splitlines()[0].split()[:3] == ["METER", "LAST", "SUCCESS"]
        rows = {line.split()[0]: line for line in table.splitlines()[1:]}
        assert set(rows) == {*simulator.meters, ABSENT}
        assert "MeterTimeout" in rows[ABSENT] and rows[ABSENT].split()[1:2] == ["-"]
        for meter_id in simulator.meters:
            assert re.match(rf"{meter_id}\s+\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\s+-\s+0\s", rows[meter_id]), rows[meter_id]

        poll = await anyio.run_process([*GATEWAY, "poll", "--config", str(config_path), "--meter", "sim-0003"],
                                       env=_env(), check=False)
        report = poll.stdout.decode()
        assert poll.returncode == 0, poll.stderr.decode()
        assert "serial 57000003" in report
        assert re.search(r"register\s+1\.0\.1\.8\.0\.255\s+\d+ Wh", report)
        assert re.search(r"^stored: .*RegisterRead in Meter:sim-0003:\d{4}$", report, re.M)

        dead = await anyio.run_process([*GATEWAY, "poll", "--config", str(config_path), "--meter", ABSENT],
                                       env=_env(), check=False)
        assert dead.returncode == 1 and "MeterTimeout" in dead.stdout.decode()


def test_json_logs_are_one_object_per_line_and_never_carry_a_secret() -> None:
    stream = io.StringIO()
    handler = configure("INFO", "json", stream=stream)
    try:
        register_secret(b"s3cr3t-pw")
        register_secret(bytes.fromhex("00112233445566778899aabbccddeeff"))
        log = logging.getLogger("test.pipeline")
        log.info("meter %s answered with %s", "m1", "s3cr3t-pw", extra={"meter_id": "m1"})
        log.warning("key 00112233445566778899AABBCCDDEEFF rejected")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["level"] for line in lines] == ["INFO", "WARNING"]
    assert lines[0]["message"] == "meter m1 answered with <redacted>" and lines[0]["meter_id"] == "m1"
    assert "<redacted>" in lines[1]["message"] and "00112233" not in stream.getvalue()
    assert datetime.fromisoformat(lines[0]["time"]).tzinfo == timezone.utc
