"""Projection engine: exactly-once effect across a crash, rebuilds, racing engines, lag."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import anyio
import pytest

import gateway
from gateway.projections import VIEW_NAMES, EngineHooks, UnknownProjection, ViewStore
from gateway.store.base import EventStore
from tests.cosmos_fixture import cosmos_server  # noqa: F401  (fixture)
from tests.projections import (
    Backend,
    cosmos_backend,
    append_polls,
    engine_for,
    interleave,
    meter_polls,
    snapshot,
    sqlite_backend,
)

REPO_ROOT = Path(gateway.__file__).resolve().parent.parent
METERS = ("m-001", "m-002", "m-003")
# Three days around the spring DST change in Copenhagen, starting at local midnight (UTC+1).
START = datetime(2026, 3, 27, 23, 0, tzinfo=timezone.utc)


@pytest.fixture(params=["sqlite", pytest.param("cosmos", marks=pytest.mark.cosmos)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "cosmos":
        yield cosmos_backend(request.getfixturevalue("cosmos_server"))
    else:
        yield sqlite_backend(tmp_path)


async def _fill(backend: Backend, hours: int = 72) -> int:
    async with backend.session() as (store, _views):
        return await append_polls(store, interleave(*(meter_polls(m, START, hours) for m in METERS)))


async def _reference(backend: Backend) -> dict:
    """The views of one clean, uninterrupted run, in a views store of their own."""
    async with backend.session("reference") as (store, views):
        await engine_for(store, views, METERS, batch_size=1000).drain_all()
        return await snapshot(views)


_CRASHING_RUN = textwrap.dedent("""
    import json, os, signal, sys
    import anyio
    from gateway.projections import EngineHooks
    from tests.projections import engine_for, open_from_spec

    spec, kill_at, meters = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(",")

    async def die_after_views(projection: str, batch: int) -> None:
        if batch == kill_at:
            # The views of this batch are saved, its checkpoint is not: die as a power cut would.
            os.kill(os.getpid(), signal.SIGKILL)

    async def main() -> None:
        store, views = await open_from_spec(spec)
        engine = engine_for(store, views, meters, batch_size=40,
                            hooks=EngineHooks(after_views_saved=die_after_views))
        for name in ("latest_reading", "daily_consumption", "fleet_overview"):
            await engine.drain(name)

    anyio.run(main)
""")


async def _applied_beyond_checkpoint(store: EventStore, views: ViewStore, name: str) -> bool:
    """Whether a document of the view ``name`` (keyed by meter) already holds an event that comes
    after the projection's checkpoint: the state a crash between the two saves leaves."""
    checkpoint = await views.load_checkpoint(name)
    page = await store.read_all(checkpoint.position, limit=40)
    for recorded in page.events:
        meter = recorded.data["meterId"]
        doc = (await views.get_many(name, {meter: meter})).get(meter)
        if doc is not None and doc.applied.get(recorded.stream_id, 0) >= recorded.version:
            return True
    return False


@pytest.mark.slow
@pytest.mark.anyio
async def test_killed_between_views_and_checkpoint_then_restarted_views_are_as_if_run_once(
    backend: Backend,
) -> None:
    await _fill(backend)
    expected = await _reference(backend)

    killed = subprocess.run(
        [sys.executable, "-c", _CRASHING_RUN, json.dumps(backend.spec("views")), "3", ",".join(METERS)],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, timeout=60,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    async with backend.session() as (store, views):
        # The crash window was hit: batch 3 of the first projection is in its views, and its
        # checkpoint is still before that batch.
        assert await _applied_beyond_checkpoint(store, views, "latest_reading")
        engine = engine_for(store, views, METERS, batch_size=40)
        await engine.drain_all()
        assert engine.stats["latest_reading"].skipped_duplicates > 0  # batch 3 came again
        assert await snapshot(views) == expected


@pytest.mark.slow
@pytest.mark.anyio
async def test_crash_after_views_saved_in_process_is_repaired_on_restart(backend: Backend) -> None:
    await _fill(backend, hours=24)
    expected = await _reference(backend)

    class Crash(Exception):
        pass

    async def crash(projection: str, batch: int) -> None:
        if batch == 2:
            raise Crash(projection)

    async with backend.session() as (store, views):
        for name in VIEW_NAMES:
            with pytest.raises(Crash):
                await engine_for(store, views, METERS, batch_size=25,
                                 hooks=EngineHooks(after_views_saved=crash)).drain(name)
        restarted = engine_for(store, views, METERS, batch_size=25)
        await restarted.drain_all()
        assert all(restarted.stats[name].skipped_duplicates > 0 for name in VIEW_NAMES)
        assert await snapshot(views) == expected


@pytest.mark.slow
@pytest.mark.anyio
async def test_rebuild_gives_identical_views(backend: Backend) -> None:
    await _fill(backend, hours=48)
    async with backend.session() as (store, views):
        engine = engine_for(store, views, METERS, batch_size=64)
        await engine.drain_all()
        before = await snapshot(views)
        for name in VIEW_NAMES:
            read = await engine.rebuild(name)
            assert read == (await views.load_checkpoint(name)).events_seen > 0
        assert await snapshot(views) == before
        with pytest.raises(UnknownProjection):
            await engine.rebuild("no_such_view")


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_stale_save_conflicts_and_is_reapplied_without_loss(backend: Backend) -> None:
    """Engine A reads documents, engine B saves them meanwhile, A's save conflicts and re-applies."""
    await _fill(backend, hours=24)
    expected = await _reference(backend)
    a_has_read = anyio.Event()
    b_done = anyio.Event()

    async def pause_first_save(projection: str, batch: int) -> None:
        if batch == 1 and not b_done.is_set():
            a_has_read.set()
            await b_done.wait()

    async with backend.session() as (store_a, views_a), backend.session() as (store_b, views_b):
        slow = engine_for(store_a, views_a, METERS, batch_size=50,
                          hooks=EngineHooks(before_save=pause_first_save))
        fast = engine_for(store_b, views_b, METERS, batch_size=50)

        async def run_fast() -> None:
            await a_has_read.wait()
            await fast.drain_all()
            b_done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(run_fast)
            tg.start_soon(slow.drain_all)
        assert all(slow.stats[name].conflicts > 0 for name in VIEW_NAMES)
        assert await snapshot(views_a) == expected


@pytest.mark.slow
@pytest.mark.anyio
async def test_two_engines_racing_on_the_same_views_lose_nothing(backend: Backend) -> None:
    await _fill(backend, hours=48)
    expected = await _reference(backend)
    async with backend.session() as (store_a, views_a), backend.session() as (store_b, views_b):
        engines = [engine_for(store_a, views_a, METERS, batch_size=7),
                   engine_for(store_b, views_b, METERS, batch_size=11)]
        async with anyio.create_task_group() as tg:
            for engine in engines:
                tg.start_soon(engine.drain_all)
        assert await snapshot(views_a) == expected
        # Both really worked on the views (not one after the other finished).
        assert all(sum(s.applied for s in e.stats.values()) > 0 for e in engines)


@pytest.mark.anyio
async def test_lag_counts_events_and_seconds_behind(backend: Backend) -> None:
    total = await _fill(backend, hours=24)
    # SQLite counts the events after the checkpoint; the Cosmos change feed cannot, so only
    # seconds behind are reported there.
    counts = backend.name == "sqlite"
    async with backend.session() as (store, views):
        first = (await store.read_all(None, limit=1)).events[0]
        now = first.metadata.recorded_at + timedelta(days=2)  # after the last event
        engine = engine_for(store, views, METERS, batch_size=20, clock=lambda: now)

        lag = await engine.lag("fleet_overview")
        assert (lag.events_behind, lag.seconds_behind) == (total if counts else None, 2 * 86400.0)

        await engine.step("fleet_overview")
        await engine.step("fleet_overview")
        checkpoint = await views.load_checkpoint("fleet_overview")
        next_event = (await store.read_all(checkpoint.position, limit=1)).events[0]
        lag = await engine.lag("fleet_overview")
        assert lag.events_behind == (total - 40 if counts else None)
        assert lag.seconds_behind == (now - next_event.metadata.recorded_at).total_seconds() > 0

        await engine.drain("fleet_overview")
        lag = await engine.lag("fleet_overview")
        assert (lag.events_behind, lag.seconds_behind) == (0 if counts else None, 0.0)
        assert (await engine.lag("latest_reading")).seconds_behind == 2 * 86400.0  # its own checkpoint
