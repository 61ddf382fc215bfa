"""`gateway report --meter ID --from DATE --to DATE --out FILE.png`: a meter's daily consumption, drawn.

Reads the daily_consumption view (``gateway project`` keeps it up to date) of the event store of
``--db`` / ``--config`` and draws import and export per local day as a bar chart (gateway.projections.report).
Warns when the projection is behind the store, since the picture then misses recent events.
"""
from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

import anyio
import anyio.to_thread

from gateway.commands.views import add_source_options, day_settle_of, load_daily, parse_day, store_config_of
from gateway.projections import ViewsUnavailable
from gateway.wiring import open_views
from gateway.projections import DAILY_CONSUMPTION, ViewStoreError, projection_lag
from gateway.store.cosmos_client import CosmosConfigError
from gateway.store.errors import StoreError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "report", help="draw a meter's daily consumption as a PNG bar chart",
        description="Draw import/export energy per local day of one meter from the "
        "daily_consumption view, marking days with missing intervals.")
    parser.add_argument("--meter", required=True, metavar="ID", help="meter id")
    parser.add_argument("--from", dest="from_day", required=True, type=parse_day, metavar="DATE",
                        help="first local day (inclusive), e.g. 2026-03-01")
    parser.add_argument("--to", dest="to_day", required=True, type=parse_day, metavar="DATE",
                        help="last local day (inclusive)")
    parser.add_argument("--out", required=True, type=Path, metavar="FILE.png", help="PNG file to write")
    add_source_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.from_day > args.to_day:
        print("gateway report: --from is after --to", file=sys.stderr)
        return 2
    if (args.to_day - args.from_day).days > 366:
        print("gateway report: a report covers at most 367 days", file=sys.stderr)
        return 2
    # Imported here: matplotlib takes most of a second to import, and every `gateway` command
    # imports this module to register its parser.
    from gateway.projections.report import ReportError

    try:
        return int(anyio.run(_report, args))
    except (ViewsUnavailable, ViewStoreError, StoreError, CosmosConfigError, ReportError) as exc:
        print(f"gateway report: {exc}", file=sys.stderr)
        return 1


async def _report(args: argparse.Namespace) -> int:
    from gateway.projections.report import draw_daily_consumption

    async with open_views(store_config_of(args.db, args.config)) as (events, views):
        figures = await load_daily(views, args.meter, args.from_day, args.to_day,
                                   settle=day_settle_of(args.config))
        if events is not None:
            lag = await projection_lag(events, views, DAILY_CONSUMPTION, datetime.now(timezone.utc))
            if lag.events_behind or lag.seconds_behind:
                print(f"gateway report: warning: daily_consumption is behind the store "
                      f"({lag.events_behind if lag.events_behind is not None else '?'} events, "
                      f"{lag.seconds_behind:.0f} s); is `gateway project` running?", file=sys.stderr)
    if not figures:
        print(f"gateway report: warning: no daily consumption for meter {args.meter!r} in "
              f"{args.from_day}..{args.to_day}", file=sys.stderr)
    zone = figures[0].timezone if figures else None
    await anyio.to_thread.run_sync(
        lambda: draw_daily_consumption(figures, args.meter, args.from_day, args.to_day, args.out, zone))
    print(f"wrote {args.out} ({len(figures)} days with data)")
    return 0
