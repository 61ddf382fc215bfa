"""The read side inside `gateway run`: the projection engine as one more task of the running gateway.

With ``[projections] enabled = true`` in the fleet config, ``gateway run`` starts ``run_projections``
in its task group, next to the scheduler: the views (latest reading, daily consumption, fleet
overview) follow the event store as a separate ``gateway project --config FILE`` would, over the same
store (SQLite: the views file next to it; Cosmos DB: its views container). Cancelling the task
(the gateway's SIGTERM handling cancels its task group) stops it anywhere: the engine is exactly once
in effect, so the next start goes on from the saved checkpoints.

The views must never cost the fleet its polls: a store or view store that fails is logged and the
engine is started again after a backoff, while polling goes on. So is a ``gateway project`` running
over the same store (one runner per store, gateway.projections.runner_lock): the gateway's own
projections take over once it has stopped.
"""
from __future__ import annotations

import logging

import anyio

from gateway.projections import ViewsUnavailable
from gateway.wiring import open_views
from gateway.config.model import FleetConfig
from gateway.projections import ProjectionEngine, ProjectionError, ViewStoreError, default_projections, zone_lookup
from gateway.projections.runner_lock import ProjectionRunnerBusy, projection_runner, runner_lock_path
from gateway.store.errors import StoreError

log = logging.getLogger("gateway.run.projections")

# Failures expected in operation (an outage, a conflict storm, a view store not reachable yet): logged
# without a traceback. Anything else is logged with one; both are retried.
_EXPECTED = (StoreError, ViewStoreError, ProjectionError, ViewsUnavailable, OSError)


async def run_projections(fleet: FleetConfig, *, retry_initial_s: float = 1.0, retry_max_s: float = 60.0) -> None:
    """Keep the fleet's views up to date until cancelled; returns at once when projections are disabled.

    Any failure is logged and the engine restarts after a backoff doubling from ``retry_initial_s`` up
    to ``retry_max_s``: the expected ones (an outage, a view store not reachable yet) in one line,
    anything else with its traceback. It never propagates: it would stop the gateway's polls."""
    settings = fleet.projections
    if not settings.enabled:
        return
    zones = zone_lookup({meter.id: meter.timezone for meter in fleet.meters})
    backoff = retry_initial_s
    busy_said = False
    while True:
        started = anyio.current_time()
        try:
            with projection_runner(runner_lock_path(fleet.store)):
                busy_said = False
                async with open_views(fleet.store, create=True) as (store, views):
                    assert store is not None  # open_views creates the event store along with the views
                    engine = ProjectionEngine(store, views, default_projections(zones), batch_size=settings.batch_size)
                    await engine.check_store()  # views of a replaced or restored store: rebuilt
                    log.info("projecting %s into %s every %g s", ", ".join(engine.projections),
                             getattr(views, "path", "the views"), settings.interval_s)
                    await engine.run_forever(settings.interval_s)
        except* Exception as group:
            # A run that went well for a while starts the backoff over: the failure is a new one.
            if anyio.current_time() - started > retry_max_s:
                backoff = retry_initial_s
            for exc in group.exceptions:
                if isinstance(exc, ProjectionRunnerBusy):
                    # An operator's `gateway project` runs the views for now: say so once, not at
                    # every retry for as long as it runs.
                    if not busy_said:
                        log.warning("projections paused: %s; retrying every %g s at most", exc, retry_max_s)
                    busy_said = True
                    continue
                busy_said = False
                log.error("projections stopped: %s; restarting in %.1f s (polling goes on)", exc, backoff,
                          exc_info=None if isinstance(exc, _EXPECTED) else exc)
        await anyio.sleep(backoff)
        backoff = min(backoff * 2, retry_max_s)


__all__ = ["run_projections"]
