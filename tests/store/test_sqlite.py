"""SQLite backend specifics beyond the shared contract: durability settings, constraints, one
transaction per batch, round-trip counting and how database failures surface."""
from __future__ import annotations

import sqlite3
import uuid
from datetime import datetime
from pathlib import Path

import anyio
import pytest

from gateway.store import (
    NO_STREAM,
    AppendRequest,
    EventIdConflict,
    EventStore,
    NewEvent,
    StoreUnavailable,
    WrongExpectedVersion,
)
from gateway.store.base import IdentifiedStore
from gateway.store.sqlite import SqliteEventStore
from gateway.store.sqlite_backup import backup_file
from tests.builders import events, new_event

pytestmark = pytest.mark.anyio


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "events.db"  # where the ``sqlite_store`` fixture (tests/backends.py) opens


async def test_is_an_event_store(sqlite_store: SqliteEventStore) -> None:
    assert isinstance(sqlite_store, EventStore)


async def test_wal_and_synchronous_full_are_in_force(sqlite_store: SqliteEventStore, db_path: Path) -> None:
    pragmas = await sqlite_store.pragmas()
    assert pragmas["journal_mode"] == "wal"
    assert pragmas["synchronous"] == 2  # FULL
    assert pragmas["busy_timeout"] == 5000
    # WAL is a property of the file, so any other connection sees it too.
    with sqlite3.connect(db_path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_unique_constraints_hold_in_the_file(sqlite_store: SqliteEventStore, db_path: Path) -> None:
    first = events(1)
    await sqlite_store.append("m-1", first, NO_STREAM)
    raw = sqlite3.connect(db_path)
    try:
        insert = ("INSERT INTO events (stream_id, version, event_id, type, schema_version, data,"
                  " metadata) VALUES (?, ?, ?, 'T', 1, '{}', '{}')")
        with pytest.raises(sqlite3.IntegrityError, match="event_id"):
            raw.execute(insert, ("m-2", 1, first[0].event_id))
        with pytest.raises(sqlite3.IntegrityError, match="stream_id, events.version"):
            raw.execute(insert, ("m-1", 1, "another-id"))
        with pytest.raises(sqlite3.IntegrityError, match="streams.stream_id"):
            raw.execute("INSERT INTO streams (stream_id, head) VALUES ('m-1', 5)")
    finally:
        raw.close()


async def test_batch_is_one_transaction_and_a_refused_request_keeps_the_others(
    sqlite_store: SqliteEventStore,
) -> None:
    await sqlite_store.append("m-bad", events(1), NO_STREAM)
    before = sqlite_store.stats.writes
    requests = [
        AppendRequest("m-a", NO_STREAM, events(2)),
        AppendRequest("m-bad", NO_STREAM, events(3)),
        AppendRequest("m-b", NO_STREAM, events(3)),
    ]
    # Other tasks append at the same time; none of their events may land inside the batch.
    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(sqlite_store.append, f"m-other-{i}", events(2), NO_STREAM)
        tg.start_soon(sqlite_store.append_batch, requests)

    page = await sqlite_store.read_all()
    batch_ids = {e.event_id for r in (requests[0], requests[2]) for e in r.events}
    positions = [e.position for e in page.events if e.event_id in batch_ids]
    assert len(positions) == 5
    assert positions == list(range(positions[0], positions[0] + 5))
    assert await sqlite_store.head("m-a") == 2
    assert await sqlite_store.head("m-b") == 3
    assert await sqlite_store.head("m-bad") == 1
    assert sqlite_store.stats.writes - before == 6  # the batch was one round trip


async def test_stats_count_round_trips(sqlite_store: SqliteEventStore) -> None:
    outcomes = await sqlite_store.append_batch(
        [AppendRequest(f"m-{i}", NO_STREAM, events(2)) for i in range(4)]
    )
    assert all(o.error is None for o in outcomes)
    await sqlite_store.append("m-0", events(1), 2)
    await sqlite_store.head("m-0")
    await sqlite_store.load("m-1")
    await sqlite_store.read_all()
    stats = sqlite_store.stats
    assert (stats.writes, stats.appends, stats.reads) == (2, 5, 3)


async def test_locked_database_is_store_unavailable_and_nothing_is_written(db_path: Path) -> None:
    store = await SqliteEventStore.open(db_path, busy_timeout=0.05)
    try:
        await store.append("m-1", events(1), NO_STREAM)
        blocker = sqlite3.connect(db_path, isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            with pytest.raises(StoreUnavailable, match="locked"):
                await store.append("m-1", events(2), 1)
            with pytest.raises(StoreUnavailable):
                await store.append_batch([AppendRequest("m-2", NO_STREAM, events(1))])
            # WAL readers are not blocked by a writer.
            assert await store.head("m-1") == 1
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        # The store recovers once the lock is gone: the same append now goes through.
        result = await store.append("m-1", events(2), 1)
        assert result.last_version == 3
        assert await store.head("m-2") == NO_STREAM
    finally:
        await store.aclose()


async def test_unopenable_file_is_store_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="cannot open"):
        await SqliteEventStore.open(tmp_path / "no-such-dir" / "events.db")


async def test_closed_store_is_unavailable(db_path: Path) -> None:
    store = await SqliteEventStore.open(db_path)
    await store.aclose()
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.head("m-1")


async def test_positions_are_never_reused_after_delete(db_path: Path) -> None:
    store = await SqliteEventStore.open(db_path)
    await store.append("m-1", events(3), NO_STREAM)
    checkpoint = (await store.read_all()).checkpoint
    await store.delete_stream("m-1")
    await store.aclose()

    # Reopened: a checkpoint taken before the delete still means "after what I have seen".
    store = await SqliteEventStore.open(db_path)
    try:
        fresh = events(2)
        await store.append("m-1", fresh, NO_STREAM)
        page = await store.read_all(checkpoint)
        assert [e.event_id for e in page.events] == [e.event_id for e in fresh]
        assert page.done
        with pytest.raises(WrongExpectedVersion):
            await store.append("m-1", events(1), NO_STREAM)
    finally:
        await store.aclose()


async def test_bad_input_is_refused_before_any_write(sqlite_store: SqliteEventStore) -> None:
    with pytest.raises(ValueError, match="twice"):
        duplicate = events(1)
        await sqlite_store.append("m-1", duplicate + duplicate, NO_STREAM)
    with pytest.raises(ValueError, match="negative"):
        await sqlite_store.append("m-1", events(1), -1)
    with pytest.raises(ValueError, match="checkpoint"):
        await sqlite_store.read_all("not-a-position")
    naive = new_event("e-naive", type="T", gateway_id="gw", recorded_at=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        await sqlite_store.append("m-1", [naive], NO_STREAM)
    assert sqlite_store.stats.writes == 0
    assert await sqlite_store.head("m-1") == NO_STREAM


async def test_event_ids_are_unique_across_streams_and_a_clash_writes_nothing(
    sqlite_store: SqliteEventStore,
) -> None:
    # The embedded store (and so the outbox in front of Cosmos) enforces event-id uniqueness
    # store-wide; the shared contract does not require it (Cosmos cannot check it without an extra
    # cross-partition query per append).
    stream, other = f"s-{uuid.uuid4().hex}", f"o-{uuid.uuid4().hex}"
    taken = events(1)[0]
    await sqlite_store.append(other, [taken], NO_STREAM)
    await sqlite_store.append(stream, events(1), NO_STREAM)
    batch = [*events(2), taken, *events(1)]
    with pytest.raises(EventIdConflict) as info:
        await sqlite_store.append(stream, batch, 1)
    assert info.value.stream_id == stream and info.value.event_id == taken.event_id
    assert [e.version for e in await sqlite_store.load(stream)] == [1]
    assert await sqlite_store.head(stream) == 1
    await sqlite_store.append(stream, batch[:2], 1)
    assert [e.event_id for e in await sqlite_store.load(stream, 2)] == [e.event_id for e in batch[:2]]


def _event(event_id: str, **data: object) -> NewEvent:
    """An event whose data names its own id (these tests check what was stored where)."""
    return new_event(event_id, data={"id": event_id, **data})


async def test_bulk_batches_keep_per_request_outcomes(sqlite_store: SqliteEventStore) -> None:
    # append_batch takes a bulk path when every expected version matches and falls back to one
    # savepoint per request otherwise; either way each request gets its own outcome.
    store = sqlite_store
    await store.append("a", [_event("id-1")], NO_STREAM)
    # The same stream twice in one batch: sequential semantics.
    out = await store.append_batch([
        AppendRequest("b", NO_STREAM, (_event("id-2"),)),
        AppendRequest("b", 1, (_event("id-3"), _event("id-4"))),
        AppendRequest("c", NO_STREAM, (_event("id-5"),)),
    ])
    assert [o.error for o in out] == [None] * 3
    assert [(o.result.first_version, o.result.last_version) for o in out if o.result] == [(1, 1), (2, 3), (1, 1)]
    # An id clash in the middle request: the others land, the clashing stream gets nothing.
    out = await store.append_batch([
        AppendRequest("d", NO_STREAM, (_event("id-6"), _event("id-7"))),
        AppendRequest("e", NO_STREAM, (_event("id-8"), _event("id-1"))),
        AppendRequest("f", NO_STREAM, (_event("id-9"),)),
    ])
    assert out[0].result and out[2].result and isinstance(out[1].error, EventIdConflict)
    assert (await store.head("d"), await store.head("e"), await store.head("f")) == (2, NO_STREAM, 1)
    # An id clash between two requests of one batch.
    out = await store.append_batch([
        AppendRequest("g", NO_STREAM, (_event("id-10"),)),
        AppendRequest("h", NO_STREAM, (_event("id-10"),)),
    ])
    assert out[0].result and isinstance(out[1].error, EventIdConflict)
    # An idempotent retry next to a stale expected version.
    out = await store.append_batch([
        AppendRequest("g", NO_STREAM, (_event("id-10"),)),
        AppendRequest("a", NO_STREAM, (_event("id-11"),)),
    ])
    assert out[0].result and out[0].result.already_done and isinstance(out[1].error, WrongExpectedVersion)
    loaded = await store.load("b")
    assert [e.version for e in loaded] == [1, 2, 3]
    assert loaded[0].data == {"id": "id-2"}


async def test_a_batch_of_many_streams_is_stored_whole(sqlite_store: SqliteEventStore) -> None:
    streams = [f"m{i}" for i in range(1200)]  # more heads than one SELECT reads
    out = await sqlite_store.append_batch([AppendRequest(s, NO_STREAM, (_event(f"{s}-1"),)) for s in streams])
    assert all(o.result for o in out)
    out = await sqlite_store.append_batch([AppendRequest(s, 1, (_event(f"{s}-2", big=2**70, text="zürich"),)) for s in streams])
    assert all(o.result and o.result.last_version == 2 for o in out)
    (event,) = await sqlite_store.load("m7", 2)
    assert event.data == {"id": "m7-2", "big": 2**70, "text": "zürich"}


async def test_the_store_keeps_its_identity_and_a_backup_copy_carries_it(db_path: Path, tmp_path: Path) -> None:
    store = await SqliteEventStore.open(db_path)
    try:
        assert isinstance(store, IdentifiedStore)
        identity = store.store_id
        await store.append("m-1", events(2), NO_STREAM)
    finally:
        await store.aclose()
    await anyio.to_thread.run_sync(backup_file, db_path, tmp_path / "copy.db")

    for path in (db_path, tmp_path / "copy.db"):
        again = await SqliteEventStore.open(path)
        try:
            assert again.store_id == identity
        finally:
            await again.aclose()
    other = await SqliteEventStore.open(tmp_path / "other.db")
    try:
        assert other.store_id != identity
    finally:
        await other.aclose()


async def test_a_store_from_before_identities_gets_one_on_first_open(db_path: Path) -> None:
    store = await SqliteEventStore.open(db_path)
    await store.append("m-1", events(2), NO_STREAM)
    await store.aclose()
    with sqlite3.connect(db_path) as conn:
        conn.execute("DROP TABLE store_meta")
    conn.close()

    first = await SqliteEventStore.open(db_path)
    await first.aclose()
    second = await SqliteEventStore.open(db_path)
    try:
        assert first.store_id == second.store_id
        assert len((await second.read_all()).events) == 2
    finally:
        await second.aclose()


async def test_a_checkpoint_is_beyond_the_head_only_past_every_position_ever_assigned(db_path: Path) -> None:
    store = await SqliteEventStore.open(db_path)
    try:
        assert not await store.beyond_head(None)
        assert await store.beyond_head("1")
        await store.append("m-1", events(3), NO_STREAM)
        checkpoint = (await store.read_all()).checkpoint
        await store.delete_stream("m-1")  # positions are never reused: still this store's
        assert not await store.beyond_head(checkpoint)
        assert await store.beyond_head("4")
    finally:
        await store.aclose()
