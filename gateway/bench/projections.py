"""`gateway bench projections`: the projection engine on SQLite, against a read-and-decode baseline.

A fresh SQLite store is filled with synthetic meter polls (6 domain events each: import/export
energy, power and voltage registers, one block of four 15-minute intervals, one clock check), then:

1. baseline: one pass over the read-all feed that decodes every event and does nothing else (the
   least any projection must do), in events/s;
2. engine: the three gateway projections drained from the start into a fresh views file, in
   events/s of the feed; ``ratio`` = engine / baseline, both measured in this run;
3. burst: with the engine caught up and stopped, a burst of events is appended (a backlog, as after
   an outage); reported are the events and seconds behind (worst projection) when the engine starts
   again and how long until every projection's lag is 0.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio

from gateway.domain.events import (
    ClockChecked,
    DomainEvent,
    IntervalRow,
    IntervalsRecorded,
    RegisterRead,
)
from gateway.domain.mapper import decode, to_new_event
from gateway.projections import (
    ProjectionEngine,
    SqliteViewStore,
    default_projections,
    views_path,
    zone_lookup,
)
from gateway.store.model import AppendRequest, EventMetadata
from gateway.store.sqlite import SqliteEventStore
from gateway.domain.streams import stream_id
from gateway.commands._args import positive

EVENTS_PER_POLL = 6
_START = datetime(2026, 1, 1, tzinfo=timezone.utc)
_PERIOD = timedelta(minutes=15)
_IMPORT, _EXPORT = "1.0.1.8.0.255", "1.0.2.8.0.255"


@dataclass(frozen=True, slots=True)
class ProjectionBenchConfig:
    events: int = 20_000  # measured through the engine
    burst: int = 100_000  # appended while the engine follows
    meters: int = 200
    batch: int = 1000  # events per read_all page

    def __post_init__(self) -> None:
        if min(self.events, self.burst, self.meters, self.batch) < 1:
            raise ValueError("events, burst, meters and batch must be at least 1")


@dataclass(frozen=True, slots=True)
class ProjectionBenchReport:
    events: int
    meters: int
    batch: int
    projections: int
    baseline_events_per_s: float  # read + decode only
    events_per_s: float  # through the engine, all projections
    ratio: float  # events_per_s / baseline_events_per_s
    view_applications: int  # (event, document) applications during the measured drain
    burst_events: int
    burst_write_s: float
    burst_events_behind_at_start: int  # worst projection, when the engine starts on the backlog
    burst_seconds_behind_at_start: float  # worst projection
    burst_catch_up_s: float  # from the engine's start until every projection's lag is 0

    def to_json(self) -> dict[str, Any]:
        return {key: round(value, 3) if isinstance(value, float) else value
                for key, value in asdict(self).items()}


def _poll(meter: int, poll: int) -> list[DomainEvent]:
    meter_id = f"BENCH{meter:05d}"
    read_at = _START + (poll + 1) * 4 * _PERIOD + timedelta(seconds=meter % 50)
    base = Decimal(1_000_000 + meter * 1000 + poll * 400)
    rows = tuple(
        IntervalRow(end_time=_START + (poll * 4 + k) * _PERIOD,
                    values={_IMPORT: base + 100 * k, _EXPORT: base / 10 + 10 * k},
                    units={_IMPORT: "Wh", _EXPORT: "Wh"}, status=0)
        for k in range(1, 5)
    )
    registers = (
        (_IMPORT, "active_energy_import", base + 400, "Wh"),
        (_EXPORT, "active_energy_export", base / 10 + 40, "Wh"),
        ("1.0.1.7.0.255", "active_power_import", Decimal(1500 + meter % 700), "W"),
        ("1.0.32.7.0.255", "voltage_l1", Decimal("230.1"), "V"),
    )
    return [
        *(RegisterRead(meter_id=meter_id, obis=obis, quantity=quantity, value=value, unit=unit,
                       capture_time=read_at, read_time=read_at)
          for obis, quantity, value, unit in registers),
        IntervalsRecorded(meter_id=meter_id, profile_obis="1.0.99.1.0.255", capture_period_s=900,
                          rows=rows),
        ClockChecked(meter_id=meter_id, meter_time=read_at + timedelta(seconds=meter % 5),
                     gateway_time=read_at, offset_s=Decimal(meter % 5)),
    ]


def _requests(meters: int, first_poll: int, events: int, heads: dict[str, int],
              recorded_at: datetime | None = None) -> Iterator[list[AppendRequest]]:
    """Append requests of whole polls, round-robin over the meters, in chunks of about 600 events."""
    chunk: list[AppendRequest] = []
    for n in range(-(-events // EVENTS_PER_POLL)):
        meter, poll = n % meters, first_poll + n // meters
        domain = _poll(meter, poll)
        stream = stream_id(domain[0].meter_id, 2026)
        meta = EventMetadata(gateway_id="bench-gw", recorded_at=recorded_at or datetime.now(timezone.utc))
        chunk.append(AppendRequest(stream, heads.get(stream, 0),
                                   tuple(to_new_event(e, meta) for e in domain)))
        heads[stream] = heads.get(stream, 0) + len(domain)
        if len(chunk) * EVENTS_PER_POLL >= 600:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def _write(store: SqliteEventStore, chunks: Iterator[list[AppendRequest]]) -> int:
    written = 0
    for chunk in chunks:
        for outcome in await store.append_batch(chunk):
            if outcome.error is not None:
                raise outcome.error
        written += sum(len(r.events) for r in chunk)
    return written


async def run_projection_bench(config: ProjectionBenchConfig, work_dir: Path) -> ProjectionBenchReport:
    db = work_dir / "bench-events.db"
    for path in (db, views_path(db)):
        if path.exists():
            raise FileExistsError(f"{path} exists: give a fresh directory")
    store = await SqliteEventStore.open(db)
    views = await SqliteViewStore.open(views_path(db))
    try:
        heads: dict[str, int] = {}
        polls = -(-(-(-config.events // EVENTS_PER_POLL)) // config.meters)  # per meter, rounded up
        events = await _write(store, _requests(config.meters, 0, config.events, heads,
                                               recorded_at=_START))

        started = time.perf_counter()
        checkpoint: str | None = None
        while True:
            page = await store.read_all(checkpoint, limit=config.batch)
            for recorded in page.events:
                decode(recorded)
            checkpoint = page.checkpoint
            if page.done:
                break
        baseline_s = time.perf_counter() - started

        zone = ZoneInfo("Europe/Copenhagen")
        engine = ProjectionEngine(store, views, default_projections(zone_lookup({}, zone)),
                                  batch_size=config.batch)
        started = time.perf_counter()
        await engine.drain_all()
        engine_s = time.perf_counter() - started
        applications = sum(s.applied for s in engine.stats.values())

        burst = await _burst(engine, store, config, heads, polls)
    finally:
        await views.aclose()
        await store.aclose()
    baseline_rate, engine_rate = events / baseline_s, events / engine_s
    return ProjectionBenchReport(
        events=events, meters=config.meters, batch=config.batch, projections=len(engine.projections),
        baseline_events_per_s=baseline_rate, events_per_s=engine_rate, ratio=engine_rate / baseline_rate,
        view_applications=applications, **burst,
    )


async def _burst(engine: ProjectionEngine, store: SqliteEventStore, config: ProjectionBenchConfig,
                 heads: dict[str, int], first_poll: int) -> dict[str, Any]:
    # A backlog, as after the projection was stopped or the box was cut off: the burst is written
    # while the engine is idle (recorded_at is the time of writing), then the engine catches up.
    result: dict[str, Any] = {}
    started = time.perf_counter()
    result["burst_events"] = await _write(store, _requests(config.meters, first_poll, config.burst, heads))
    result["burst_write_s"] = time.perf_counter() - started
    lags = [await engine.lag(name) for name in engine.projections]
    result["burst_events_behind_at_start"] = max(lag.events_behind or 0 for lag in lags)
    result["burst_seconds_behind_at_start"] = max(lag.seconds_behind for lag in lags)
    started = time.perf_counter()
    await engine.drain_all()
    result["burst_catch_up_s"] = time.perf_counter() - started
    final = [await engine.lag(name) for name in engine.projections]
    if any(lag.events_behind for lag in final):
        raise RuntimeError(f"lag is not 0 after draining: {final}")  # a bug in the engine
    return result


def format_report(report: ProjectionBenchReport) -> str:
    return "\n".join([
        f"projection engine on SQLite: {report.events} events, {report.meters} meters, "
        f"{report.projections} projections, pages of {report.batch}",
        f"  baseline (read + decode)  {report.baseline_events_per_s:10.0f} events/s",
        f"  engine (all projections)  {report.events_per_s:10.0f} events/s  "
        f"(ratio {report.ratio:.2f}, {report.view_applications} view updates)",
        f"burst of {report.burst_events} events written in {report.burst_write_s:.1f} s with the "
        "engine stopped, then projected:",
        f"  behind at start           {report.burst_events_behind_at_start} events, "
        f"{report.burst_seconds_behind_at_start:.1f} s",
        f"  lag 0 after               {report.burst_catch_up_s:.1f} s "
        f"({report.burst_events / report.burst_catch_up_s:.0f} events/s)",
    ])


# ---- command line (hooked into `gateway bench` by gateway/commands/bench.py) -------------------


def register_bench(kinds: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `projections` to the `gateway bench` sub-commands."""
    parser = kinds.add_parser(
        "projections", help="projection engine throughput and lag after a burst (SQLite)",
        description="Drain the gateway's projections over synthetic polls in a fresh SQLite store "
        "(events/s vs a read-and-decode baseline), then append a burst with the engine stopped and "
        "report how far behind it starts and how long until its lag is 0.")
    parser.add_argument("--events", type=positive, default=20_000, help="measured events (default 20000)")
    parser.add_argument("--burst", type=positive, default=100_000, help="burst events (default 100000)")
    parser.add_argument("--meters", type=positive, default=200, help="meters (default 200)")
    parser.add_argument("--batch", type=positive, default=1000, help="events per page (default 1000)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--db", type=Path, help="directory for the store files (default: a temporary one)")
    parser.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    config = ProjectionBenchConfig(events=args.events, burst=args.burst, meters=args.meters,
                                   batch=args.batch)
    try:
        if args.db is not None:
            args.db.mkdir(parents=True, exist_ok=True)
            report = anyio.run(run_projection_bench, config, args.db)
        else:
            with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
                report = anyio.run(run_projection_bench, config, Path(tmp))
    except FileExistsError as exc:
        print(f"gateway bench projections: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report.to_json(), sort_keys=True) if args.json else format_report(report))
    return 0
