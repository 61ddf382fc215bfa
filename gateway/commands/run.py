"""`gateway run --config FILE`: the long-running gateway (what the systemd unit starts).

Polls every meter of the fleet on its schedules into the configured store until SIGTERM or SIGINT.
The first signal stops new polls, lets the polls in flight finish (each within its meter deadline),
flushes the batched writer and exits 0. A second signal cancels the polls in flight at once.
With Cosmos DB as the store, polls put their events in the local outbox and a forwarder drains it to
Cosmos in the same task group; on the signal the forwarder stops and what it had not forwarded
stays in the outbox file for the next start.
SIGHUP reloads the config file (gateway.polling.fleet_reload): the polls in flight finish, then the new
fleet is polled; a config that is invalid or changes ``[store]``/``gateway_id`` is refused with an
ERROR line and the gateway goes on with the running one.
One `gateway run` per store (gateway.commands._run_lock): a second one exits 1 at once, naming the
first one's pid; `gateway poll` beside it stays allowed.
Exit codes: 0 stopped by a signal, 2 the config is invalid, 1 the store cannot be opened or another
gateway runs on it.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from pathlib import Path

import anyio

from gateway.config import ConfigError, CosmosStoreConfig, FleetConfig, load_config
from gateway.config.model import LOG_FORMATS
from gateway.polling.fleet_reload import ReloadRefused, carried_backoff, describe_changes, load_for_reload
from gateway.polling.health import HealthError
from gateway.config.logsetup import configure
from gateway.commands._run_lock import gateway_run_lock
from gateway.commands._store_check import StoreUnusable, StoreWriteWatch, check_store_file
from gateway.wiring import UnsupportedStore, open_poller
from gateway.projections.run_projections import run_projections
from gateway.polling.scheduler import Scheduler
from gateway.domain.poll_result import PollSummary
from gateway.store.errors import StoreError
from gateway.ops.metrics import RunMetrics, refresh_outbox_state, serve_metrics
from gateway.ops.sd_notify import Notifier

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
    # Until serve() listens for it, a SIGHUP (a `systemctl reload` right after the start) would kill
    # the process with its default action, which systemd counts as a clean exit.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        fleet = load_config(args.config)
    except ConfigError as exc:
        print(f"gateway run: {exc}", file=sys.stderr)
        return 2
    configure(fleet.logging.level, args.log_format or fleet.logging.format)
    with contextlib.ExitStack() as held:
        try:
            check_store_file(fleet.store)
            held.enter_context(gateway_run_lock(fleet.store))
        except (StoreError, OSError) as exc:
            log.error("cannot start: %s", exc)
            return 1
        try:
            anyio.run(serve, fleet, args.seed, args.config)
        except StoreUnusable as exc:  # the watch: writes kept failing while running
            log.error("stopped: %s", exc)
            return 1
        except (UnsupportedStore, StoreError, HealthError, OSError) as exc:
            log.error("cannot start: %s", exc)
            return 1
        except ExceptionGroup as group:  # from the task group while running
            failures, others = group.split((StoreError, HealthError, OSError))
            if failures is None or others is not None:
                raise
            log.error("stopped: %s", _first(failures))
            return 1
    return 0


def _first(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


class _Running:
    """What the signal watcher and the scheduling loop of ``serve`` share."""

    def __init__(self, fleet: FleetConfig, scheduler: Scheduler) -> None:
        self.fleet = fleet
        self.scheduler = scheduler
        self.reloaded: FleetConfig | None = None  # waiting for the polls in flight to finish
        self.stopping = False
        self.projections = anyio.CancelScope()
        self.changed = anyio.Event()  # a stop or an accepted reload, for a fleet with nothing to poll
        self.watch = StoreWriteWatch()
        self.store_failed: StoreUnusable | None = None
        self.watched(scheduler)

    def watched(self, scheduler: Scheduler) -> Scheduler:
        """``scheduler``, stopping the run when the store keeps failing to take the polls."""

        progress = scheduler.on_poll  # metrics and watchdog, when given

        def on_poll(summary: PollSummary) -> None:
            if progress is not None:
                progress(summary)
            try:
                self.watch(summary)
            except StoreUnusable as exc:
                if not self.stopping:
                    self.store_failed = exc
                    self.stopping = True
                    self.scheduler.stop()
                    self.wake()

        scheduler.on_poll = on_poll
        return scheduler

    def wake(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()


async def serve(fleet: FleetConfig, seed: int = 0, config_path: Path | None = None) -> None:
    """Poll ``fleet`` until the first SIGTERM/SIGINT, then wind down cleanly. With ``config_path``,
    SIGHUP reloads the fleet from it."""
    wanted = (signal.SIGTERM, signal.SIGINT, *((signal.SIGHUP,) if config_path is not None else ()))
    with anyio.open_signal_receiver(*wanted) as signals:
        async with open_poller(fleet) as poller:
            metrics, notifier = RunMetrics(fleet), Notifier()
            metrics.health_store, metrics.sink = poller.health, getattr(poller.history, "sink", None)

            def on_poll(summary: PollSummary) -> None:  # the scheduler's progress: metrics and watchdog
                metrics.on_poll(summary)
                notifier.progress(metrics.status_line())

            running = _Running(fleet, Scheduler(fleet, poller, seed=seed, on_poll=on_poll))
            running.scheduler.on_slot = notifier.alive
            metrics.backoff_count = lambda: sum(
                1 for m in running.fleet.meters if running.scheduler.backoff.period(m.id) > 1)
            async with anyio.create_task_group() as tg:

                async def watch_signals() -> None:
                    async for signum in signals:
                        name = signal.Signals(signum).name
                        if signum == signal.SIGHUP:
                            assert config_path is not None
                            _reload(running, config_path)
                        elif not running.stopping:
                            log.info("%s: finishing the polls in flight, then flushing and stopping", name)
                            running.stopping = True
                            notifier.stopping()
                            running.scheduler.stop()
                            running.wake()
                        else:
                            log.warning("second %s: cancelling the polls in flight", name)
                            tg.cancel_scope.cancel()

                async def projections() -> None:
                    # Started again with the new fleet after a reload (its meters' time zones, its
                    # [projections]); the old engine has stopped before the new one takes the lock.
                    while True:
                        with anyio.CancelScope() as scope:
                            running.projections = scope
                            await run_projections(running.fleet)  # returns at once unless enabled
                            await anyio.sleep_forever()

                tg.start_soon(watch_signals, name="signal watcher")
                tg.start_soon(projections, name="projections")
                tg.start_soon(refresh_outbox_state, metrics, name="outbox state for STATUS=")
                if fleet.metrics.enabled:
                    await tg.start(serve_metrics, metrics, name="metrics")
                notifier.ready(metrics.status_line())
                log.info("gateway %s: polling %d meters into %s", fleet.gateway_id, len(fleet.meters),
                         _describe_store(fleet))
                epoch = None
                while True:
                    await running.scheduler.run(epoch)
                    epoch = running.scheduler.epoch  # a reloaded fleet stays on the same slot grid
                    if running.reloaded is None and not running.stopping:
                        # Every schedule is disabled: nothing to poll, but a reload may change that.
                        log.warning("no schedule is enabled: nothing to poll; waiting for SIGHUP or SIGTERM")
                        await running.changed.wait()
                    if running.stopping:
                        break
                    previous, old_fleet = running.scheduler, running.fleet
                    assert running.reloaded is not None
                    running.fleet, running.reloaded = running.reloaded, None
                    metrics.fleet = running.fleet
                    logging.getLogger().setLevel(running.fleet.logging.level)
                    poller.use_fleet(running.fleet)
                    running.scheduler = running.watched(Scheduler(running.fleet, poller, seed=seed, on_poll=on_poll))
                    running.scheduler.on_slot = notifier.alive
                    running.scheduler.backoff = carried_backoff(previous.backoff, old_fleet, running.fleet)
                    running.projections.cancel()
                    log.info("config reloaded: polling %d meters", len(running.fleet.meters))
                tg.cancel_scope.cancel()  # the jobs have ended: stop the signal watcher and projections
        if running.store_failed is not None:
            raise running.store_failed
        if isinstance(fleet.store, CosmosStoreConfig):
            log.info("stopped: events in the outbox, forwarder stopped, store closed")
        else:
            log.info("stopped: writer flushed, store closed")


def _reload(running: _Running, config_path: Path) -> None:
    """SIGHUP: check the config file; if it can replace the running one, let the polls in flight
    finish (the scheduling loop then starts the new fleet)."""
    if running.stopping:
        log.warning("SIGHUP: stopping already, config not reloaded")
        return
    try:
        new = load_for_reload(config_path, running.fleet)
    except ReloadRefused as exc:
        going_on = ("the one reloaded before stays pending" if running.reloaded is not None
                    else "going on with the running one")
        log.error("SIGHUP: config %s not reloaded, %s: %s", config_path, going_on, exc)
        return
    log.info("SIGHUP: reloading %s (%s); the polls in flight finish first",
             config_path, describe_changes(running.fleet, new))
    if new.logging.format != running.fleet.logging.format:
        log.warning("SIGHUP: [logging] format changed: it takes effect at the next start (the level now)")
    running.reloaded = new
    running.scheduler.stop(finish_retries=True)  # a reload is no reason to give up on a meter
    running.wake()


def _describe_store(fleet: FleetConfig) -> str:
    store = fleet.store
    if isinstance(store, CosmosStoreConfig):
        return f"Cosmos DB {store.endpoint} ({store.database}/{store.container}) through the outbox {store.outbox_path}"
    return str(store.path)
