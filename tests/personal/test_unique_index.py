"""Unique index: reserve before append, confirm after, release on failure, sweep after a crash.

Real SQLite files for the index, the key store and the event store. A "crash between reserve and
confirm" is simulated by reserving and then not calling confirm (with or without the append), and
time passing by handing ``sweep`` a later ``now``.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import AsyncIterator

import pytest

from gateway.domain.mapper import to_new_event
from gateway.personal.assignments import Assignments
from gateway.personal.crypto import ERASED, encrypt_field
from gateway.personal.events import MeterAssigned, assignment_stream_id
from gateway.personal.keys import KeyDestroyed, SqliteKeyStore
from gateway.personal.unique_index import (
    Reservation,
    ReservationLost,
    UniqueIndex,
    UniqueValue,
    ValueTaken,
)
from gateway.store import EventMetadata, NewEvent, StoreUnavailable, WrongExpectedVersion
from gateway.store.sqlite import SqliteEventStore

NOW = datetime(2026, 5, 4, 10, 0, tzinfo=timezone.utc)
META = EventMetadata(gateway_id="gw-test", recorded_at=NOW)
TTL_S = 600.0


class Env:
    def __init__(self, store: SqliteEventStore, keys: SqliteKeyStore, index: UniqueIndex) -> None:
        self.store, self.keys, self.index = store, keys, index
        self.assignments = Assignments(store, keys, index, "gw-test")


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    store = await SqliteEventStore.open(tmp_path / "gateway.db")
    keys = await SqliteKeyStore.open(tmp_path / "gateway.keys.db")
    index = await UniqueIndex.open(tmp_path / "gateway.unique.db", ttl_s=TTL_S)
    yield Env(store, keys, index)
    for closeable in (index, keys, store):
        await closeable.aclose()


def values(meter: str, code: str) -> tuple[UniqueValue, ...]:
    return (UniqueValue("meter_id", meter), UniqueValue("activation_code", code))


async def reserve(index: UniqueIndex, owner: str, meter: str, code: str, now: datetime = NOW) -> Reservation:
    return await index.reserve(
        values(meter, code), owner=owner, stream_id=assignment_stream_id(owner),
        event_id=MeterAssigned.id_for(meter, owner), now=now,
    )


async def append_assignment(env: Env, owner: str, meter: str) -> None:
    """What ``assign`` appends, written directly: the crash came after this."""
    key = await env.keys.create(owner)
    event = MeterAssigned(meter, owner, NOW, *(encrypt_field(key, f, "X1") for f in
                                              ("postal_code", "house_number", "activation_code")))
    await env.store.append(assignment_stream_id(owner), [to_new_event(event, META)], 0)


@pytest.mark.anyio
async def test_a_value_held_by_one_owner_is_refused_to_another(env: Env) -> None:
    await reserve(env.index, "a-1", "M1", "CODE0001")
    with pytest.raises(ValueTaken) as taken:
        await reserve(env.index, "a-2", "M2", "CODE0001")
    assert taken.value.kind == "activation_code" and taken.value.pending
    assert "CODE0001" not in str(taken.value)  # the code is personal data
    # All or nothing: the refused reservation did not keep M2 either.
    assert {e.owner for e in await env.index.entries()} == {"a-1"}
    with pytest.raises(ValueTaken) as taken:
        await reserve(env.index, "a-3", "M1", "CODE0003")
    assert taken.value.kind == "meter_id"
    # The same owner reserving again (a retried command) is fine.
    await reserve(env.index, "a-1", "M1", "CODE0001")
    # Nothing is stored in clear: only digests.
    raw = (env.index.path).read_bytes()
    assert b"CODE0001" not in raw


@pytest.mark.anyio
async def test_assign_twice_with_the_same_code_or_meter_is_refused(env: Env) -> None:
    first = await env.assignments.assign("M1", "1234 AB", "7", "CODE0001")
    assert [e.status for e in await env.index.entries(first.assignment_id)] == ["confirmed"] * 2
    with pytest.raises(ValueTaken):
        await env.assignments.assign("M2", "1234 AB", "9", "code0001")  # normalised: same code
    with pytest.raises(ValueTaken):
        await env.assignments.assign("M1", "1234 AB", "9", "CODE0002")
    assert len(await env.index.entries()) == 2


@pytest.mark.anyio
async def test_a_failed_append_releases_the_reservation_and_destroys_the_key(env: Env) -> None:
    # The assignment stream already exists, so the append fails on its expected version.
    clash = NewEvent("other", "Note", 1, {"n": 1}, META)
    await env.store.append(assignment_stream_id("a-9"), [clash], 0)
    with pytest.raises(WrongExpectedVersion):
        await env.assignments.assign("M1", "1234 AB", "7", "CODE0001", assignment_id="a-9")
    assert await env.index.entries() == []
    with pytest.raises(KeyDestroyed):
        await env.keys.create("a-9")  # the unused key was destroyed, not left behind
    # Released: another assignment can now have the meter and the code.
    done = await env.assignments.assign("M1", "1234 AB", "7", "CODE0001")
    assert {e.owner for e in await env.index.entries()} == {done.assignment_id}


@pytest.mark.anyio
async def test_sweeper_releases_a_reservation_whose_event_never_came(env: Env) -> None:
    reservation = await reserve(env.index, "a-1", "M1", "CODE0001")  # ... and the process dies
    early = await env.index.sweep(env.store, now=NOW + timedelta(seconds=TTL_S - 1))
    assert (early.confirmed, early.released) == (0, 0)  # not expired yet: the writer may be alive
    assert len(await env.index.entries()) == 2

    swept = await env.index.sweep(env.store, now=NOW + timedelta(seconds=TTL_S + 1))
    assert (swept.confirmed, swept.released, swept.undecided) == (0, 1, 0)
    assert await env.index.entries() == []
    # A writer that was merely slow finds out before appending.
    with pytest.raises(ReservationLost):
        await env.index.hold(reservation, now=NOW + timedelta(seconds=TTL_S + 2))
    await reserve(env.index, "a-2", "M1", "CODE0001", now=NOW + timedelta(seconds=TTL_S + 2))
    # ... and if it appended anyway, confirm refuses to create a duplicate owner.
    with pytest.raises(ReservationLost):
        await env.index.confirm(reservation)


@pytest.mark.anyio
async def test_sweeper_confirms_a_reservation_whose_event_was_appended(env: Env) -> None:
    await reserve(env.index, "a-1", "M1", "CODE0001")
    await append_assignment(env, "a-1", "M1")  # ... and the process dies before confirm
    swept = await env.index.sweep(env.store, now=NOW + timedelta(seconds=TTL_S + 1))
    assert (swept.confirmed, swept.released) == (1, 0)
    assert [e.status for e in await env.index.entries("a-1")] == ["confirmed"] * 2
    with pytest.raises(ValueTaken) as taken:
        await reserve(env.index, "a-2", "M1", "CODE0002", now=NOW + timedelta(hours=1))
    assert not taken.value.pending


@pytest.mark.anyio
async def test_store_down_leaves_the_reservation_for_the_sweeper(env: Env, tmp_path: Path) -> None:
    await env.store.aclose()  # every store call now raises StoreUnavailable
    with pytest.raises(StoreUnavailable):
        await env.assignments.assign("M1", "1234 AB", "7", "CODE0001", assignment_id="a-1")
    # The failed append could not be checked, so the values stay reserved (not released blindly).
    assert [e.status for e in await env.index.entries("a-1")] == ["reserved"] * 2
    expired = datetime.now(timezone.utc) + timedelta(seconds=TTL_S + 1)
    assert (await env.index.sweep(env.store, now=expired)).undecided == 1

    store = await SqliteEventStore.open(tmp_path / "gateway.db")  # the store is back
    try:
        swept = await env.index.sweep(store, now=expired)
        assert (swept.confirmed, swept.released) == (0, 1)
        assert await env.index.entries() == []
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_forget_repairs_a_crash_between_destroying_the_key_and_recording_it(env: Env) -> None:
    done = await env.assignments.assign("M1", "1234 AB", "7", "CODE0001")
    assert await env.keys.destroy(done.assignment_id)  # ... and the process dies here
    half = await env.assignments.load(done.assignment_id)
    assert half.postal_code is ERASED and half.erased_at is None  # unreadable already, not yet recorded

    repaired = await env.assignments.forget(done.assignment_id)
    assert (repaired.key_destroyed_now, repaired.erasure_recorded_now) == (False, True)
    assert repaired.index_entries_released == 2
    assert (await env.assignments.load(done.assignment_id)).erased_at is not None
    again = await env.assignments.forget(done.assignment_id)
    assert (again.key_destroyed_now, again.erasure_recorded_now, again.index_entries_released) == (False, False, 0)
    # The meter and the code are free for a new assignment.
    await env.assignments.assign("M1", "5678 CD", "9", "CODE0001")
