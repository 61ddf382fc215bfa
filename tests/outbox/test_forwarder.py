"""Forwarder from a real outbox file to a real SQLite far store, through outages, lost
acknowledgements, a crash right after the far append, and events the far store refuses for good."""
from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from gateway.history.outbox import Outbox
from gateway.history.outbox_forwarder import Forwarder
from gateway.store.errors import StoreUnavailable
from gateway.store.sqlite import SqliteEventStore
from tests.backends import opened_sqlite
from tests.builders import ids, reading
from tests.outbox import Crash, FaultyStore

pytestmark = pytest.mark.anyio

STREAMS = [f"meter-{m}:2026" for m in range(4)]
GUARD_S = 20.0  # a guard against a hang, not a performance assertion


@pytest.fixture
async def far(tmp_path: Path) -> AsyncIterator[SqliteEventStore]:
    async with opened_sqlite(tmp_path / "far.sqlite3") as store:
        yield store


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    box = await Outbox.open(tmp_path / "outbox.sqlite3", 10_000_000)
    yield box
    await box.aclose()


def expected_streams(count: int) -> dict[str, list[str]]:
    """Event ``e{i}`` goes to stream ``i % len(STREAMS)``; per stream in increasing i."""
    out: dict[str, list[str]] = {s: [] for s in STREAMS}
    for i in range(count):
        out[STREAMS[i % len(STREAMS)]].append(f"e{i}")
    return out


async def far_streams(far: SqliteEventStore) -> dict[str, list[str]]:
    return {s.stream_id: ids(await far.load(s.stream_id)) for s in await far.list_streams()}


async def test_outage_then_recovery_loses_nothing_duplicates_nothing_keeps_order(
    outbox: Outbox, far: SqliteEventStore
) -> None:
    faulty = FaultyStore(far)
    forwarder = Forwarder(outbox, faulty, max_events_per_append=7, backoff_initial_s=0.01,
                          backoff_max_s=0.05, idle_wait_s=0.05)
    count = 200
    with anyio.fail_after(GUARD_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(forwarder.run)
            for i in range(count // 2):  # forwarded as they come
                await outbox.put(STREAMS[i % len(STREAMS)], [reading(f"e{i}")])
            faulty.down = True
            for i in range(count // 2, count):  # put during the outage
                await outbox.put(STREAMS[i % len(STREAMS)], [reading(f"e{i}")])
            await faulty.failures_seen.wait()  # the forwarder has been failing for a while
            assert (await outbox.state()).depth > 0
            faulty.down = False
            while (await outbox.state()).depth:
                await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
    assert await far_streams(far) == expected_streams(count)
    state = await outbox.state()
    assert (state.depth, state.bytes, state.poisoned) == (0, 0, 0)
    assert forwarder.metrics.forwarded == count and forwarder.metrics.unavailable >= 1


@pytest.mark.parametrize("grow", [False, True], ids=["same-batch", "batch-grew"])
async def test_lost_acknowledgement_does_not_duplicate(
    outbox: Outbox, far: SqliteEventStore, grow: bool
) -> None:
    faulty = FaultyStore(far)
    forwarder = Forwarder(outbox, faulty)
    await outbox.put(STREAMS[0], [reading("e0"), reading("e4")])
    await outbox.put(STREAMS[1], [reading("e1")])
    faulty.lose_acks = 1
    with pytest.raises(StoreUnavailable, match="lost acknowledgement"):
        await forwarder.drain_once()
    assert (await outbox.state()).depth == 3  # not known to be stored, so still pending
    if grow:  # the retry's batch differs from the lost one: the store sees a conflict, not a retry
        await outbox.put(STREAMS[0], [reading("e8")])
    report = await forwarder.drain_once()
    assert (report.forwarded, report.already_stored) == ((1, 3) if grow else (0, 3))
    assert faulty.id_conflicts == 0
    assert await far_streams(far) == {
        STREAMS[0]: ["e0", "e4", "e8"] if grow else ["e0", "e4"], STREAMS[1]: ["e1"]
    }
    assert (await outbox.state()).depth == 0


async def test_crash_between_far_append_and_local_delete_does_not_duplicate(
    tmp_path: Path, far: SqliteEventStore
) -> None:
    path = tmp_path / "crash-outbox.sqlite3"
    # Far stream meter-0 already has history written by someone else; meter-1 is new.
    await far.append(STREAMS[0], [reading("old-1"), reading("old-2")], 0)
    outbox = await Outbox.open(path, 10_000_000)
    await outbox.put(STREAMS[0], [reading("e0")])
    await outbox.put(STREAMS[1], [reading("e1"), reading("e5")])
    faulty = FaultyStore(far)
    faulty.crash_after_append = True
    with pytest.raises(Crash):
        await Forwarder(outbox, faulty).drain_once()
    await outbox.aclose()
    # A new process: no memory but the outbox file. The first append of each stream landed.
    outbox = await Outbox.open(path, 10_000_000)
    await outbox.put(STREAMS[1], [reading("e5"), reading("e9")])  # the poller re-reads, then a new fact
    report = await Forwarder(outbox, faulty).drain_once()
    assert (report.already_stored, report.forwarded, report.poisoned) == (3, 1, 0)
    assert faulty.id_conflicts == 0  # found by the recorded head, not by the store's id check
    assert await far_streams(far) == {STREAMS[0]: ["old-1", "old-2", "e0"], STREAMS[1]: ["e1", "e5", "e9"]}
    assert (await outbox.state()).depth == 0
    await outbox.aclose()


async def test_event_id_taken_by_another_far_stream_is_poisoned_and_the_stream_goes_on(
    outbox: Outbox, far: SqliteEventStore
) -> None:
    await far.append("elsewhere", [reading("e2")], 0)
    await outbox.put(STREAMS[0], [reading("e0"), reading("e1"), reading("e2"), reading("e3")])
    await outbox.put(STREAMS[0], [reading("e4")])
    report = await Forwarder(outbox, far).drain_once()
    assert (report.forwarded, report.poisoned) == (4, 1)
    assert await far_streams(far) == {"elsewhere": ["e2"], STREAMS[0]: ["e0", "e1", "e3", "e4"]}
    (poisoned,) = await outbox.poisoned()
    assert poisoned.stream_id == STREAMS[0] and poisoned.event == reading("e2")
    assert poisoned.error_type == "EventIdConflict" and "'e2'" in poisoned.reason
    state = await outbox.state()
    assert (state.depth, state.poisoned) == (0, 1)
    # A poisoned fact read again is not queued again (it would only be refused again).
    assert (await outbox.put(STREAMS[0], [reading("e2")])).already_known == 1


async def test_too_large_and_refused_events_are_isolated_and_set_aside_with_the_reason(
    outbox: Outbox, far: SqliteEventStore
) -> None:
    faulty = FaultyStore(far)
    faulty.max_event_bytes = 1_000
    faulty.refuse_type = "Unstorable"
    stream = STREAMS[0]
    await outbox.put(stream, [reading(f"e{i}") for i in range(6)])
    await outbox.put(stream, [reading("big", pad=5_000)])
    await outbox.put(stream, [reading(f"e{i}") for i in range(6, 12)])
    await outbox.put(stream, [reading("bad", type_="Unstorable")])
    await outbox.put(stream, [reading(f"e{i}") for i in range(12, 15)])
    await outbox.put(STREAMS[1], [reading("other")])  # in the same rounds, not held up
    report = await Forwarder(outbox, faulty).drain_once()
    assert (report.forwarded, report.poisoned) == (16, 2)
    assert await far_streams(far) == {stream: [f"e{i}" for i in range(15)], STREAMS[1]: ["other"]}
    poisoned = {p.event.event_id: p for p in await outbox.poisoned()}
    assert poisoned["big"].error_type == "AppendTooLarge" and "exceeds the limit" in poisoned["big"].reason
    assert poisoned["bad"].error_type == "ValueError" and "Unstorable" in poisoned["bad"].reason
    state = await outbox.state()
    assert (state.depth, state.poisoned) == (0, 2)


async def test_run_waits_for_puts_and_stops_when_cancelled(outbox: Outbox, far: SqliteEventStore) -> None:
    forwarder = Forwarder(outbox, far, idle_wait_s=10.0)  # only a put can wake it in time
    with anyio.fail_after(GUARD_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(forwarder.run)
            await anyio.sleep(0.05)
            await outbox.put(STREAMS[2], [reading("e2")])
            while (await outbox.state()).depth:
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    assert await far_streams(far) == {STREAMS[2]: ["e2"]}
