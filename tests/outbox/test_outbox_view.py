"""The outbox's read side (``OutboxView``) when the far store is out of reach: streams the outbox
knows are read from it; a stream it never wrote (a new year's, a new meter's) is looked for in the far
store only briefly, then taken as new. The far store is a real SqliteEventStore behind ``FaultyStore``."""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from gateway.history.outbox import Outbox
from gateway.domain.meter import MeterState
from gateway.history.outbox_forwarder import Forwarder
from gateway.history.cached_repository import CachingRepository
from gateway.history.repository import MeterRepository
from gateway.history.sinks import OutboxView
from gateway.store.errors import StoreUnavailable, StreamNotFound
from gateway.store.model import NO_STREAM
from tests.backends import opened_sqlite
from tests.builders import ids, reading
from tests.outbox import FaultyStore

pytestmark = pytest.mark.anyio

OLD, NEW = "Meter:m-1:2026", "Meter:m-1:2027"
GUARD_S = 10.0  # against a hang, not a performance assertion


@pytest.fixture
async def far(tmp_path: Path) -> AsyncIterator[FaultyStore]:
    async with opened_sqlite(tmp_path / "far.db") as store:
        yield FaultyStore(store)


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    async with await Outbox.open(tmp_path / "outbox.sqlite3", 1_000_000) as box:
        yield box


async def test_written_streams_lists_what_the_outbox_was_given_with_the_head_it_knows(
    outbox: Outbox, far: FaultyStore
) -> None:
    await outbox.put(OLD, [reading("a"), reading("b")])
    await outbox.put("Meter:m-10:2026", [reading("x")])
    await outbox.save_local_state("Meter:m-1:2025", 7, 1, {"version": 7})
    # Not forwarded yet: the far head is unknown to the outbox.
    assert await outbox.written_streams("Meter:m-1:") == {OLD: None, "Meter:m-1:2025": None}
    await Forwarder(outbox, far).drain_once()
    await outbox.put(OLD, [reading("c")])
    assert await outbox.written_streams("Meter:m-1:") == {OLD: 3, "Meter:m-1:2025": None}
    assert set(await outbox.written_streams()) == {OLD, "Meter:m-10:2026", "Meter:m-1:2025"}
    assert await outbox.written_streams(NEW) == {}


async def test_a_stream_never_written_is_new_while_the_far_store_is_down(
    outbox: Outbox, far: FaultyStore
) -> None:
    view = OutboxView(far, outbox, new_stream_wait_s=1.0, taken_as_new_s=3600)
    far.down = True
    assert await view.head(NEW) == NO_STREAM
    assert far.reads == 1
    # Taken as new: the far store is not asked again about this stream (one wait per poll at most).
    with pytest.raises(StreamNotFound):
        await view.load(NEW)
    assert await view.load_snapshot(NEW) is None
    assert far.reads == 1
    assert await view.head("Meter:m-2:2027") == NO_STREAM  # another stream is asked about
    assert far.reads == 2
    # A stream the outbox did write is never guessed: without a local state it needs the far store.
    await outbox.put(OLD, [reading("a")])
    with pytest.raises(StoreUnavailable):
        await view.head(OLD)


async def test_a_new_meter_has_no_streams_while_the_far_store_is_down(outbox: Outbox, far: FaultyStore) -> None:
    view = OutboxView(far, outbox, new_stream_wait_s=1.0, taken_as_new_s=3600)
    far.down = True
    assert await view.list_streams("Meter:m-9:") == []
    # So its first poll starts from an empty state instead of failing.
    state = await MeterRepository(view).current("m-9", 2027)  # type: ignore[arg-type]
    assert (state.version, state.identity) == (NO_STREAM, None)
    # A meter the outbox wrote is listed from what it knows: with no state of the stream, no guess.
    await outbox.put(OLD, [reading("a")])
    with pytest.raises(StoreUnavailable):
        await view.list_streams("Meter:m-1:")
    await outbox.save_local_state(OLD, 1, 1, {"version": 1})
    await outbox.put(OLD, [reading("b")])
    assert [(i.stream_id, i.head) for i in await view.list_streams("Meter:m-1:")] == [(OLD, 2)]


async def test_a_far_store_that_does_not_answer_is_waited_for_briefly(
    outbox: Outbox, far: FaultyStore
) -> None:
    view = OutboxView(far, outbox, new_stream_wait_s=0.2, taken_as_new_s=0)
    far.hang = True
    with anyio.fail_after(GUARD_S):
        assert await view.head(NEW) == NO_STREAM
        assert await view.load_snapshot(NEW) is None
    assert far.reads == 2  # no hold: each lookup asked (and waited for) the far store


async def test_a_stream_the_far_store_holds_is_read_from_it(outbox: Outbox, far: FaultyStore) -> None:
    # Written by another gateway box before this one (its outbox is not this file).
    await far.inner.append(NEW, [reading("n1"), reading("n2")], NO_STREAM)
    view = OutboxView(far, outbox, new_stream_wait_s=1.0)
    assert await view.head(NEW) == 2
    assert ids(await view.load(NEW)) == ["n1", "n2"]
    # Shown once by the far store, it is never taken as new: an outage is an outage for it.
    far.down = True
    with pytest.raises(StoreUnavailable):
        await view.head(NEW)
    far.down = False


async def test_an_outage_on_one_new_stream_does_not_make_others_new(outbox: Outbox, far: FaultyStore) -> None:
    await far.inner.append(NEW, [reading("n1"), reading("n2")], NO_STREAM)  # by a box before this one
    view = OutboxView(far, outbox, new_stream_wait_s=1.0)  # the default: taken as new for a minute
    far.down = True
    assert await view.head("Meter:m-2:2027") == NO_STREAM
    far.down = False  # back: the stream the far store holds is read from it
    assert await view.head(NEW) == 2
    # And a stream taken as new is asked about again once the time is over.
    again = OutboxView(far, outbox, new_stream_wait_s=1.0, taken_as_new_s=0)
    far.down = True
    assert await again.head("Meter:m-3:2027") == NO_STREAM
    far.down = False
    await far.inner.append("Meter:m-3:2027", [reading("m3")], NO_STREAM)
    assert await again.head("Meter:m-3:2027") == 1


async def test_distrusting_a_meter_drops_the_local_states_nothing_vouches_for(
    outbox: Outbox, far: FaultyStore
) -> None:
    view = OutboxView(far, outbox)
    repository = CachingRepository(far, verify_head=False, local=view)  # type: ignore[arg-type]
    state = replace(MeterState.empty("m-1", 2026), version=1)
    # 2026: forwarded, the forwarder's recorded head agrees with the state: kept.
    await outbox.put(OLD, [reading("a")])
    await Forwarder(outbox, far).drain_once()
    await repository.keep("m-1", 2026, state)
    # 2027: never forwarded, so nothing checks what the state counts: dropped.
    await outbox.put(NEW, [reading("n")])
    await repository.keep("m-1", 2027, replace(MeterState.empty("m-1", 2027), version=1))
    # Another meter whose id starts the same way: untouched.
    await outbox.put("Meter:m-10:2026", [reading("x")])
    await repository.keep("m-10", 2026, replace(MeterState.empty("m-10", 2026), version=1))

    await repository.distrust_meter("m-1")
    assert not repository.is_cached("m-1", 2026) and not repository.is_cached("m-1", 2027)
    assert await outbox.local_state(OLD) is not None
    assert await outbox.local_state(NEW) is None
    assert await outbox.local_state("Meter:m-10:2026") is not None and repository.is_cached("m-10", 2026)


async def test_a_stream_listed_by_the_far_store_is_never_taken_as_new(outbox: Outbox, far: FaultyStore) -> None:
    # A meter silent for a whole year: its last stream, written by the box before this one, is
    # found by listing; it must not become an empty carry-over when Cosmos then fails once.
    old = "Meter:m-1:2025"
    await far.inner.append(old, [reading("o1")], NO_STREAM)
    view = OutboxView(far, outbox, new_stream_wait_s=1.0)
    assert [i.stream_id for i in await view.list_streams("Meter:m-1:")] == [old]
    far.down = True
    with pytest.raises(StoreUnavailable):
        await view.load_snapshot(old)
    with pytest.raises(StoreUnavailable):
        await view.load(old)


async def test_a_restarted_view_lists_streams_still_pending_in_the_outbox(outbox: Outbox, far: FaultyStore) -> None:
    await outbox.put(NEW, [reading("p1"), reading("p2")])  # put by the process before the restart
    view = OutboxView(far, outbox)
    assert [(i.stream_id, i.head) for i in await view.list_streams("Meter:m-1:")] == [(NEW, 2)]
