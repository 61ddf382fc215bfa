"""The outbox file on its own: durable puts in order, idempotency by event id, the size bound and its
alarm, bad input. Real SQLite files; the far store (where one is needed) is a real SqliteEventStore."""
from __future__ import annotations

import logging
import sqlite3
from datetime import datetime
from pathlib import Path

import pytest

from gateway.history.outbox import Outbox, OutboxFull
from gateway.history.outbox_forwarder import Forwarder
from gateway.store.errors import EventIdConflict, StoreUnavailable
from gateway.store.model import EventMetadata, NewEvent
from gateway.store.sqlite import SqliteEventStore
from tests.builders import ids, reading

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_put_is_durable_ordered_per_stream_and_reported_in_state(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "outbox.sqlite3"
    async with await Outbox.open(path, 1_000_000, clock=clock) as outbox:
        assert (await outbox.put("m1:2026", [reading("a1"), reading("a2")])).queued == 2
        clock.now += 10
        await outbox.put("m2:2026", [reading("b1")])
        await outbox.put("m1:2026", [reading("a3")])
        clock.now += 5
        state = await outbox.state()
        assert (state.depth, state.full, state.poisoned, state.oldest_age_s) == (4, False, 0, 15.0)
        assert state.bytes > 0 and state.max_bytes == 1_000_000
    # Reopened as after a restart: everything is still there, in order, decoded as it went in.
    async with await Outbox.open(path, 1_000_000, clock=clock) as outbox:
        assert ids(await outbox.pending("m1:2026")) == ["a1", "a2", "a3"]
        assert await outbox.pending("m2:2026") == [reading("b1")]
        assert (await outbox.state()).depth == 4
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


async def test_an_event_id_already_pending_or_forwarded_is_not_queued_twice(tmp_path: Path) -> None:
    far = await SqliteEventStore.open(tmp_path / "far.sqlite3")
    async with await Outbox.open(tmp_path / "outbox.sqlite3", 1_000_000) as outbox:
        await outbox.put("m1:2026", [reading("a1"), reading("a2")])
        again = await outbox.put("m1:2026", [reading("a2"), reading("a3")])
        assert (again.queued, again.already_known) == (1, 1)
        await Forwarder(outbox, far).drain_once()
        # Read again after forwarding (a catch-up re-read): the known fact is dropped, the new kept.
        after = await outbox.put("m1:2026", [reading("a1"), reading("a4")])
        assert (after.queued, after.already_known) == (1, 1)
        await Forwarder(outbox, far).drain_once()
        assert ids(await far.load("m1:2026")) == ["a1", "a2", "a3", "a4"]
        assert (await outbox.state()).depth == 0
    await far.aclose()


async def test_a_forgotten_forwarded_id_is_recognised_in_the_far_stream(tmp_path: Path) -> None:
    # Past the retention the outbox no longer remembers a1; the forwarder finds it in the far
    # stream (the store refuses the id as a conflict) and drops it instead of setting it aside.
    clock = Clock()
    far = await SqliteEventStore.open(tmp_path / "far.sqlite3")
    async with await Outbox.open(
        tmp_path / "outbox.sqlite3", 1_000_000, forwarded_retention_s=3600, clock=clock
    ) as outbox:
        await outbox.put("m1:2026", [reading("a1")])
        await Forwarder(outbox, far).drain_once()
        clock.now += 7200
        await outbox.put("m1:2026", [reading("a2")])
        await Forwarder(outbox, far).drain_once()  # this settle prunes a1's id
        assert (await outbox.put("m1:2026", [reading("a1"), reading("a3")])).queued == 2
        report = await Forwarder(outbox, far).drain_once()
        assert (report.forwarded, report.already_stored, report.poisoned) == (1, 1, 0)
        assert ids(await far.load("m1:2026")) == ["a1", "a2", "a3"]
        assert (await outbox.state()).poisoned == 0
    await far.aclose()


async def test_full_outbox_refuses_whole_puts_alarms_once_and_accepts_after_draining(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    far = await SqliteEventStore.open(tmp_path / "far.sqlite3")
    caplog.set_level(logging.INFO, logger="gateway.history.outbox")
    async with await Outbox.open(tmp_path / "outbox.sqlite3", 4_000) as outbox:
        queued = 0
        with pytest.raises(OutboxFull) as refused:
            for i in range(100):
                await outbox.put(f"m{i % 3}:2026", [reading(f"e{i}", pad=300)])
                queued += 1
        assert 5 < queued < 100
        assert isinstance(refused.value, StoreUnavailable)  # callers retrying on outages may retry
        assert refused.value.limit == 4_000 and refused.value.stream_id == f"m{queued % 3}:2026"
        state = await outbox.state()
        assert state.full and state.depth == queued and state.bytes <= 4_000
        # Refused whole: a put of two events, one of them tiny, stores neither.
        with pytest.raises(OutboxFull):
            await outbox.put("m0:2026", [reading("tiny"), reading("big", pad=3000)])
        assert (await outbox.state()).depth == queued
        alarms = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(alarms) == 1 and "FULL" in alarms[0].getMessage()

        await Forwarder(outbox, far).drain_once()
        state = await outbox.state()
        assert (state.full, state.depth, state.bytes) == (False, 0, 0)
        assert any(r.levelno == logging.WARNING and "accepts events again" in r.getMessage()
                   for r in caplog.records)
        assert (await outbox.put("m0:2026", [reading("tiny"), reading("big", pad=3000)])).queued == 2
        stored = [e for s in ("m0:2026", "m1:2026", "m2:2026") for e in await far.load(s)]
        assert sorted(ids(stored), key=lambda i: int(i[1:])) == [f"e{i}" for i in range(queued)]
    await far.aclose()


async def test_the_full_alarm_is_the_files_every_process_sees_it_and_it_is_raised_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # `gateway status` (and `gateway poll`) open the outbox beside `gateway run`: the alarm and the
    # refusals are in the file, not in the memory of the process that was refused.
    path = tmp_path / "outbox.sqlite3"
    far = await SqliteEventStore.open(tmp_path / "far.sqlite3")
    caplog.set_level(logging.INFO, logger="gateway.history.outbox")
    async with await Outbox.open(path, 4_000) as running, await Outbox.open(path, 4_000) as beside:
        for i in range(10):
            await running.put("m1:2026", [reading(f"e{i}", pad=180)])
        used = (await running.state()).bytes
        assert used < 4_000  # room left, but not for the next puts: the bound is not reached
        assert not (await beside.state()).full
        for i in range(3):
            with pytest.raises(OutboxFull):
                await running.put("m1:2026", [reading(f"r{i}", pad=600)])
        seen = await beside.state()  # beside has not been refused itself
        assert seen.full and seen.bytes == used
        assert seen.refused_puts == 3 and seen.full_since is not None
        with pytest.raises(OutboxFull):
            await beside.put("m2:2026", [reading("b0", pad=600)])
        assert (await beside.state()).refused_puts == 4
        async with await Outbox.open(path, 4_000) as fresh:  # a process started now
            assert ((await fresh.state()).full, (await fresh.state()).refused_puts) == (True, 4)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "FULL" in errors[0].getMessage()

        await Forwarder(running, far).drain_once()
        cleared = await beside.state()
        assert (cleared.full, cleared.full_since, cleared.refused_puts) == (False, None, 4)
        accepting = [r for r in caplog.records if "accepts events again" in r.getMessage()]
        assert [r.levelno for r in accepting] == [logging.WARNING]
    # Reopened as after a restart: the counter stays, the alarm stays off.
    async with await Outbox.open(path, 4_000) as reopened:
        state = await reopened.state()
        assert (state.full, state.refused_puts, state.depth) == (False, 4, 0)
    await far.aclose()


async def test_after_a_restart_with_a_larger_bound_the_first_put_ends_the_alarm(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    async with await Outbox.open(path, 4_000) as outbox:
        with pytest.raises(OutboxFull):
            for i in range(100):
                await outbox.put("m1:2026", [reading(f"e{i}", pad=300)])
        assert (await outbox.state()).full
    async with await Outbox.open(path, 40_000) as bigger:  # outbox_max_mb raised in the config
        assert (await bigger.state()).full  # still on, as the file says
        await bigger.put("m1:2026", [reading("next", pad=300)])  # accepted, well below the new bound
        assert not (await bigger.state()).full
    async with await Outbox.open(path, 4_000) as smaller:
        assert (await smaller.state()).full  # over its bound: full before any refusal


async def test_bad_puts_get_typed_errors_and_store_nothing(tmp_path: Path) -> None:
    async with await Outbox.open(tmp_path / "outbox.sqlite3", 1_000_000) as outbox:
        await outbox.put("m1:2026", [reading("a1")])
        with pytest.raises(EventIdConflict, match="a1"):
            await outbox.put("m2:2026", [reading("b1"), reading("a1")])
        naive = NewEvent("n1", "RegisterRead", 1, {"at": datetime(2026, 1, 1)},
                         EventMetadata("gw", datetime(2026, 1, 1)))
        with pytest.raises(ValueError, match="naive"):
            await outbox.put("m1:2026", [naive])
        with pytest.raises(ValueError, match="twice"):
            await outbox.put("m1:2026", [reading("d"), reading("d")])
        with pytest.raises(ValueError, match="at least one"):
            await outbox.put("m1:2026", [])
        with pytest.raises(ValueError, match="stream id"):
            await outbox.put("", [reading("x")])
        assert ids(await outbox.pending("m1:2026")) == ["a1"]
        assert await outbox.pending("m2:2026") == []
    with pytest.raises(ValueError, match="max_bytes"):
        await Outbox.open(tmp_path / "other.sqlite3", 0)
