"""BatchedWriter against the real SQLite event store.

Faults that a healthy SQLite file cannot produce on demand (a lost acknowledgement, an outage, a
competing writer racing every flush, a store too slow to keep up) come from small wrappers that
forward to the real store and add the fault; everything stored is read back from the real file.
"""
from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from anyio import wait_all_tasks_blocked

from gateway.store import (
    AppendRequest,
    BatchOutcome,
    StoreUnavailable,
    WrongExpectedVersion,
)
from gateway.store.sqlite import SqliteEventStore
from gateway.history.writer import BatchedWriter, WriterClosed, WriterQueueFull
from tests.builders import new_event, readings

pytestmark = pytest.mark.anyio


async def stored_ids(store: SqliteEventStore, stream_id: str) -> list[str]:
    return [e.event_id for e in await store.load(stream_id)]


@pytest.fixture
def store(sqlite_store: SqliteEventStore) -> SqliteEventStore:
    return sqlite_store


class ForwardingStore:
    """Forwards everything to the real store; subclasses add one fault to append_batch."""

    def __init__(self, inner: SqliteEventStore) -> None:
        self.inner = inner
        self.stats = inner.stats

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def head(self, stream_id: str) -> int:
        return await self.inner.head(stream_id)

    async def load(self, stream_id: str, from_version: int = 1) -> list:  # type: ignore[type-arg]
        return await self.inner.load(stream_id, from_version)

    async def append_batch(self, requests: Sequence[AppendRequest]) -> list[BatchOutcome]:
        return await self.inner.append_batch(requests)


class LosesFirstAcknowledgement(ForwardingStore):
    """The first append_batch is committed, then the answer is lost on the way back."""

    lost = False

    async def append_batch(self, requests: Sequence[AppendRequest]) -> list[BatchOutcome]:
        outcomes = await self.inner.append_batch(requests)
        if not self.lost:
            self.lost = True
            raise StoreUnavailable("connection reset before the acknowledgement arrived")
        return outcomes


class AlwaysUnavailable(ForwardingStore):
    calls = 0

    async def append_batch(self, requests: Sequence[AppendRequest]) -> list[BatchOutcome]:
        self.calls += 1
        raise StoreUnavailable("disk I/O error")


class SilentOnFirstCall(ForwardingStore):
    """The first append_batch never answers (a hung connection); later ones go through."""

    silent = False

    async def append_batch(self, requests: Sequence[AppendRequest]) -> list[BatchOutcome]:
        if not self.silent:
            self.silent = True
            await anyio.sleep_forever()
        return await self.inner.append_batch(requests)


class RacedOnEveryFlush(ForwardingStore):
    """Another writer appends to ``hot_stream`` just before each of our round trips."""

    def __init__(self, inner: SqliteEventStore, hot_stream: str) -> None:
        super().__init__(inner)
        self.hot_stream = hot_stream
        self.races = 0

    async def append_batch(self, requests: Sequence[AppendRequest]) -> list[BatchOutcome]:
        if any(r.stream_id == self.hot_stream for r in requests):
            head = await self.inner.head(self.hot_stream)
            await self.inner.append(self.hot_stream, readings("other", self.races, 1), head)
            self.races += 1
        return await self.inner.append_batch(requests)


class Gated(ForwardingStore):
    """The first append_batch waits until the test opens the gate (a store that fell behind)."""

    def __init__(self, inner: SqliteEventStore) -> None:
        super().__init__(inner)
        self.entered = anyio.Event()
        self.gate = anyio.Event()
        self.calls: list[list[str]] = []  # the streams of each call, in call order

    async def append_batch(self, requests: Sequence[AppendRequest]) -> list[BatchOutcome]:
        self.calls.append([r.stream_id for r in requests])
        self.entered.set()
        await self.gate.wait()
        return await self.inner.append_batch(requests)


async def test_concurrent_submitters_store_every_event_once_in_order(
    store: SqliteEventStore,
) -> None:
    meters, polls, per_poll = 12, 6, 3
    streams = [f"Meter:{m}:2026" for m in range(meters)]
    results: dict[str, list[tuple[int, int]]] = {s: [] for s in streams}

    async with BatchedWriter(store, max_batch_events=40, max_delay_s=0.005) as writer:

        async def poller(stream_id: str) -> None:
            # Queue every poll first so several submissions of one stream share a flush.
            handles = [
                await writer.enqueue(stream_id, readings(stream_id, p * per_poll, per_poll))
                for p in range(polls)
            ]
            for handle in handles:
                result = await handle
                results[stream_id].append((result.first_version, result.last_version))

        async with anyio.create_task_group() as tg:
            for stream_id in streams:
                tg.start_soon(poller, stream_id)

    for stream_id in streams:
        assert await stored_ids(store, stream_id) == [
            e.event_id for e in readings(stream_id, 0, polls * per_poll)
        ]
        assert results[stream_id] == [
            (p * per_poll + 1, (p + 1) * per_poll) for p in range(polls)
        ]
    assert writer.metrics.flushes > 1
    assert writer.metrics.events_written == meters * polls * per_poll
    # Several submissions per stream were concatenated: fewer appends than submissions.
    assert writer.metrics.appends < meters * polls


async def test_warm_cache_appends_without_reading_the_store(store: SqliteEventStore) -> None:
    streams = [f"Meter:{m}:2026" for m in range(5)]
    async with BatchedWriter(store) as writer:
        for stream_id in streams:
            await writer.submit(stream_id, readings(stream_id, 0, 2))
        reads_after_warm_up = store.stats.reads
        appends_after_warm_up = store.stats.appends
        for n in range(1, 4):
            async with anyio.create_task_group() as tg:
                for stream_id in streams:
                    tg.start_soon(writer.submit, stream_id, readings(stream_id, 2 * n, 2))
    assert store.stats.appends > appends_after_warm_up
    assert store.stats.reads == reads_after_warm_up
    for stream_id in streams:
        assert await store.head(stream_id) == 8


async def test_cold_stream_costs_one_head_read(store: SqliteEventStore) -> None:
    await store.append("Meter:7:2026", readings("Meter:7:2026", 0, 3), 0)
    reads_before = store.stats.reads
    async with BatchedWriter(store) as writer:
        first = await writer.submit("Meter:7:2026", readings("Meter:7:2026", 3, 2))
        second = await writer.submit("Meter:7:2026", readings("Meter:7:2026", 5, 1))
    assert (first.first_version, first.last_version, second.last_version) == (4, 5, 6)
    assert store.stats.reads - reads_before == 1
    assert writer.metrics.retries == 0


async def test_external_writer_on_one_stream_is_reconciled_by_event_id(
    store: SqliteEventStore,
) -> None:
    hot, cold = "Meter:1:2026", "Meter:2:2026"
    async with BatchedWriter(store, max_delay_s=0.01) as writer:
        await writer.submit(hot, readings(hot, 0, 2))
        await writer.submit(cold, readings(cold, 0, 2))
        # Behind the writer's back: another process stores our next event plus one of its own.
        await store.append(hot, [*readings(hot, 2, 1), *readings("elsewhere", 0, 1)], 2)
        hot_handle = writer.submit_nowait(hot, readings(hot, 2, 3))
        cold_handle = writer.submit_nowait(cold, readings(cold, 2, 2))
        hot_result, cold_result = await hot_handle, await cold_handle

    assert await stored_ids(store, hot) == [
        f"{hot}/0", f"{hot}/1", f"{hot}/2", "elsewhere/0", f"{hot}/3", f"{hot}/4",
    ]
    assert (hot_result.first_version, hot_result.last_version) == (3, 6)
    assert not hot_result.already_done
    assert await stored_ids(store, cold) == [e.event_id for e in readings(cold, 0, 4)]
    assert (cold_result.first_version, cold_result.last_version) == (3, 4)
    assert writer.metrics.conflicts == 1


async def test_lost_acknowledgement_is_retried_without_duplicates(
    store: SqliteEventStore,
) -> None:
    faulty = LosesFirstAcknowledgement(store)
    async with BatchedWriter(faulty, backoff_initial_s=0.001) as writer:  # type: ignore[arg-type]
        a = writer.submit_nowait("Meter:1:2026", readings("Meter:1:2026", 0, 6))
        b = writer.submit_nowait("Meter:2:2026", readings("Meter:2:2026", 0, 6))
        result_a, result_b = await a, await b
        # The stream heads in the cache are right: the next append goes through first time.
        await writer.submit("Meter:1:2026", readings("Meter:1:2026", 6, 1))

    assert faulty.lost
    assert result_a.already_done and result_b.already_done
    assert (result_a.first_version, result_a.last_version) == (1, 6)
    assert await stored_ids(store, "Meter:1:2026") == [
        e.event_id for e in readings("Meter:1:2026", 0, 7)
    ]
    assert await stored_ids(store, "Meter:2:2026") == [
        e.event_id for e in readings("Meter:2:2026", 0, 6)
    ]
    assert writer.metrics.retries == 1
    assert writer.metrics.conflicts == 0


async def test_store_outage_beyond_the_retries_reaches_the_submitter(
    store: SqliteEventStore,
) -> None:
    down = AlwaysUnavailable(store)
    async with BatchedWriter(  # type: ignore[arg-type]
        down, max_retries=2, backoff_initial_s=0.001
    ) as writer:
        with pytest.raises(StoreUnavailable, match="disk I/O error"):
            await writer.submit("Meter:1:2026", readings("Meter:1:2026", 0, 2))
    assert down.calls == 3
    assert await store.head("Meter:1:2026") == 0


async def test_store_that_does_not_answer_is_retried_after_the_timeout(
    store: SqliteEventStore,
) -> None:
    hung = SilentOnFirstCall(store)
    async with BatchedWriter(  # type: ignore[arg-type]
        hung, store_timeout_s=0.05, backoff_initial_s=0.001
    ) as writer:
        result = await writer.submit("Meter:1:2026", readings("Meter:1:2026", 0, 2))
    assert hung.silent
    assert (result.first_version, result.last_version) == (1, 2)
    assert writer.metrics.retries == 1
    assert await stored_ids(store, "Meter:1:2026") == ["Meter:1:2026/0", "Meter:1:2026/1"]


async def test_stream_conflicting_beyond_max_retries_fails_only_its_submitters(
    store: SqliteEventStore,
) -> None:
    hot, cold = "Meter:hot:2026", "Meter:cold:2026"
    raced = RacedOnEveryFlush(store, hot)
    async with BatchedWriter(  # type: ignore[arg-type]
        raced, max_retries=2, max_delay_s=0.01
    ) as writer:
        hot_handle = writer.submit_nowait(hot, readings(hot, 0, 2))
        cold_handle = writer.submit_nowait(cold, readings(cold, 0, 2))
        with pytest.raises(WrongExpectedVersion) as caught:
            await hot_handle
        cold_result = await cold_handle

    assert caught.value.stream_id == hot
    assert (cold_result.first_version, cold_result.last_version) == (1, 2)
    assert await stored_ids(store, cold) == [e.event_id for e in readings(cold, 0, 2)]
    assert all(not event_id.startswith(hot) for event_id in await stored_ids(store, hot))
    assert raced.races == 3  # the first attempt and both retries lost the race
    assert writer.metrics.conflicts == 2


async def test_full_queue_blocks_submitters_and_loses_nothing(store: SqliteEventStore) -> None:
    gated = Gated(store)
    streams = [f"Meter:{m}:2026" for m in range(6)]
    queued: list[str] = []
    handles = []
    # One flush at a time keeps the count of submissions held by the flush loop at one.
    async with BatchedWriter(  # type: ignore[arg-type]
        gated, queue_capacity=2, max_batch_events=1, max_delay_s=0, max_concurrent_flushes=1
    ) as writer:
        try:
            handles.append(writer.submit_nowait("Meter:first:2026", readings("first", 0, 1)))
            await gated.entered.wait()  # the flush loop is now stuck in the store

            async def submitter(stream_id: str) -> None:
                handle = await writer.enqueue(stream_id, readings(stream_id, 0, 1))
                queued.append(stream_id)
                handles.append(handle)

            async with anyio.create_task_group() as tg:
                for stream_id in streams:
                    tg.start_soon(submitter, stream_id)
                await wait_all_tasks_blocked()
                # One submission waits in the flush loop for the store, two fill the queue;
                # the other three submitters are blocked.
                assert len(queued) == 3 and writer.queued == 2
                with pytest.raises(WriterQueueFull):
                    writer.submit_nowait("Meter:extra:2026", readings("extra", 0, 1))
                gated.gate.set()
        finally:
            gated.gate.set()  # never leave the writer stuck if an assertion failed
        for handle in handles:
            await handle

    assert sorted(queued) == sorted(streams)
    for stream_id in streams:
        assert await stored_ids(store, stream_id) == [f"{stream_id}/0"]
    assert await stored_ids(store, "Meter:first:2026") == ["first/0"]


async def test_flushes_overlap_but_never_on_the_same_stream(store: SqliteEventStore) -> None:
    gated = Gated(store)
    a, b = "Meter:A:2026", "Meter:B:2026"
    async with BatchedWriter(  # type: ignore[arg-type]
        gated, max_batch_events=1, max_delay_s=0, max_concurrent_flushes=2
    ) as writer:
        try:
            first_a = writer.submit_nowait(a, readings(a, 0, 1))
            await gated.entered.wait()
            only_b = writer.submit_nowait(b, readings(b, 0, 1))
            second_a = writer.submit_nowait(a, readings(a, 1, 1))
            await wait_all_tasks_blocked()
            # B's flush runs beside A's; A's second append waits for its first to finish.
            assert gated.calls == [[a], [b]]
        finally:
            gated.gate.set()
        results = [await first_a, await only_b, await second_a]
    assert gated.calls == [[a], [b], [a]]
    assert [r.last_version for r in results] == [1, 1, 2]
    assert await stored_ids(store, a) == [f"{a}/0", f"{a}/1"]


async def test_flush_when_pending_events_reach_the_batch_size(store: SqliteEventStore) -> None:
    async with BatchedWriter(store, max_batch_events=4, max_delay_s=3600) as writer:
        with anyio.fail_after(10):  # a hang guard, not a timing assertion
            first = writer.submit_nowait("Meter:1:2026", readings("Meter:1:2026", 0, 2))
            second = writer.submit_nowait("Meter:2:2026", readings("Meter:2:2026", 0, 2))
            await first, await second
        assert writer.metrics.flushes == 1
        lone = writer.submit_nowait("Meter:3:2026", readings("Meter:3:2026", 0, 1))
        await wait_all_tasks_blocked()
        assert not lone.done()  # below the batch size and far from the delay: still pending
    assert lone.done()
    assert await store.head("Meter:3:2026") == 1


async def test_flush_when_the_oldest_pending_event_reaches_the_delay(
    store: SqliteEventStore,
) -> None:
    async with BatchedWriter(store, max_batch_events=1000, max_delay_s=0.01) as writer:
        with anyio.fail_after(10):  # a hang guard, not a timing assertion
            result = await writer.submit("Meter:1:2026", readings("Meter:1:2026", 0, 1))
    assert result.last_version == 1
    assert writer.metrics.flushes == 1


async def test_leaving_the_block_flushes_everything_pending(store: SqliteEventStore) -> None:
    streams = [f"Meter:{m}:2026" for m in range(4)]
    async with BatchedWriter(store, max_batch_events=10_000, max_delay_s=3600) as writer:
        handles = [writer.submit_nowait(s, readings(s, 0, 3)) for s in streams]
        handles += [writer.submit_nowait(s, readings(s, 3, 3)) for s in streams]
        await wait_all_tasks_blocked()
        assert not any(h.done() for h in handles)
    assert all(h.done() for h in handles)
    for stream_id in streams:
        expected = [e.event_id for e in readings(stream_id, 0, 6)]
        assert await stored_ids(store, stream_id) == expected
    with pytest.raises(WriterClosed):
        await writer.submit(streams[0], readings(streams[0], 6, 1))


async def test_enqueue_with_room_is_still_a_cancellation_point(store: SqliteEventStore) -> None:
    # enqueue() does not yield to the event loop while the queue has room, but a cancelled
    # submitter must not slip its events in.
    stream_id = "Meter:cancelled:2026"
    async with BatchedWriter(store, max_delay_s=0) as writer:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await writer.enqueue(stream_id, readings(stream_id, 0, 1))
        assert scope.cancelled_caught
        assert writer.queued == 0
        handle = await writer.enqueue(stream_id, readings(stream_id, 1, 1))
    assert (await handle).last_version == 1
    assert await stored_ids(store, stream_id) == [f"{stream_id}/1"]


async def test_block_failing_still_flushes_what_was_submitted(store: SqliteEventStore) -> None:
    with pytest.raises(RuntimeError, match="poller crashed"):
        async with BatchedWriter(store, max_delay_s=3600) as writer:
            handle = writer.submit_nowait("Meter:1:2026", readings("Meter:1:2026", 0, 2))
            raise RuntimeError("poller crashed")
    assert (await handle).last_version == 2
    assert await store.head("Meter:1:2026") == 2


async def test_same_fact_submitted_twice_in_one_flush_is_stored_once(
    store: SqliteEventStore,
) -> None:
    stream_id = "Meter:1:2026"
    async with BatchedWriter(store, max_delay_s=3600) as writer:
        a = writer.submit_nowait(stream_id, readings(stream_id, 0, 2))
        b = writer.submit_nowait(stream_id, readings(stream_id, 1, 2))
    assert await stored_ids(store, stream_id) == [e.event_id for e in readings(stream_id, 0, 3)]
    assert ((await a).first_version, (await a).last_version) == (1, 2)
    assert ((await b).first_version, (await b).last_version) == (2, 3)


async def test_bad_event_fails_only_its_own_submitter(store: SqliteEventStore) -> None:
    # Not JSON: the store refuses the append before any I/O.
    broken = new_event("broken/0", data={"value": object()})
    async with BatchedWriter(store, max_delay_s=3600) as writer:
        bad = writer.submit_nowait("Meter:bad:2026", [broken])
        good = writer.submit_nowait("Meter:1:2026", readings("Meter:1:2026", 0, 2))
    with pytest.raises(TypeError):
        await bad
    assert (await good).last_version == 2
    assert await store.head("Meter:bad:2026") == 0


async def test_invalid_submissions_are_refused_with_clear_errors(store: SqliteEventStore) -> None:
    writer = BatchedWriter(store)
    with pytest.raises(WriterClosed, match="not running"):
        writer.submit_nowait("Meter:1:2026", readings("Meter:1:2026", 0, 1))
    async with writer:
        with pytest.raises(ValueError, match="at least one event"):
            await writer.submit("Meter:1:2026", [])
        with pytest.raises(ValueError, match="non-empty string"):
            await writer.submit("", readings("x", 0, 1))
        with pytest.raises(TypeError, match="expected NewEvent"):
            await writer.submit("Meter:1:2026", [{"id": "x"}])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="max_batch_events"):
        BatchedWriter(store, max_batch_events=0)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    plan=st.lists(
        st.tuples(st.integers(0, 3), st.integers(1, 5)), min_size=1, max_size=25
    ),  # (stream number, events in the submission), in submission order
    max_batch_events=st.integers(1, 12),
    concurrent_flushes=st.integers(1, 3),
)
def test_any_mix_of_submissions_is_stored_once_in_submission_order(
    tmp_path_factory: pytest.TempPathFactory,
    plan: list[tuple[int, int]],
    max_batch_events: int,
    concurrent_flushes: int,
) -> None:
    path = tmp_path_factory.mktemp("prop") / "events.db"

    async def scenario() -> None:
        store = await SqliteEventStore.open(path)
        try:
            expected: dict[str, list[str]] = {}
            handles = []
            async with BatchedWriter(
                store,
                max_batch_events=max_batch_events,
                max_delay_s=0.001,
                max_concurrent_flushes=concurrent_flushes,
            ) as writer:
                for stream_no, count in plan:
                    stream_id = f"Meter:{stream_no}:2026"
                    batch = readings(stream_id, len(expected.get(stream_id, [])), count)
                    expected.setdefault(stream_id, []).extend(e.event_id for e in batch)
                    handles.append((stream_id, count, await writer.enqueue(stream_id, batch)))
            heads: dict[str, int] = {}
            for stream_id, count, handle in handles:
                result = handle.result()
                first = heads.get(stream_id, 0) + 1
                assert (result.first_version, result.last_version) == (first, first + count - 1)
                heads[stream_id] = result.last_version
            for stream_id, ids in expected.items():
                assert await stored_ids(store, stream_id) == ids
        finally:
            await store.aclose()

    anyio.run(scenario)
