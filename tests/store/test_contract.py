"""The event store contract (gateway/store/base.py), run against every backend via the ``store`` fixture.

Only the protocol is used here, never a backend module. Every test works on streams with a fresh
unique name, so a backend whose storage is shared between tests (a Cosmos container) gives the
same results as a fresh SQLite file.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.store import (
    NO_STREAM,
    AppendRequest,
    EventMetadata,
    EventStore,
    NewEvent,
    RecordedEvent,
    Snapshot,
    StreamNotFound,
    WrongExpectedVersion,
)
from gateway.store.codec import parse_utc
from tests.backends import read_everything
from tests.builders import T0, event, events, ids, new_stream

pytestmark = pytest.mark.anyio


async def test_round_trip_keeps_envelope_decimal_datetime_and_unknown_metadata(store: EventStore) -> None:
    stream = new_stream()
    read_at = datetime(2026, 3, 1, 13, 14, 15, 123456, tzinfo=timezone(timedelta(hours=1)))
    sent = NewEvent(
        event_id="evt-" + uuid.uuid4().hex,
        type="RegisterRead",
        schema_version=3,
        data={"obis": "1.0.1.8.0.255", "value": Decimal("12345.678"), "readAt": read_at,
              "nested": {"list": [1, "two", None, True]}},
        metadata=EventMetadata(
            gateway_id="gw-7",
            recorded_at=read_at,
            correlation_id="poll-42",
            extra={"firmware": "K-3.2", "futureKey": {"a": [1, 2]}},
        ),
    )
    result = await store.append(stream, [sent], NO_STREAM)
    assert (result.first_version, result.last_version, result.already_done) == (1, 1, False)

    (got,) = await store.load(stream)
    assert (got.stream_id, got.version, got.event_id, got.type, got.schema_version) == (
        stream, 1, sent.event_id, "RegisterRead", 3)
    # The codec's JSON form: Decimal as an exact string, datetimes as ISO-8601 UTC.
    assert got.data["value"] == "12345.678" and Decimal(got.data["value"]) == Decimal("12345.678")
    assert parse_utc(got.data["readAt"]) == read_at
    assert got.data["nested"] == {"list": [1, "two", None, True]}
    assert got.metadata.gateway_id == "gw-7"
    assert got.metadata.recorded_at == read_at
    assert got.metadata.recorded_at.utcoffset() == timedelta(0)
    assert got.metadata.correlation_id == "poll-42"
    assert dict(got.metadata.extra) == {"firmware": "K-3.2", "futureKey": {"a": [1, 2]}}


async def test_append_of_several_events_gets_consecutive_versions(store: EventStore) -> None:
    stream = new_stream()
    first = events(3)
    r1 = await store.append(stream, first, NO_STREAM)
    second = events(2)
    r2 = await store.append(stream, second, 3)
    assert (r1.first_version, r1.last_version) == (1, 3)
    assert (r2.first_version, r2.last_version) == (4, 5)
    loaded = await store.load(stream)
    assert [e.version for e in loaded] == [1, 2, 3, 4, 5]
    assert ids(loaded) == ids(first + second)
    assert await store.head(stream) == 5


async def test_empty_append_is_refused(store: EventStore) -> None:
    stream = new_stream()
    with pytest.raises(ValueError):
        await store.append(stream, [], NO_STREAM)
    assert await store.head(stream) == NO_STREAM


async def test_load_from_version(store: EventStore) -> None:
    stream = new_stream()
    sent = events(5)
    await store.append(stream, sent, NO_STREAM)
    assert ids(await store.load(stream, 3)) == ids(sent[2:])
    assert [e.version for e in await store.load(stream, 5)] == [5]
    assert await store.load(stream, 6) == []


async def test_load_and_head_of_missing_stream(store: EventStore) -> None:
    stream = new_stream()
    with pytest.raises(StreamNotFound) as info:
        await store.load(stream)
    assert info.value.stream_id == stream
    assert await store.head(stream) == NO_STREAM


# -- optimistic concurrency ---------------------------------------------------------------------


async def test_racing_writers_exactly_one_wins(store: EventStore) -> None:
    stream = new_stream()
    await store.append(stream, events(2), NO_STREAM)
    writers = 6
    won: list[list[NewEvent]] = []
    lost: list[WrongExpectedVersion] = []

    async def writer(i: int) -> None:
        mine = [event(i), event(i)]
        try:
            await store.append(stream, mine, 2)
        except WrongExpectedVersion as exc:
            lost.append(exc)
        else:
            won.append(mine)

    async with anyio.create_task_group() as tg:
        for i in range(writers):
            tg.start_soon(writer, i)

    assert len(won) == 1 and len(lost) == writers - 1
    assert all((e.stream_id, e.expected, e.actual) == (stream, 2, 4) for e in lost)
    loaded = await store.load(stream)
    assert [e.version for e in loaded] == [1, 2, 3, 4]
    assert ids(loaded[2:]) == ids(won[0])


async def test_racing_writers_that_retry_lose_nothing(store: EventStore) -> None:
    stream = new_stream()
    sent: dict[str, list[str]] = {}

    async def writer(i: int) -> None:
        mine = [event(i) for _ in range(3)]
        sent[f"w{i}"] = ids(mine)
        expected = NO_STREAM
        while True:
            try:
                await store.append(stream, mine, expected)
                return
            except WrongExpectedVersion as exc:
                assert exc.actual > expected
                expected = exc.actual

    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(writer, i)

    loaded = await store.load(stream)
    assert [e.version for e in loaded] == list(range(1, 16))
    stored = ids(loaded)
    assert sorted(stored) == sorted(i for batch in sent.values() for i in batch)
    # Each writer's events are contiguous and in order (appends are atomic).
    for batch in sent.values():
        start = stored.index(batch[0])
        assert stored[start:start + 3] == batch


@pytest.mark.parametrize("wrong", [1, 3, 4, 100])
async def test_expected_version_other_than_head_is_rejected(store: EventStore, wrong: int) -> None:
    stream = new_stream()
    await store.append(stream, events(2), NO_STREAM)
    with pytest.raises(WrongExpectedVersion) as info:
        await store.append(stream, events(1), wrong)
    assert (info.value.stream_id, info.value.expected, info.value.actual) == (stream, wrong, 2)
    assert await store.head(stream) == 2


async def test_no_stream_creates_and_is_rejected_on_existing_stream(store: EventStore) -> None:
    stream = new_stream()
    with pytest.raises(WrongExpectedVersion) as info:
        await store.append(stream, events(1), 1)
    assert info.value.actual == NO_STREAM
    await store.append(stream, events(1), NO_STREAM)
    with pytest.raises(WrongExpectedVersion) as info:
        await store.append(stream, events(1), NO_STREAM)
    assert (info.value.expected, info.value.actual) == (NO_STREAM, 1)
    assert len(await store.load(stream)) == 1


async def test_retry_after_lost_ack_is_already_done(store: EventStore) -> None:
    stream = new_stream()
    await store.append(stream, events(1), NO_STREAM)
    batch = events(3)
    first = await store.append(stream, batch, 1)
    # The writer never saw `first` (lost ack) and retries the same events, even after someone else
    # appended more.
    await store.append(stream, events(1), 4)
    retry = await store.append(stream, batch, 1)
    assert retry.already_done is True
    assert (retry.stream_id, retry.first_version, retry.last_version) == (stream, 2, 4)
    assert (first.first_version, first.last_version, first.already_done) == (2, 4, False)
    loaded = await store.load(stream)
    assert len(loaded) == 5 and len(set(ids(loaded))) == 5
    assert ids(loaded[1:4]) == ids(batch)


async def test_stale_append_with_different_events_is_not_a_retry(store: EventStore) -> None:
    stream = new_stream()
    batch = events(2)
    await store.append(stream, batch, NO_STREAM)
    with pytest.raises(WrongExpectedVersion):
        await store.append(stream, [batch[0], event(7)], NO_STREAM)
    with pytest.raises(WrongExpectedVersion):  # more events than were stored
        await store.append(stream, batch + [event(8)], NO_STREAM)
    with pytest.raises(WrongExpectedVersion):  # same ids, wrong place
        await store.append(stream, [batch[1], batch[0]], NO_STREAM)
    assert await store.head(stream) == 2


# -- append_batch -------------------------------------------------------------------------------


async def test_append_batch_conflict_on_one_stream_does_not_affect_others(store: EventStore) -> None:
    ok1, bad, ok2, retried = new_stream(), new_stream(), new_stream(), new_stream()
    await store.append(bad, events(2), NO_STREAM)
    done = events(2)
    await store.append(retried, done, NO_STREAM)
    requests = [
        AppendRequest(ok1, NO_STREAM, tuple(events(2))),
        AppendRequest(bad, 1, tuple(events(1))),
        AppendRequest(ok2, NO_STREAM, tuple(events(3))),
        AppendRequest(retried, NO_STREAM, tuple(done)),
    ]
    outcomes = await store.append_batch(requests)

    assert [o.request for o in outcomes] == requests
    assert outcomes[0].error is None and outcomes[0].result is not None
    assert (outcomes[0].result.first_version, outcomes[0].result.last_version) == (1, 2)
    assert outcomes[1].result is None and isinstance(outcomes[1].error, WrongExpectedVersion)
    assert (outcomes[1].error.stream_id, outcomes[1].error.actual) == (bad, 2)
    assert outcomes[2].result is not None and outcomes[2].result.last_version == 3
    assert outcomes[3].result is not None and outcomes[3].result.already_done
    assert ids(await store.load(ok1)) == ids(list(requests[0].events))
    assert ids(await store.load(ok2)) == ids(list(requests[2].events))
    assert await store.head(bad) == 2
    assert ids(await store.load(retried)) == ids(done)


# -- read_all -----------------------------------------------------------------------------------


async def test_read_all_delivers_each_event_once_in_stream_order(store: EventStore) -> None:
    streams = [new_stream() for _ in range(3)]
    sent: dict[str, list[str]] = {s: [] for s in streams}
    for round_ in range(4):
        requests = []
        for s in streams:
            batch = events(round_ + 1)
            requests.append(AppendRequest(s, len(sent[s]), tuple(batch)))
            sent[s].extend(ids(batch))
        assert all(o.error is None for o in await store.append_batch(requests))

    seen, checkpoint = await read_everything(store, limit=4)
    mine = [e for e in seen if e.stream_id in sent]
    assert len({e.event_id for e in mine}) == len(mine) == sum(len(v) for v in sent.values())
    for s in streams:
        assert [e.event_id for e in mine if e.stream_id == s] == sent[s]
        assert [e.version for e in mine if e.stream_id == s] == list(range(1, len(sent[s]) + 1))

    # Resuming from the checkpoint yields only what was appended since.
    later = events(2)
    await store.append(streams[0], later, len(sent[streams[0]]))
    more, _ = await read_everything(store, checkpoint, limit=4)
    assert ids([e for e in more if e.stream_id in sent]) == ids(later)


async def test_read_all_pages_resume_without_gaps_or_repeats(store: EventStore) -> None:
    stream = new_stream()
    sent = events(10)
    await store.append(stream, sent, NO_STREAM)
    got: list[RecordedEvent] = []
    checkpoint: str | None = None
    for _ in range(1000):
        page = await store.read_all(checkpoint, limit=3)
        assert len(page.events) <= 3
        got.extend(e for e in page.events if e.stream_id == stream)
        checkpoint = page.checkpoint
        if page.done:
            break
    assert ids(got) == ids(sent)


# -- delete -------------------------------------------------------------------------------------


async def test_delete_stream_then_recreate(store: EventStore) -> None:
    stream, other = new_stream(), new_stream()
    await store.append(stream, events(3), NO_STREAM)
    await store.append(other, events(1), NO_STREAM)
    await store.save_snapshot(Snapshot(stream, 3, 1, {"total": "3"}, T0))

    await store.delete_stream(stream)

    with pytest.raises(StreamNotFound):
        await store.load(stream)
    assert await store.head(stream) == NO_STREAM
    assert await store.load_snapshot(stream) is None
    assert len(await store.load(other)) == 1
    fresh = events(2)
    result = await store.append(stream, fresh, NO_STREAM)
    assert (result.first_version, result.last_version) == (1, 2)
    assert ids(await store.load(stream)) == ids(fresh)


async def test_delete_missing_stream(store: EventStore) -> None:
    stream = new_stream()
    with pytest.raises(StreamNotFound) as info:
        await store.delete_stream(stream)
    assert info.value.stream_id == stream


# -- snapshots ----------------------------------------------------------------------------------


async def test_snapshot_save_load_overwrite(store: EventStore) -> None:
    stream = new_stream()
    await store.append(stream, events(5), NO_STREAM)
    assert await store.load_snapshot(stream) is None

    first = Snapshot(stream, 3, 1, {"register": "100.5", "reads": [1, 2]}, T0)
    await store.save_snapshot(first)
    assert await store.load_snapshot(stream) == first

    second = Snapshot(stream, 5, 1, {"register": "200.25"}, T0 + timedelta(hours=1))
    await store.save_snapshot(second)
    assert await store.load_snapshot(stream) == second


async def test_snapshot_with_unknown_schema_version_is_returned_as_is(store: EventStore) -> None:
    # The store does not judge snapshot schemas; the aggregate ignores one it cannot read.
    stream = new_stream()
    await store.append(stream, events(1), NO_STREAM)
    future = Snapshot(stream, 1, 999, {"shape": "from a later release", "x": [{"y": None}]}, T0)
    await store.save_snapshot(future)
    loaded = await store.load_snapshot(stream)
    assert loaded == future and loaded is not None and loaded.schema_version == 999


# -- list_streams -------------------------------------------------------------------------------


async def test_list_streams_by_prefix(store: EventStore) -> None:
    prefix = f"site-{uuid.uuid4().hex[:8]}-"
    a, b, outside = prefix + "meter-a", prefix + "meter-b", new_stream("elsewhere")
    await store.append(a, [event(1, recorded_at=T0), event(2, recorded_at=T0 + timedelta(minutes=15))],
                       NO_STREAM)
    await store.append(a, [event(3, recorded_at=T0 + timedelta(minutes=30))], 2)
    await store.append(b, [event(1, recorded_at=T0 + timedelta(days=1))], NO_STREAM)
    await store.append(outside, events(1), NO_STREAM)

    infos = sorted(await store.list_streams(prefix), key=lambda i: i.stream_id)
    assert [(i.stream_id, i.head) for i in infos] == [(a, 3), (b, 1)]
    assert infos[0].first_recorded_at == T0
    assert infos[0].last_recorded_at == T0 + timedelta(minutes=30)
    assert infos[1].first_recorded_at == infos[1].last_recorded_at == T0 + timedelta(days=1)

    await store.delete_stream(b)
    assert [i.stream_id for i in await store.list_streams(prefix)] == [a]
    assert outside in {i.stream_id for i in await store.list_streams("")}


# -- property test against an in-memory model ---------------------------------------------------


@dataclass
class Model:
    """What the contract says the store holds: per stream, the ordered event ids."""

    streams: dict[str, list[str]] = field(default_factory=dict)
    appended: list[tuple[str, int, list[NewEvent]]] = field(default_factory=list)

    def head(self, stream: str) -> int:
        return len(self.streams.get(stream, []))


operation = st.one_of(
    st.tuples(st.just("append"), st.integers(0, 2), st.integers(1, 3),
              st.sampled_from([0, 0, -1, 1, -3])),
    st.tuples(st.just("retry"), st.integers(0, 50)),
    st.tuples(st.just("load"), st.integers(0, 2), st.integers(1, 6)),
)


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(operation, min_size=1, max_size=25))
async def test_random_appends_retries_and_loads_match_model(
    store: EventStore, ops: list[tuple[Any, ...]]
) -> None:
    # Fresh streams per example: the store fixture is shared by all examples of this test.
    names = [new_stream() for _ in range(3)]
    model = Model()
    for op in ops:
        if op[0] == "append":
            _, which, count, offset = op
            stream = names[which]
            head = model.head(stream)
            expected = head + offset
            batch = events(count)
            if expected < 0:
                continue
            if expected == head:
                result = await store.append(stream, batch, expected)
                assert (result.first_version, result.last_version) == (head + 1, head + count)
                assert not result.already_done
                model.streams.setdefault(stream, []).extend(ids(batch))
                model.appended.append((stream, expected, batch))
            else:
                with pytest.raises(WrongExpectedVersion) as info:
                    await store.append(stream, batch, expected)
                assert info.value.actual == head
        elif op[0] == "retry":
            if not model.appended:
                continue
            stream, expected, batch = model.appended[op[1] % len(model.appended)]
            result = await store.append(stream, batch, expected)
            assert result.already_done
            assert (result.first_version, result.last_version) == (expected + 1, expected + len(batch))
        else:
            _, which, from_version = op
            stream = names[which]
            if stream not in model.streams:
                with pytest.raises(StreamNotFound):
                    await store.load(stream, from_version)
            else:
                loaded = await store.load(stream, from_version)
                assert ids(loaded) == model.streams[stream][from_version - 1:]
                assert [e.version for e in loaded] == list(
                    range(from_version, model.head(stream) + 1))
    for stream in names:
        assert await store.head(stream) == model.head(stream)
