"""`gateway demo`: the whole gateway on one machine, no network, no config edits.

Starts the meter simulator with the demo fleet (``config/demo-fleet.toml``: Kamstrup and Landis+Gyr,
DLMS wrapper and HDLC, no security / LLS / HLS-GMAC, one meter that never answers), runs a few poll
cycles into a fresh embedded SQLite store, printing a line per poll, then a summary: meters read,
events per type, streams, failures with their reasons.

Simulated time: the simulator's clock is frozen and moved on 15 minutes between cycles, and the
gateway reads the same clock, so each cycle finds a new load-profile interval without waiting for
it; only the absent meter's deadline is spent in real time.

Where the config comes from: ``--config`` if given; else the repository's ``config/`` directory,
found next to the ``gateway`` package (an editable install or a run from a clone); else the copy a
non-editable install puts in ``<prefix>/share/meter-gateway/`` (pyproject's data-files: one copy in
git, copied at build time). With that installed copy the default store is ``./var/demo-events.db``
in the working directory, not beside the config (which would be inside the Python installation).
Its test-only secrets come from ``demo-fleet.env`` beside it, as environment variables
that are set only if not set already. The fleet's ports are the ones ``gateway simulate --port 14059``
uses; if they are taken, the simulator listens on free ports and the demo points its connections
there (in memory; the file is not changed).
"""
from __future__ import annotations

import argparse
import os
import sys
import sysconfig
from collections import Counter
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import AsyncIterator, Callable

import anyio

import gateway
from drivers.simulator import Framing, MeterSimulator, SimulatorConfig
from drivers.simulator.fleet import fleet as simulated_fleet
from gateway.config import ConfigError, FleetConfig, SqliteStoreConfig, load_config, read_env_file
from gateway.config.logsetup import configure
from gateway.domain.poll_result import PollSummary
from gateway.wiring import counters_directory, open_poller
from gateway.polling.scheduler import Scheduler
from gateway.store.sqlite import SqliteEventStore
from gateway.commands._args import positive

DEMO_CONFIG = "demo-fleet.toml"
DEMO_ENV = "demo-fleet.env"
INSTALLED_DATA = Path("share") / "meter-gateway"  # pyproject [tool.setuptools.data-files]
INSTALLED_DEMO_STORE = Path("var") / "demo-events.db"  # relative to the working directory
CYCLE_STEP = timedelta(minutes=15)  # simulated time between cycles: one load-profile interval


class DemoError(Exception):
    """The demo cannot start (config not found, store path taken, ports unusable)."""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "demo",
        help="poll a simulated mixed fleet into a fresh SQLite store and summarise what was stored",
        description="Start the meter simulator with the demo fleet, run a few poll cycles against the "
        "embedded SQLite store, and print what was read, stored and what failed.",
    )
    parser.add_argument("--cycles", type=positive, default=3, help="poll cycles (default 3)")
    parser.add_argument(
        "--db", type=Path,
        help="new SQLite store file to create (default: the demo config's store, var/demo-events.db, replaced)",
    )
    parser.add_argument("--config", type=Path, help=f"demo fleet config (default: the repository's config/{DEMO_CONFIG}, "
                        f"else the copy installed with the package)")
    parser.add_argument("--verbose", action="store_true", help="also print the gateway's log (stderr)")
    parser.set_defaults(func=run)


def _installed_data_dirs() -> list[Path]:
    # Where pip puts data-files: the environment's prefix, or the user base for `pip install --user`.
    schemes = [None, f"{os.name}_user"] if f"{os.name}_user" in sysconfig.get_scheme_names() else [None]
    dirs = [Path(sysconfig.get_path("data", scheme) if scheme else sysconfig.get_path("data")) / INSTALLED_DATA
            for scheme in schemes]
    return list(dict.fromkeys(dirs))


def demo_config_path() -> tuple[Path, bool]:
    """The demo config and whether it is the installed copy (not the repository's ``config/``)."""
    repository = Path(gateway.__file__).resolve().parent.parent / "config" / DEMO_CONFIG
    if repository.is_file():
        return repository, False
    installed = [d / DEMO_CONFIG for d in _installed_data_dirs()]
    for candidate in installed:
        if candidate.is_file():
            return candidate, True
    looked = ", ".join(str(p) for p in [repository, *installed])
    raise DemoError(
        f"cannot find the demo fleet config {DEMO_CONFIG} (looked in: {looked}); "
        f"run `gateway demo --config PATH/{DEMO_CONFIG}` with the config/{DEMO_CONFIG} of a "
        f"meter-gateway source tree ({DEMO_ENV}, its test secrets, must sit beside it), "
        f"or reinstall meter-gateway, which installs it in share/meter-gateway/ of its environment"
    )


def run(args: argparse.Namespace) -> int:
    configure("INFO" if args.verbose else "CRITICAL", "text")
    try:
        config_path, installed = (args.config, False) if args.config else demo_config_path()
        env_path = config_path.with_name(DEMO_ENV)
        if env_path.is_file():
            for name, value in read_env_file(env_path).items():
                os.environ.setdefault(name, value)
        fleet = load_config(config_path)
        if installed:
            fleet = replace(fleet, store=SqliteStoreConfig(INSTALLED_DEMO_STORE.resolve()))
            print(f"gateway demo: using the installed demo fleet {config_path}", file=sys.stderr)
        db_path = _fresh_store_path(fleet, args.db)
        return anyio.run(_demo, fleet, db_path, args.cycles)
    except (DemoError, ConfigError) as exc:
        print(f"gateway demo: {exc}", file=sys.stderr)
        return 2


def _fresh_store_path(fleet: FleetConfig, requested: Path | None) -> Path:
    if requested is not None:
        if requested.exists():
            raise DemoError(f"{requested} exists; the demo writes a new store: give a new path or delete it")
        return requested.resolve()
    if not isinstance(fleet.store, SqliteStoreConfig):
        raise DemoError(f"{fleet.source}: the demo needs an SQLite store; pass --db PATH")
    path = fleet.store.path.resolve()
    # The demo's own store: replaced on every run, so the summary is this run's.
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)
    counters = counters_directory(path)
    if counters.is_dir():
        for item in counters.iterdir():
            item.unlink()
        counters.rmdir()
    return path


def _simulated_count(fleet: FleetConfig) -> int:
    # The demo fleet names the simulated meters sim-0000.. (tests/config/test_demo_fleet.py checks it).
    return sum(1 for m in fleet.meters if m.id.startswith("sim-"))


@asynccontextmanager
async def _serving(fleet: FleetConfig) -> AsyncIterator[tuple[MeterSimulator, dict[int, int]]]:
    """The simulator serving the demo fleet, and how config ports map to the ports it listens on."""
    base = min(c.port for c in fleet.concentrators)
    meters = simulated_fleet(_simulated_count(fleet))

    def simulator(base_port: int) -> MeterSimulator:
        return MeterSimulator(SimulatorConfig(meters=meters, framing=Framing.BOTH, base_port=base_port, speed=0.0))

    async with AsyncExitStack() as stack:
        try:
            served = await stack.enter_async_context(simulator(base))
        except OSError:  # the fixed ports are taken (another demo, a `gateway simulate`): use free ones
            served = await stack.enter_async_context(simulator(0))
        listening = list(dict.fromkeys(e.port for e in served.endpoints))  # in the order opened
        yield served, {base + k: port for k, port in enumerate(listening)}


def _progress(cycle: int) -> Callable[[PollSummary], None]:
    def show(summary: PollSummary) -> None:
        if summary.ok:
            stored = sum(summary.stored.values())
            detail = (f"ok      {summary.registers_read} registers, {summary.rows_read} intervals, "
                      f"{summary.log_entries_read} log entries -> {stored} new events")
        else:
            detail = f"FAILED  {summary.describe_error()}"
        print(f"  cycle {cycle}  {summary.meter_id:<12} {detail}  ({summary.duration_s:.2f} s)", flush=True)

    return show


async def _demo(fleet: FleetConfig, db_path: Path, cycles: int) -> int:
    all_stored: Counter[str] = Counter()
    async with _serving(fleet) as (simulator, ports):
        fleet = replace(fleet, concentrators=tuple(replace(c, port=ports.get(c.port, c.port)) for c in fleet.concentrators))
        where = (f"ports {min(ports)}-{max(ports)}" if all(k == v for k, v in ports.items())
                 else f"free ports, as {min(ports)}-{max(ports)} are taken")
        print(f"meter-gateway demo: {len(fleet.meters)} meters ({_simulated_count(fleet)} simulated on 127.0.0.1, "
              f"{where}), store {db_path}")
        async with open_poller(fleet, db_path=db_path, now=simulator.clock.now) as poller:
            scheduler = Scheduler(fleet, poller)
            for cycle in range(1, cycles + 1):
                print(f"cycle {cycle}/{cycles} at simulated {simulator.clock.now():%Y-%m-%d %H:%M} UTC", flush=True)
                scheduler.on_poll = _progress(cycle)
                for summary in await scheduler.run_cycle():
                    all_stored.update(summary.stored)
                simulator.clock.advance(CYCLE_STEP)
            health = await poller.health.all()

    store = await SqliteEventStore.open(db_path)
    try:
        streams = await store.list_streams()
    finally:
        await store.aclose()
    read = [m for m in fleet.meters if (h := health.get(m.id)) is not None and h.last_success_at is not None]
    print()
    print(f"summary: {len(read)} of {len(fleet.meters)} meters read in {cycles} cycles")
    print("events stored, per type:")
    for event_type, count in sorted(all_stored.items()):
        print(f"  {event_type:<22} {count:>6}")
    print(f"  {'total':<22} {sum(all_stored.values()):>6}")
    print(f"streams ({len(streams)}):")
    for info in streams:
        print(f"  {info.stream_id:<28} {info.head:>5} events")
    failing = [(m.id, health[m.id]) for m in fleet.meters if m.id in health and health[m.id].last_error]
    print(f"failures ({sum(h.polls_failed for _, h in failing)} polls):")
    for meter_id, h in failing:
        print(f"  {meter_id:<12} {h.polls_failed} failed polls, last: {h.last_error}")
    if not failing:
        print("  none")
    print(f"\ninspect: gateway streams list --db {db_path}")
    return 0
