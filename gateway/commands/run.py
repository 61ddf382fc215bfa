"""`gateway run --config FILE`: the long-running gateway (what the systemd unit starts).

Polls every meter of the fleet on its schedules into the configured store until SIGTERM or SIGINT.
The first signal stops new polls, lets the polls in flight finish (each within its meter deadline),
flushes the batched writer and exits 0. A second signal cancels the polls in flight at once.
With Cosmos DB as the store, polls put their events in the local outbox and a forwarder drains it to
Cosmos in the same task group; on the signal the forwarder stops and what it had not forwarded
stays in the outbox file for the next start.
Exit codes: 0 stopped by a signal, 2 the config is invalid, 1 the store cannot be opened.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import anyio

from gateway.config import ConfigError, CosmosStoreConfig, FleetConfig, load_config
from gateway.config.model import LOG_FORMATS
from gateway.health import HealthError
from gateway.logsetup import configure
from gateway.wiring import UnsupportedStore, open_poller
from gateway.run_projections import run_projections
from gateway.scheduler import Scheduler
from gateway.store.errors import StoreError

log = logging.getLogger("gateway.run")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "run",
        help="poll the fleet on its schedules until SIGTERM/SIGINT",
        description="Run the gateway: poll every meter of the fleet config on its schedules and store "
        "what is read. SIGTERM or SIGINT finishes the polls in flight, flushes, and exits 0.",
    )
    parser.add_argument("--config", type=Path, required=True, metavar="FILE", help="fleet config (TOML)")
    parser.add_argument("--log-format", choices=LOG_FORMATS, help="log format (default: the config's [logging])")
    parser.add_argument("--seed", type=int, default=0, help="seed of the poll-spreading jitter (default 0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        fleet = load_config(args.config)
    except ConfigError as exc:
        print(f"gateway run: {exc}", file=sys.stderr)
        return 2
    configure(fleet.logging.level, args.log_format or fleet.logging.format)
    try:
        anyio.run(serve, fleet, args.seed)
    except (UnsupportedStore, StoreError, HealthError, OSError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    return 0


async def serve(fleet: FleetConfig, seed: int = 0) -> None:
    """Poll ``fleet`` until the first SIGTERM/SIGINT, then wind down cleanly."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with open_poller(fleet) as poller:
            scheduler = Scheduler(fleet, poller, seed=seed)
            async with anyio.create_task_group() as tg:

                async def watch_signals() -> None:
                    async for signum in signals:
                        if not scheduler.stopping:
                            log.info("%s: finishing the polls in flight, then flushing and stopping",
                                     signal.Signals(signum).name)
                            scheduler.stop()
                        else:
                            log.warning("second %s: cancelling the polls in flight", signal.Signals(signum).name)
                            tg.cancel_scope.cancel()

                tg.start_soon(watch_signals, name="signal watcher")
                tg.start_soon(run_projections, fleet, name="projections")  # no-op unless enabled
                log.info("gateway %s: polling %d meters into %s", fleet.gateway_id, len(fleet.meters),
                         _describe_store(fleet))
                await scheduler.run()
                tg.cancel_scope.cancel()  # the jobs have ended: stop the signal watcher and projections
        if isinstance(fleet.store, CosmosStoreConfig):
            log.info("stopped: events in the outbox, forwarder stopped, store closed")
        else:
            log.info("stopped: writer flushed, store closed")


def _describe_store(fleet: FleetConfig) -> str:
    store = fleet.store
    if isinstance(store, CosmosStoreConfig):
        return f"Cosmos DB {store.endpoint} ({store.database}/{store.container}) through the outbox {store.outbox_path}"
    return str(store.path)
