"""`gateway bench fleet`: how fast the gateway polls a simulated fleet, against a blocking baseline.

The simulator (`gateway simulate`, a separate process, so the figures are the gateway's own) serves
N meters over the DLMS wrapper, each on its own port, with L ms of latency on every reply. The
gateway process runs one warm-up cycle (first contact: identity, scalers cached, streams created)
and then one measured cycle of steady-state polls: registers and clock, one association per meter,
normalised and stored in a fresh SQLite store, under the scheduler's limits (``--concurrency``
sessions at once). Reported:

* ``meters_per_s``: meters polled per second of the measured cycle (wall clock);
* ``cpu_s_per_poll``: CPU seconds of the gateway process (all threads) per poll;
* ``p99_poll_s``: 99th percentile of one poll's duration (session + storing);
* ``peak_rss_mb``: peak resident memory of the gateway process;
* ``baseline_meters_per_s``: dlms-cosem's blocking ``DlmsClient`` reading the same objects from the
  first ``--baseline-meters`` meters in a sequential loop, in the same run (the way a simple poller
  built on the library works), and ``ratio`` = meters_per_s / baseline_meters_per_s.

The goal on the 2-core edge box is 10,000 meters in a 15-minute cycle at 50 ms latency, i.e.
``GOAL_METERS_PER_S`` (11.1/s); ``goal_ratio`` says how far the figure is from it.

The baseline imports dlms-cosem directly: it *is* the library measured as a baseline, so it cannot
go through our own session layer (see the licence note in the README).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from gateway.config import parse_config
from gateway.config.logsetup import configure
from gateway.domain.poll_result import PollStep
from gateway.wiring import open_poller
from gateway.polling.scheduler import Scheduler
from gateway.commands._args import non_negative, positive

GOAL_METERS_PER_S = 10_000 / (15 * 60)
STEADY_STEPS: frozenset[PollStep] = frozenset({"registers", "clock"})
_REGISTERS = ("1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.1.7.0.255", "1.0.32.7.0.255")
_MAKES = {"OMNIPOWER": ("kamstrup", "omnipower"), "E450": ("landis_gyr", "e450"), "E360": ("landis_gyr", "e360")}


@dataclass(frozen=True, slots=True)
class FleetBenchConfig:
    meters: int = 100
    latency_ms: int = 50
    concurrency: int = 200  # sessions at once (limits.max_concurrent_polls)
    baseline_meters: int = 20  # meters the sequential baseline polls (it is slow by design)

    def __post_init__(self) -> None:
        if self.meters < 1 or self.concurrency < 1 or self.baseline_meters < 1 or self.latency_ms < 0:
            raise ValueError("meters, concurrency and baseline meters must be >= 1, latency >= 0")


@dataclass(frozen=True, slots=True)
class FleetBenchReport:
    meters: int
    latency_ms: int
    concurrency: int
    meters_per_s: float
    cpu_s_per_poll: float
    p99_poll_s: float
    peak_rss_mb: float
    failed_polls: int
    baseline_meters: int
    baseline_meters_per_s: float
    ratio: float
    goal_meters_per_s: float
    goal_ratio: float  # meters_per_s / goal: >= 1 meets the 10,000-meters-in-15-minutes goal

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _raise_file_limit() -> None:
    # One socket per meter on both sides: a 10,000-meter fleet needs more than the usual 1024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _start_simulator(config: FleetBenchConfig, workdir: Path) -> tuple[subprocess.Popen[bytes], list[dict[str, Any]]]:
    endpoints_file = workdir / "endpoints.json"
    stderr_log = workdir / "simulator.log"  # a file, not a pipe nobody reads
    with stderr_log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "simulate", "--meters", str(config.meters), "--framing", "wrapper",
             "--security", "none", "--latency-ms", str(config.latency_ms), "--json-endpoints", str(endpoints_file)],
            stdout=subprocess.DEVNULL, stderr=stderr,
        )
    try:
        with anyio.fail_after(max(60.0, config.meters / 50)):
            while not endpoints_file.exists():
                if process.poll() is not None:
                    error = stderr_log.read_text(errors="replace").strip()
                    raise RuntimeError(f"the simulator exited with {process.returncode}: {error}")
                await anyio.sleep(0.05)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process, json.loads(endpoints_file.read_text())["endpoints"]


def _fleet_toml(endpoints: list[dict[str, Any]], db: Path, concurrency: int) -> str:
    lines = ['gateway_id = "bench"', 'default_timezone = "Europe/Copenhagen"', "clock_drift_threshold_s = 30",
             "[store]", 'kind = "sqlite"', f'path = "{db}"',
             "[limits]", f"max_concurrent_polls = {concurrency}", "meter_deadline_s = 60", "retries = 1",
             "backoff_initial_s = 0.5", "backoff_max_s = 2"]
    for e in endpoints:
        make, profile = _MAKES[str(e["model"]).upper()]
        lines += ["[[concentrators]]", f'id = "c-{e["meter_id"]}"', f'host = "{e["host"]}"', f'port = {e["port"]}',
                  'framing = "wrapper"', "max_sessions = 1", "timeouts = { connect_s = 5, response_s = 10 }",
                  "[[meters]]", f'id = "{e["meter_id"]}"', f'make = "{make}"', f'profile = "{profile}"',
                  f'connection = "c-{e["meter_id"]}"', f'wport = {e["server_logical_address"]}',
                  f'client_address = {e["public_client"]}', 'security = { level = "none" }',
                  "max_power_w = 100000"]
    return "\n".join(lines) + "\n"


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)] if ordered else 0.0


def _baseline(endpoints: list[dict[str, Any]]) -> float:
    """Meters per second of dlms-cosem's blocking client, one meter after another (runs in a thread)."""
    from dlms_cosem import cosem, enumerations
    from dlms_cosem.client import DlmsClient
    from dlms_cosem.io import BlockingTcpIO, TcpTransport
    from dlms_cosem.security import NoSecurityAuthentication

    from drivers.logging import silence_dlms_cosem_logging

    silence_dlms_cosem_logging()  # its default logging prints every frame and costs ~3x CPU

    def attribute(interface: enumerations.CosemInterface, obis: str, index: int) -> cosem.CosemAttribute:
        return cosem.CosemAttribute(interface, cosem.Obis.from_string(obis), index)

    started = time.perf_counter()
    for e in endpoints:
        io = BlockingTcpIO(host=e["host"], port=e["port"], timeout=10)
        transport = TcpTransport(client_logical_address=e["public_client"],
                                 server_logical_address=e["server_logical_address"], io=io)
        client = DlmsClient(transport=transport, authentication=NoSecurityAuthentication())
        with client.session():
            for obis in _REGISTERS:
                client.get(attribute(enumerations.CosemInterface.REGISTER, obis, 2))
            client.get(attribute(enumerations.CosemInterface.CLOCK, "0.0.1.0.0.255", 2))
    return len(endpoints) / (time.perf_counter() - started)


async def run_fleet_bench(config: FleetBenchConfig, workdir: Path) -> FleetBenchReport:
    _raise_file_limit()
    simulator, endpoints = await _start_simulator(config, workdir)
    try:
        fleet = parse_config(_fleet_toml(endpoints, workdir / "bench.db", config.concurrency), base_dir=workdir)
        async with open_poller(fleet, now=lambda: datetime.now(timezone.utc)) as poller:
            scheduler = Scheduler(fleet, poller)
            await scheduler.run_cycle(STEADY_STEPS)  # warm-up: first contact, scalers, streams
            cpu0, wall0 = time.process_time(), time.perf_counter()
            summaries = await scheduler.run_cycle(STEADY_STEPS)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes
        baseline = await anyio.to_thread.run_sync(_baseline, endpoints[: config.baseline_meters])
    finally:
        simulator.send_signal(signal.SIGTERM)
        await anyio.to_thread.run_sync(simulator.wait)
    # Only meters actually read count as throughput: a meter that fails fast is not a meter read.
    meters_per_s = sum(1 for s in summaries if s.ok) / wall
    return FleetBenchReport(
        meters=config.meters, latency_ms=config.latency_ms, concurrency=config.concurrency,
        meters_per_s=meters_per_s, cpu_s_per_poll=cpu / len(summaries),
        p99_poll_s=_percentile([s.duration_s for s in summaries], 0.99), peak_rss_mb=peak_rss_mb,
        failed_polls=sum(1 for s in summaries if not s.ok),
        baseline_meters=min(config.baseline_meters, len(endpoints)), baseline_meters_per_s=baseline,
        ratio=meters_per_s / baseline, goal_meters_per_s=GOAL_METERS_PER_S,
        goal_ratio=meters_per_s / GOAL_METERS_PER_S,
    )


def format_report(r: FleetBenchReport) -> str:
    return "\n".join([
        f"fleet bench: {r.meters} meters, {r.latency_ms} ms latency, {r.concurrency} sessions at once",
        f"  gateway     {r.meters_per_s:8.1f} meters/s   cpu {r.cpu_s_per_poll * 1000:.2f} ms/poll   "
        f"p99 poll {r.p99_poll_s:.3f} s   peak RSS {r.peak_rss_mb:.0f} MB   failed {r.failed_polls}",
        f"  baseline    {r.baseline_meters_per_s:8.1f} meters/s   (dlms-cosem blocking client, sequential, "
        f"{r.baseline_meters} meters)",
        f"  ratio       {r.ratio:8.1f} x baseline",
        f"  goal        {r.goal_meters_per_s:8.1f} meters/s (10,000 in 15 min): {r.goal_ratio:.2f} x goal",
    ])


# -- command line ------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--meters", type=positive, default=100, help="simulated meters (default 100)")
    parser.add_argument("--latency-ms", type=non_negative, default=50, help="reply latency per exchange (default 50)")
    parser.add_argument("--concurrency", type=positive, default=200, help="sessions at once (default 200)")
    parser.add_argument("--baseline-meters", type=positive, default=20,
                        help="meters the sequential baseline polls (default 20)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def register_fleet(kinds: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `fleet` to the subcommands of `gateway bench` (called from gateway/commands/bench.py)."""
    parser = kinds.add_parser(
        "fleet", help="poll a simulated fleet: meters/s, CPU per poll, p99, peak RSS vs a blocking baseline",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    configure("ERROR", "text")
    config = FleetBenchConfig(meters=args.meters, latency_ms=args.latency_ms, concurrency=args.concurrency,
                              baseline_meters=args.baseline_meters)
    with tempfile.TemporaryDirectory(prefix="gateway-bench-fleet-") as tmp:
        try:
            report = anyio.run(run_fleet_bench, config, Path(tmp))
        except (RuntimeError, TimeoutError, OSError) as exc:
            print(f"gateway bench fleet: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(report.to_json(), sort_keys=True) if args.json else format_report(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.bench.fleet", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
