"""`gateway status --config FILE`: one line per meter of the fleet, from the health table.

Columns: last success, last error (time and reason), consecutive failures, intervals missing (load
profile intervals not stored: not read yet plus those the meter could not supply), suspect readings
(flagged by VEE), and the outbox depth (the meter's events of this and last year waiting for Cosmos
DB; "-" with the SQLite store). With Cosmos a last line sums up the outbox: depth, bytes against its
bound, age of the oldest event, the FULL alarm (as the outbox file records it, whichever process was
refused), the puts refused in all and the poisoned events set aside.
Reads the local files only (never Cosmos); works while `gateway run` is running.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

import anyio

from gateway.config import ConfigError, CosmosStoreConfig, FleetConfig, SqliteStoreConfig, load_config
from gateway.polling.health import HealthError, HealthStore, MeterHealth
from gateway.history.outbox import Outbox, OutboxState
from gateway.history.sinks import describe_outbox
from gateway.store.errors import StoreError
from gateway.domain.streams import stream_id


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("status", help="a table of every meter's health")
    parser.add_argument("--config", type=Path, required=True, metavar="FILE", help="fleet config (TOML)")
    parser.add_argument("--json", action="store_true", help="print a JSON array, one object per meter")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        fleet = load_config(args.config, check_secret_files=False)
    except ConfigError as exc:
        print(f"gateway status: {exc}", file=sys.stderr)
        return 2
    path = fleet.store.path if isinstance(fleet.store, SqliteStoreConfig) else fleet.store.outbox_path
    try:
        health, outbox = anyio.run(_read, fleet, path)
    except (HealthError, StoreError) as exc:
        print(f"gateway status: {exc}", file=sys.stderr)
        return 1
    if args.json:
        rows = [_as_json(m.id, health.get(m.id), outbox) for m in fleet.meters]
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(fleet, health, outbox))
    return 0


@dataclass(frozen=True, slots=True)
class OutboxStatus:
    state: OutboxState
    by_meter: Mapping[str, int]  # pending events of the meter's streams of this and last year


async def _read(fleet: FleetConfig, path: Path) -> tuple[dict[str, MeterHealth], OutboxStatus | None]:
    store = await HealthStore.open(path, create=False)
    try:
        health = await store.all()
    finally:
        await store.aclose()
    if not isinstance(fleet.store, CosmosStoreConfig):
        return health, None
    year = datetime.now(timezone.utc).year
    async with await Outbox.open(path, fleet.store.outbox_max_bytes) as outbox:
        by_meter = {
            meter.id: sum([len(await outbox.pending(stream_id(meter.id, y))) for y in (year - 1, year)])
            for meter in fleet.meters
        }
        return health, OutboxStatus(await outbox.state(), by_meter)


def _time(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"


def format_table(fleet: FleetConfig, health: dict[str, MeterHealth], outbox: OutboxStatus | None = None) -> str:
    header = ("METER", "LAST SUCCESS (UTC)", "LAST ERROR (UTC)", "FAILS", "MISSING", "SUSPECT", "OUTBOX", "REASON")
    rows = [header]
    for meter in fleet.meters:
        h = health.get(meter.id)
        depth = "-" if outbox is None else str(outbox.by_meter.get(meter.id, 0))
        if h is None:
            rows.append((meter.id, "never polled", "-", "-", "-", "-", depth, ""))
            continue
        reason = (h.last_error or "") if h.consecutive_failures else ""
        rows.append((
            meter.id, _time(h.last_success_at), _time(h.last_error_at), str(h.consecutive_failures),
            str(h.intervals_missing), str(h.suspect_readings), depth, reason,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    table = "\n".join(
        ("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]).rstrip()
        for row in rows
    )
    if outbox is not None:
        table += f"\noutbox: {describe_outbox(outbox.state)}"
    return table


def _as_json(meter_id: str, h: MeterHealth | None, outbox: OutboxStatus | None = None) -> dict[str, object]:
    box: dict[str, object] = {"outbox_depth": None}
    if outbox is not None:
        box = {"outbox_depth": outbox.by_meter.get(meter_id, 0), "outbox_total_depth": outbox.state.depth,
               "outbox_full": outbox.state.full, "outbox_refused_puts": outbox.state.refused_puts,
               "outbox_poisoned": outbox.state.poisoned}
    if h is None:
        return {"meter_id": meter_id, "polled": False, **box}
    return {
        "meter_id": meter_id, "polled": True,
        "last_success_at": h.last_success_at.isoformat() if h.last_success_at else None,
        "last_error_at": h.last_error_at.isoformat() if h.last_error_at else None,
        "last_error": h.last_error, "consecutive_failures": h.consecutive_failures,
        "polls_ok": h.polls_ok, "polls_failed": h.polls_failed,
        "intervals_missing": h.intervals_missing, "intervals_behind": h.intervals_behind,
        "gap_intervals": h.gap_intervals, "suspect_readings": h.suspect_readings,
        "last_suspect": h.last_suspect, **box,
    }
