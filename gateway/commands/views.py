"""`gateway views show|lag`: what the projections have made of the events, for the operator.

Reads the views of the event store given by ``--db`` (a SQLite event store file; default
$GATEWAY_STORE, else ./var/gateway.db; its views file sits next to it) or by the ``[store]`` of
``--config`` (SQLite, or Cosmos DB with its views container: ``views_container``, by default
``<container>-views``). Never creates views: missing ones
are reported (run ``gateway project`` first); the views are opened by the composition root
(``gateway.wiring.open_views``). ``views lag`` shows how far each
projection is behind the event store.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio

from gateway.config import (
    ConfigError,
    SqliteStoreConfig,
    StoreConfig,
    load_config,
)
from gateway.projections import (
    DAILY_CONSUMPTION,
    LATEST_READING,
    VIEW_NAMES,
    Lag,
    ProjectionError,
    ViewStore,
    ViewStoreError,
    ViewsUnavailable,
    projection_lag,
)
from gateway.projections.views import (
    DAY_SETTLE,
    DailyFigure,
    daily_figures,
    day_settle,
    drift_exceeded,
    fleet_summary,
)
from gateway.config.settings import STORE_ENV_VAR, store_path
from gateway.store.cosmos_client import CosmosConfigError
from gateway.store.errors import StoreError
from gateway.wiring import open_views


def add_source_options(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--db", help=f"SQLite event store file (default: ${STORE_ENV_VAR}, else ./var/gateway.db)")
    source.add_argument("--config", type=Path, metavar="FILE",
                        help="fleet config: use its [store] (SQLite, or Cosmos DB with a views container)")


def store_config_of(db: str | None, config: Path | None) -> StoreConfig:
    """The event store named by --db / --config / the defaults."""
    if config is None:
        return SqliteStoreConfig(store_path(db))
    try:
        return load_config(config).store
    except ConfigError as exc:
        raise ViewsUnavailable(str(exc)) from exc


def parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date like 2026-03-29: {text!r}") from None


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    views = subparsers.add_parser("views", help="show the projected views and their lag")
    actions = views.add_subparsers(dest="views_command", metavar="ACTION", required=True)

    show = actions.add_parser("show", help="print one view",
                              description=f"Print a view: {', '.join(VIEW_NAMES)}.")
    show.add_argument("name", metavar="NAME", choices=VIEW_NAMES, help=" | ".join(VIEW_NAMES))
    show.add_argument("--meter", metavar="ID", help="only this meter")
    show.add_argument("--from", dest="from_day", type=parse_day, metavar="DATE",
                      help="daily_consumption: first local day (inclusive)")
    show.add_argument("--to", dest="to_day", type=parse_day, metavar="DATE",
                      help="daily_consumption: last local day (inclusive)")
    show.add_argument("--json", action="store_true", help="print JSON")
    add_source_options(show)
    show.set_defaults(func=run_show)

    lag = actions.add_parser("lag", help="how far each projection is behind the event store")
    lag.add_argument("--json", action="store_true", help="print JSON")
    add_source_options(lag)
    lag.set_defaults(func=run_lag)


def _run(args: argparse.Namespace, action: Any) -> int:
    try:
        return int(anyio.run(action, args))
    except (ViewsUnavailable, ViewStoreError, StoreError, ProjectionError, CosmosConfigError) as exc:
        print(f"gateway views {args.views_command}: {exc}", file=sys.stderr)
        return 1


# ---- show -------------------------------------------------------------------------------------


def run_show(args: argparse.Namespace) -> int:
    if args.from_day and args.to_day and args.from_day > args.to_day:
        print("gateway views show: --from is after --to", file=sys.stderr)
        return 2
    return _run(args, _show)


def day_settle_of(config: Path | None) -> timedelta:
    """How long a meter's newest day stays in progress after its end: from the fleet config when
    one is given (its load-profile interval, jitter and meter deadline), else ``DAY_SETTLE``."""
    if config is None:
        return DAY_SETTLE
    try:
        return day_settle(load_config(config))
    except ConfigError as exc:
        raise ViewsUnavailable(str(exc)) from exc


async def load_daily(views: ViewStore, meter: str | None, from_day: date | None,
                     to_day: date | None, *, settle: timedelta = DAY_SETTLE) -> list[DailyFigure]:
    """Daily figures, per meter in day order, as of now (a meter's newest day is in progress
    only until shortly after its end). Days before ``from_day`` are read too: a day without
    intervals takes its energy from the previous day's last register read."""
    docs = await views.query(DAILY_CONSUMPTION, meter)
    by_meter: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_meter.setdefault(doc.partition, []).append(dict(doc.body))
    now = datetime.now(timezone.utc)
    figures = [f for meter_docs in by_meter.values() for f in daily_figures(meter_docs, now=now, settle=settle)]
    return [f for f in figures
            if (from_day is None or f.day >= from_day) and (to_day is None or f.day <= to_day)]


async def _show(args: argparse.Namespace) -> int:
    async with open_views(store_config_of(args.db, args.config)) as (_events, views):
        if args.name == DAILY_CONSUMPTION:
            figures = await load_daily(views, args.meter, args.from_day, args.to_day,
                                       settle=day_settle_of(args.config))
            print(json.dumps([f.to_json() for f in figures], indent=2) if args.json
                  else _daily_table(figures))
            return 0
        docs = [dict(doc.body) for doc in await views.query(args.name, args.meter)]
    if args.name == LATEST_READING:
        print(json.dumps(docs, indent=2) if args.json else _latest_table(docs))
    else:
        summary = fleet_summary(docs, datetime.now(timezone.utc))
        if args.json:
            print(json.dumps({"summary": summary, "meters": docs}, indent=2))
        else:
            print(_fleet_text(summary, docs))
    return 0


def _kwh(value: Decimal | None) -> str:
    return "-" if value is None else f"{value / 1000:.3f}"


def _daily_table(figures: Sequence[DailyFigure]) -> str:
    rows = [(f.meter_id, f.day.isoformat(), _kwh(f.import_wh), _kwh(f.export_wh),
             ("-" if f.intervals_missing is None else f"{f.intervals_missing}/{f.intervals_expected}")
             + (" (in progress)" if f.in_progress else ""),
             f.source) for f in figures]
    return table(("METER", "LOCAL DAY", "IMPORT kWh", "EXPORT kWh", "MISSING", "SOURCE"), rows) + \
        f"\n({len(figures)} day{'s' if len(figures) != 1 else ''})"


def _latest_table(docs: Sequence[dict[str, Any]]) -> str:
    blocks = []
    for doc in docs:
        clock = doc.get("clock")
        drift = " DRIFT" if drift_exceeded(doc) else ""
        clock_text = "-" if clock is None else f"offset {clock['offsetS']} s at {clock['checkedAt']}{drift}"
        rows = [(obis, reg["quantity"], reg["value"], reg["unit"], reg["captureTime"])
                for obis, reg in sorted(doc["registers"].items())]
        blocks.append(
            f"meter {doc['meterId']}  last contact {doc['lastContact'] or '-'}  clock {clock_text}\n"
            + table(("OBIS", "QUANTITY", "VALUE", "UNIT", "CAPTURED"), rows))
    return "\n\n".join(blocks) if blocks else "(no meters)"


def _fleet_text(summary: dict[str, Any], docs: Sequence[dict[str, Any]]) -> str:
    head = (f"{summary['meters']} meters, {summary['metersSilent']} silent for more than "
            f"{summary['silentAfterS'] // 3600} h, {summary['metersWithDrift']} with clock drift, "
            f"{summary['suspectReadings']} suspect readings, {summary['gaps']} gaps, "
            f"{summary['totalEvents']} events")
    rows = [(d["meterId"], str(sum(d["events"].values())), d["lastRecordedAt"] or "-",
             str(d["driftDetections"]), str(d["suspectReadings"]), str(d["gaps"])) for d in docs]
    return head + "\n" + table(("METER", "EVENTS", "LAST EVENT", "DRIFTS", "SUSPECT", "GAPS"), rows)


def table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows])


# ---- lag --------------------------------------------------------------------------------------


def run_lag(args: argparse.Namespace) -> int:
    return _run(args, _lag)


async def _lag(args: argparse.Namespace) -> int:
    async with open_views(store_config_of(args.db, args.config)) as (events, views):
        if events is None:
            raise ViewsUnavailable("the event store of these views does not exist")
        now = datetime.now(timezone.utc)
        lags = [await projection_lag(events, views, name, now) for name in VIEW_NAMES]
    print(json.dumps([lag.to_json() for lag in lags], indent=2) if args.json else lag_table(lags))
    return 0


def lag_table(lags: Sequence[Lag]) -> str:
    rows = [(lag.projection, "-" if lag.events_behind is None else str(lag.events_behind),
             f"{lag.seconds_behind:.1f}", lag.checkpoint or "-") for lag in lags]
    return table(("PROJECTION", "EVENTS BEHIND", "SECONDS BEHIND", "CHECKPOINT"), rows)
