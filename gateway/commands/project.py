"""`gateway project --config FILE [--rebuild NAME] [--once]`: keep the views up to date.

Runs the projection engine over the event store of the config's ``[store]`` into its views (SQLite:
a views file next to the store, see gateway.projections.view_store.views_path; Cosmos DB: the
fleet's views container in the same database, ``[store] views_container``, by default
``<container>-views``), with each meter's configured time zone.
Continuous by default, until SIGTERM/SIGINT (the page in progress is finished: the engine is
exactly-once in effect, so stopping anywhere is safe); ``--once`` drains the feed and exits,
printing the lag of each projection. ``--rebuild NAME`` (or ``all``) first drops that view and its
checkpoint. Views whose checkpoint is of another event store, or beyond its head (the store was
replaced, an older backup restored), are rebuilt at start with one WARNING (ProjectionEngine.check_store).
One projection runner per store: while another (``gateway project``, or ``gateway run`` with
``[projections] enabled``) runs, it exits with 1 at once (gateway.projections.runner_lock).
Exit codes: 0 done / stopped by a signal, 1 the store or views cannot be used, 2 bad config.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable
from zoneinfo import ZoneInfo

import anyio

from gateway.config import ConfigError, FleetConfig, load_config
from gateway.config.logsetup import configure
from gateway.commands.views import lag_table
from gateway.projections import ViewsUnavailable
from gateway.wiring import open_views
from gateway.projections import (
    VIEW_NAMES,
    ProjectionEngine,
    ProjectionError,
    ViewStoreError,
    default_projections,
    zone_lookup,
)
from gateway.projections.runner_lock import projection_runner, runner_lock_path
from gateway.store.cosmos_client import CosmosConfigError
from gateway.store.errors import StoreError
from gateway.commands._args import positive, positive_float

log = logging.getLogger("gateway.project")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "project",
        help="project the events into the views (latest reading, daily consumption, fleet)",
        description="Read the event store's feed from each projection's checkpoint and update the "
        f"views ({', '.join(VIEW_NAMES)}). Runs until SIGTERM/SIGINT unless --once.",
    )
    parser.add_argument("--config", type=Path, required=True, metavar="FILE", help="fleet config (TOML)")
    parser.add_argument("--rebuild", metavar="NAME", choices=(*VIEW_NAMES, "all"),
                        help="drop this view (or all) and its checkpoint first, and project it from the start")
    parser.add_argument("--once", action="store_true", help="drain the feed, print the lag, exit")
    parser.add_argument("--batch", type=positive, default=1000, help="events per page (default 1000)")
    parser.add_argument("--interval", type=positive_float, default=1.0,
                        help="seconds between feed reads when caught up (default 1)")
    parser.add_argument("--json", action="store_true", help="with --once: print the lag as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        fleet = load_config(args.config)
    except ConfigError as exc:
        print(f"gateway project: {exc}", file=sys.stderr)
        return 2
    configure(fleet.logging.level, fleet.logging.format)
    try:
        anyio.run(_project, fleet, args)
    except _EXPECTED as exc:
        print(f"gateway project: {exc}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:
        # The projections drain concurrently (--once): each one's failure comes in a group.
        expected, rest = group.split(_EXPECTED)
        if rest is not None or expected is None:
            raise
        for message in dict.fromkeys(str(exc) for exc in _leaves(expected)):
            print(f"gateway project: {message}", file=sys.stderr)
        return 1
    return 0


_EXPECTED = (StoreError, ViewStoreError, ProjectionError, ViewsUnavailable, CosmosConfigError)


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    return [leaf for exc in group.exceptions
            for leaf in (_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])]


async def _project(fleet: FleetConfig, args: argparse.Namespace) -> None:
    zones = zone_lookup({meter.id: meter.timezone for meter in fleet.meters})
    with projection_runner(runner_lock_path(fleet.store)):
        await _run_engine(fleet, args, zones)


async def _run_engine(fleet: FleetConfig, args: argparse.Namespace, zones: Callable[[str], ZoneInfo]) -> None:
    async with open_views(fleet.store, create=True) as (store, views):
        assert store is not None  # created with the views
        engine = ProjectionEngine(store, views, default_projections(zones), batch_size=args.batch)
        if args.rebuild != "all":
            await engine.check_store()  # views of a replaced or restored store: rebuilt
        if args.rebuild:
            for name in VIEW_NAMES if args.rebuild == "all" else (args.rebuild,):
                started = time.monotonic()
                read = await engine.rebuild(name)
                log.info("rebuilt %s from %d events in %.1f s", name, read, time.monotonic() - started)
        if args.once:
            await engine.drain_all()
            lags = [await engine.lag(name) for name in VIEW_NAMES]
            print(json.dumps([lag.to_json() for lag in lags], indent=2) if args.json else lag_table(lags))
        else:
            await _follow(engine, args.interval)


async def _follow(engine: ProjectionEngine, interval_s: float) -> None:
    log.info("projecting %s from %s into %s", ", ".join(engine.projections),
             getattr(engine.store, "path", "the store"), getattr(engine.views, "path", "the views"))
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with anyio.create_task_group() as tg:

            async def stop_on_signal() -> None:
                async for signum in signals:
                    log.info("%s: stopping", signal.Signals(signum).name)
                    tg.cancel_scope.cancel()
                    return

            async def report_lag() -> None:
                while True:
                    await anyio.sleep(60)
                    for name in engine.projections:
                        lag = await engine.lag(name)
                        log.info("lag %s: %s events, %.1f s", name, lag.events_behind, lag.seconds_behind)

            tg.start_soon(stop_on_signal)
            tg.start_soon(report_lag)
            tg.start_soon(engine.run_forever, interval_s)
    log.info("stopped at %s", datetime.now(timezone.utc).isoformat())
