"""`gateway run` as systemd and Prometheus see it: READY=1/WATCHDOG=1/STATUS= on a fake $NOTIFY_SOCKET,
/metrics and /healthz scraped from a running gateway against the simulator."""
from __future__ import annotations

import os
import signal
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from drivers.simulator import Framing, MeterSimulator, SimulatorConfig
from drivers.simulator.fleet import fleet
from gateway.config import parse_config
from gateway.domain.poll_result import PollSummary
from gateway.ops.metrics import RunMetrics

from tests.cli import REPO_ROOT
from tests.pipeline import SECRETS, fleet_toml


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _get(port: int, path: str) -> tuple[int, str]:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        try:
            while True:
                data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def _polls(text: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(text) if f.name == "gateway_polls"
               for s in f.samples if s.name == "gateway_polls_total")


@pytest.mark.slow
@pytest.mark.anyio
async def test_run_notifies_systemd_and_serves_metrics(tmp_path: Path) -> None:
    port = _free_port()
    notify_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.setblocking(False)
    config_path = tmp_path / "fleet.toml"
    async with MeterSimulator(SimulatorConfig(meters=fleet(2), framing=Framing.BOTH, speed=1.0)) as simulator:
        config_path.write_text(fleet_toml(simulator, str(tmp_path / "events.db"), absent=False, interval_s=1.0,
                                          deadline_s=2.0, response_s=1.0, connect_s=0.5)
                               + f'\n[metrics]\nenabled = true\naddress = "127.0.0.1"\nport = {port}\n')
        env = {**os.environ, **SECRETS, "PYTHONPATH": str(REPO_ROOT), "NOTIFY_SOCKET": str(notify_path),
               "WATCHDOG_USEC": "2000000"}
        process = await anyio.open_process([sys.executable, "-m", "gateway", "run", "--config", str(config_path)],
                                           env=env)
        try:
            messages: list[str] = []
            with anyio.fail_after(60):
                while not any("WATCHDOG=1" in m for m in messages):
                    await anyio.wait_readable(listener)
                    messages.append(listener.recv(4096).decode())
                assert "READY=1" in messages[0]
                assert any(m.startswith("WATCHDOG=1") or "\nSTATUS=" in m or m.startswith("STATUS=")
                           for m in messages)
                assert any("meters ok" in m for m in messages)
                status, first = await _get(port, "/metrics")
                assert status == 200
                before = _polls(first)
                while _polls((await _get(port, "/metrics"))[1]) <= before:
                    await anyio.sleep(0.2)
                status, body = await _get(port, "/healthz")
                assert status == 200, body
                scraped = list(text_string_to_metric_families((await _get(port, "/metrics"))[1]))
                families = {f.name for f in scraped}
                samples = {s.name: s.value for f in scraped for s in f.samples}
                assert samples["gateway_writer_flushes"] > 0 and samples["gateway_store_file_bytes"] > 0
                assert samples["gateway_last_store_success_timestamp_seconds"] > 0
                assert {"gateway_poll_duration_seconds", "gateway_meters_in_backoff",
                        "gateway_store_file_bytes", "gateway_meter_clock_drift_seconds",
                        "gateway_meter_intervals_missing", "gateway_writer_append_latency_seconds"} <= families
        finally:
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(30):
                await process.wait()
            listener.close()
    assert process.returncode == 0


def test_healthz_is_503_when_storing_fails_or_goes_stale(tmp_path: Path) -> None:
    text = (f'gateway_id = "g"\ndefault_timezone = "UTC"\n[store]\nkind = "sqlite"\npath = "{tmp_path}/e.db"\n'
            "[schedules.registers]\ninterval_s = 10\njitter_s = 1\n[metrics]\nstale_intervals = 2\n"
            '[[concentrators]]\nid = "c"\nhost = "127.0.0.1"\nport = 4059\nframing = "wrapper"\n'
            '[[meters]]\nid = "m1"\nmake = "kamstrup"\nprofile = "omnipower"\nconnection = "c"\nwport = 1\n'
            'client_address = 1\nsecurity = { level = "none" }\nmax_power_w = 69000\n')
    now = [0.0]
    metrics = RunMetrics(parse_config(text, base_dir=tmp_path), clock=lambda: now[0])
    started = datetime.now(timezone.utc)
    assert metrics.health()[0]
    metrics.on_poll(PollSummary("m1", started, frozenset(), (), store_error="disk full"))
    assert metrics.health() == (False, "store failing: disk full")
    metrics.on_poll(PollSummary("m1", started, frozenset(), (), stored={"RegisterRead": 3}))
    assert metrics.health()[0]
    now[0] = 1000.0
    assert not metrics.health()[0]


@pytest.mark.slow
@pytest.mark.anyio
async def test_healthz_turns_503_when_nothing_is_stored_for_n_intervals(tmp_path: Path) -> None:
    port = _free_port()
    config_path = tmp_path / "fleet.toml"
    env = {**os.environ, **SECRETS, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("NOTIFY_SOCKET", None)
    async with MeterSimulator(SimulatorConfig(meters=fleet(2), framing=Framing.BOTH, speed=1.0)) as simulator:
        config_path.write_text(fleet_toml(simulator, str(tmp_path / "events.db"), absent=False, interval_s=1.0,
                                          deadline_s=1.0, response_s=0.3, connect_s=0.3)
                               + f'\n[metrics]\nenabled = true\nport = {port}\nstale_intervals = 2\n')
        process = await anyio.open_process([sys.executable, "-m", "gateway", "run", "--config", str(config_path)],
                                           env=env)
        try:
            with anyio.fail_after(30):
                while True:  # up, and storing what the meters answer
                    try:
                        status, body = await _get(port, "/healthz")
                    except OSError:
                        await anyio.sleep(0.1)
                        continue
                    if status == 200 and _polls((await _get(port, "/metrics"))[1]) > 0:
                        break
                    await anyio.sleep(0.1)
        except BaseException:
            process.send_signal(signal.SIGTERM)
            raise
    try:
        # The meters are gone: polls fail, nothing is stored, and after 2 intervals /healthz says so.
        with anyio.fail_after(30):
            while (await _get(port, "/healthz"))[0] == 200:
                await anyio.sleep(0.2)
        status, body = await _get(port, "/healthz")
        assert status == 503 and "nothing stored" in body
    finally:
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            await process.wait()
    assert process.returncode == 0
