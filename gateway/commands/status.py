"""`gateway status --config FILE`: one line per meter of the fleet, from the health table.

Columns: last success, last error (time and reason), consecutive failures, intervals missing (load
profile intervals not stored: not read yet plus those the meter could not supply), suspect readings
(flagged by VEE), and the outbox depth (events waiting for Cosmos DB; "-" with the SQLite store).
Reads the store file only; works while `gateway run` is running.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

import anyio

from gateway.config import ConfigError, FleetConfig, SqliteStoreConfig, load_config
from gateway.health import HealthError, HealthStore, MeterHealth


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
        health = anyio.run(_read, path)
    except HealthError as exc:
        print(f"gateway status: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([_as_json(m.id, health.get(m.id)) for m in fleet.meters], indent=2))
    else:
        print(format_table(fleet, health))
    return 0


async def _read(path: Path) -> dict[str, MeterHealth]:
    store = await HealthStore.open(path, create=False)
    try:
        return await store.all()
    finally:
        await store.aclose()


def _time(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"


def format_table(fleet: FleetConfig, health: dict[str, MeterHealth]) -> str:
    header = ("METER", "LAST SUCCESS (UTC)", "LAST ERROR (UTC)", "FAILS", "MISSING", "SUSPECT", "OUTBOX", "REASON")
    rows = [header]
    for meter in fleet.meters:
        h = health.get(meter.id)
        if h is None:
            rows.append((meter.id, "never polled", "-", "-", "-", "-", "-", ""))
            continue
        reason = (h.last_error or "") if h.consecutive_failures else ""
        rows.append((
            meter.id, _time(h.last_success_at), _time(h.last_error_at), str(h.consecutive_failures),
            str(h.intervals_missing), str(h.suspect_readings), "-", reason,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]
        for row in rows
    ).rstrip()


def _as_json(meter_id: str, h: MeterHealth | None) -> dict[str, object]:
    if h is None:
        return {"meter_id": meter_id, "polled": False}
    return {
        "meter_id": meter_id, "polled": True,
        "last_success_at": h.last_success_at.isoformat() if h.last_success_at else None,
        "last_error_at": h.last_error_at.isoformat() if h.last_error_at else None,
        "last_error": h.last_error, "consecutive_failures": h.consecutive_failures,
        "polls_ok": h.polls_ok, "polls_failed": h.polls_failed,
        "intervals_missing": h.intervals_missing, "intervals_behind": h.intervals_behind,
        "gap_intervals": h.gap_intervals, "suspect_readings": h.suspect_readings,
        "last_suspect": h.last_suspect, "outbox_depth": None,
    }
