"""Batched event writer: many small submissions become one ``append_batch`` round trip per flush.

Pollers submit a few events for one stream at a time (``submit``/``enqueue``/``submit_nowait``).
The writer's flush loop groups what is pending by stream (submission order kept, several
submissions of a stream concatenated into one append) and flushes when ``max_batch_events`` are
pending or the oldest pending submission is ``max_delay_s`` old. The expected version of an append is
the submitter's (the normalizer's plan knows the stream's head) or else comes from an LRU cache of
stream heads, so either way a normal append costs zero store reads. Optionally up to
``max_concurrent_flushes`` flushes overlap (the backend can encode one batch while the disk syncs
the previous one, given a spare core); a stream is never in two flushes at once, so its appends
stay in order. The default is one flush at a time: on a busy 2-core box overlap did not pay.

Failure handling, per stream, without affecting the other streams of a flush:
* ``WrongExpectedVersion``: ``gateway.store.reconcile``: load the tail after the version we expected
  (up to the head the store reported), drop the events already stored (by event id: a retry after a
  lost acknowledgement, or another writer that stored the same fact), append the rest at the head; at
  most ``max_retries`` times.
* ``StoreUnavailable``: retry with bounded exponential backoff. Because the store makes a retry of
  an append that did land idempotent (``already_done``), a lost acknowledgement never duplicates.
Every submission ends with a result or an error delivered to its submitter, never silently.
"""
from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field
from itertools import chain
from types import TracebackType
from typing import Awaitable, Callable, Generator, Sequence, TypeVar

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from gateway.store.base import EventStore
from gateway.store.base import BatchOutcome
from gateway.store.errors import StoreError, StoreUnavailable, WrongExpectedVersion
from gateway.store.model import AppendRequest, AppendResult, NewEvent
from gateway.store.deadline import within
from gateway.store.reconcile import reconcile
from gateway.history.version_cache import StreamVersionCache

log = logging.getLogger(__name__)

T = TypeVar("T")

LATENCY_SAMPLES_KEPT = 100_000
"""Latency samples are a sliding window so a long-running gateway does not grow without bound."""


class WriterError(Exception):
    """Base class of errors raised by the batched writer itself (not by the store)."""


class WriterClosed(WriterError):
    """The writer is not running (not entered yet, shut down, or cancelled before the flush)."""


class WriterQueueFull(WriterError):
    """``submit_nowait`` found the submission queue full; use ``submit``/``enqueue`` to wait."""


@dataclass(slots=True)
class WriterMetrics:
    """Counters of the flush loop (mutable: updated as the writer runs)."""

    flushes: int = 0
    store_calls: int = 0  # append_batch round trips
    appends: int = 0  # append requests sent (one per stream per round trip)
    events_written: int = 0  # events newly stored (not counting already-stored ones)
    retries: int = 0  # conflict retries + unavailability retries
    conflicts: int = 0
    head_reads: int = 0  # store.head() calls made on cache misses and conflicts
    # One sample per append request: the duration of the store round trip that carried it
    # (including any wait inside the store, e.g. for its connection while another flush commits).
    append_latencies_s: deque[float] = field(
        default_factory=lambda: deque(maxlen=LATENCY_SAMPLES_KEPT)
    )

    def latency_percentile_ms(self, percentile: float) -> float | None:
        """Nearest-rank percentile of the append latencies in milliseconds (None if no sample)."""
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        samples = sorted(self.append_latencies_s)
        if not samples:
            return None
        rank = max(1, math.ceil(percentile / 100 * len(samples)))
        return samples[rank - 1] * 1000.0

    def reset(self) -> None:
        self.flushes = self.store_calls = self.appends = self.events_written = 0
        self.retries = self.conflicts = self.head_reads = 0
        self.append_latencies_s.clear()


class AppendHandle:
    """Future-like outcome of one submission; ``await handle`` returns the result or raises."""

    __slots__ = ("stream_id", "events", "expected", "enqueued_at", "_finished", "_waiters", "_result", "_error")

    def __init__(
        self, stream_id: str, events: tuple[NewEvent, ...], enqueued_at: float, expected: int | None = None
    ) -> None:
        self.stream_id = stream_id
        self.events = events
        self.expected = expected  # the version the submitter knows the stream at (None: the writer's cache)
        self.enqueued_at = enqueued_at
        self._finished = False
        # Created by the first waiter only: most submissions are resolved before anyone waits,
        # and an anyio.Event per submission was a measurable share of the submission cost.
        self._waiters: anyio.Event | None = None
        self._result: AppendResult | None = None
        self._error: BaseException | None = None

    def done(self) -> bool:
        return self._finished

    def result(self) -> AppendResult:
        """The outcome of a finished submission (raises its error); WriterError if still pending."""
        if not self._finished:
            raise WriterError(f"stream {self.stream_id!r}: submission still pending")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    async def wait(self) -> AppendResult:
        if self._finished:
            await anyio.lowlevel.checkpoint()  # still a cancellation point, as Event.wait() is
        else:
            if self._waiters is None:
                self._waiters = anyio.Event()
            await self._waiters.wait()
        return self.result()

    def __await__(self) -> Generator[object, None, AppendResult]:
        return self.wait().__await__()

    def _resolve(self, result: AppendResult) -> None:
        if not self._finished:
            self._result = result
            self._finish()

    def _fail(self, error: BaseException) -> None:
        if not self._finished:
            self._error = error
            self._finish()

    def _finish(self) -> None:
        self._finished = True
        if self._waiters is not None:
            self._waiters.set()


class _StreamWork:
    """One stream's share of a flush: its submissions, the events still to store, retry state."""

    __slots__ = (
        "stream_id", "handles", "events", "expected", "attempts", "stored_versions", "deduplicated"
    )

    def __init__(self, stream_id: str, handles: list[AppendHandle]) -> None:
        self.stream_id = stream_id
        self.handles = handles
        self.events: list[NewEvent] = (
            list(handles[0].events)
            if len(handles) == 1
            else list(chain.from_iterable(h.events for h in handles))
        )
        self.expected = 0
        self.attempts = 0
        # event id → version, for events found already stored while resolving a conflict
        self.stored_versions: dict[str, int] = {}
        # Two submissions of the same fact (same deterministic event id) in one flush: store it
        # once. A repeated id within ONE submission is left for the store to refuse.
        self.deduplicated = False
        if len(handles) > 1:
            ids = {event.event_id for event in self.events}
            if len(ids) != len(self.events):
                self.deduplicated = True
                first_seen: dict[str, NewEvent] = {}
                for event in self.events:
                    first_seen.setdefault(event.event_id, event)
                self.events = list(first_seen.values())


class BatchedWriter:
    """Groups submissions per stream and appends them with one ``append_batch`` per flush.

    Use as ``async with BatchedWriter(store) as writer:``; leaving the block flushes everything
    submitted (also when the block raises), then stops the flush loop.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        max_batch_events: int = 500,
        max_delay_s: float = 0.05,
        queue_capacity: int = 10_000,
        max_retries: int = 3,
        cache_capacity: int = 10_000,
        max_concurrent_flushes: int = 1,
        backoff_initial_s: float = 0.05,
        backoff_max_s: float = 2.0,
        store_timeout_s: float = 30.0,
    ) -> None:
        for name, value in (
            ("max_batch_events", max_batch_events),
            ("queue_capacity", queue_capacity),
            ("cache_capacity", cache_capacity),
            ("max_concurrent_flushes", max_concurrent_flushes),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if max_retries < 0:
            raise ValueError(f"max_retries cannot be negative, got {max_retries}")
        if max_delay_s < 0 or backoff_initial_s < 0 or backoff_max_s < backoff_initial_s:
            raise ValueError("delays must be non-negative and backoff_max_s >= backoff_initial_s")
        if store_timeout_s <= 0:
            raise ValueError(f"store_timeout_s must be positive, got {store_timeout_s}")
        self.store = store
        self.max_batch_events = max_batch_events
        self.max_delay_s = max_delay_s
        self.queue_capacity = queue_capacity
        self.max_retries = max_retries
        self.max_concurrent_flushes = max_concurrent_flushes
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.store_timeout_s = store_timeout_s
        self.cache = StreamVersionCache(cache_capacity)
        self.metrics = WriterMetrics()
        # queue_capacity counts submissions waiting for the flush loop; a full queue blocks
        # enqueue()/submit() (back-pressure on the pollers) instead of growing memory.
        self._send, self._receive = anyio.create_memory_object_stream[AppendHandle](
            queue_capacity
        )
        self._task_group: TaskGroup | None = None
        self._running = False
        self._stopped = anyio.Event()
        self._collecting: dict[str, list[AppendHandle]] = {}
        # Flushes in progress (failed with WriterClosed if cancelled) and the streams they hold.
        self._flushing: list[list[_StreamWork]] = []
        self._streams_in_flight: set[str] = set()
        self._flush_finished = anyio.Event()

    # ---- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> BatchedWriter:
        if self._task_group is not None:
            raise WriterError("a BatchedWriter can be entered once")
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._run, name="BatchedWriter flush loop")
        self._running = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._task_group is not None
        self._running = False
        self._send.close()  # the flush loop drains what is queued, flushes it, then ends
        if isinstance(exc, anyio.get_cancelled_exc_class()):
            # Cancelled: no flushing; the loop fails what is left with WriterClosed.
            return await self._task_group.__aexit__(exc_type, exc, tb)
        # Also when the block raised: the submitted events are still valid facts, store them.
        try:
            await self._stopped.wait()
        except BaseException as drain_exc:  # cancelled while draining
            await self._task_group.__aexit__(type(drain_exc), drain_exc, drain_exc.__traceback__)
            raise
        # The loop has ended, so this only raises if the loop itself crashed; the block's own
        # exception (if any) then propagates unchanged, not wrapped in an exception group.
        await self._task_group.__aexit__(None, None, None)
        return None

    # ---- submission ------------------------------------------------------------------------

    def _new_handle(self, stream_id: str, events: Sequence[NewEvent], expected: int | None) -> AppendHandle:
        if not isinstance(stream_id, str) or not stream_id:
            raise ValueError(f"stream id must be a non-empty string, got {stream_id!r}")
        batch = tuple(events)
        if not batch:
            raise ValueError(f"stream {stream_id!r}: a submission needs at least one event")
        for event in batch:
            if not isinstance(event, NewEvent):
                raise TypeError(
                    f"stream {stream_id!r}: expected NewEvent, got {type(event).__name__}"
                )
        if not self._running:
            raise WriterClosed(f"stream {stream_id!r}: the writer is not running")
        return AppendHandle(stream_id, batch, anyio.current_time(), expected)

    async def enqueue(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: int | None = None
    ) -> AppendHandle:
        """Queue a submission, waiting while the queue is full; await the handle for the outcome.
        ``expected_version``: the stream's head as the submitter knows it (else the writer's cache)."""
        handle = self._new_handle(stream_id, events, expected_version)
        # A cancellation point, but no yield to the event loop while the queue has room: a yield
        # per submission woke the flush loop once per submission, which cost a burst of polls
        # (a catch-up, a slot start) more than their encoding (~27 µs per submission measured).
        await anyio.lowlevel.checkpoint_if_cancelled()
        try:
            try:
                self._send.send_nowait(handle)
            except anyio.WouldBlock:
                await self._send.send(handle)  # full: wait for room (back-pressure)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise WriterClosed(f"stream {stream_id!r}: the writer is shutting down") from None
        return handle

    def submit_nowait(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: int | None = None
    ) -> AppendHandle:
        """Queue a submission without waiting; WriterQueueFull if the queue is at capacity."""
        handle = self._new_handle(stream_id, events, expected_version)
        try:
            self._send.send_nowait(handle)
        except anyio.WouldBlock:
            raise WriterQueueFull(
                f"stream {stream_id!r}: {self.queue_capacity} submissions already queued"
            ) from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise WriterClosed(f"stream {stream_id!r}: the writer is shutting down") from None
        return handle

    async def submit(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: int | None = None
    ) -> AppendResult:
        """Append ``events`` to ``stream_id`` in the next flush and return the outcome.

        Raises the StoreError that made the append fail (after the retries), or WriterClosed.
        """
        handle = await self.enqueue(stream_id, events, expected_version)
        return await handle.wait()

    @property
    def queued(self) -> int:
        """Submissions waiting in the queue (not yet picked up by the flush loop)."""
        return self._send.statistics().current_buffer_used

    # ---- flush loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            async with anyio.create_task_group() as flushes:
                while True:
                    closed = await self._collect()
                    if self._collecting:
                        await self._wait_for_flush_slot(self._collecting)
                        groups, self._collecting = self._collecting, {}
                        self._streams_in_flight.update(groups)
                        flushes.start_soon(self._flush, groups)
                    if closed:
                        break
        finally:
            self._fail_unflushed(
                WriterClosed("the writer stopped before this submission's outcome was known")
            )
            self._receive.close()
            self._stopped.set()

    async def _wait_for_flush_slot(self, groups: dict[str, list[AppendHandle]]) -> None:
        """Wait until a flush of ``groups`` may start.

        Up to ``max_concurrent_flushes`` flushes run at once, so the backend's work on one batch
        (SQLite: encoding in this thread) overlaps its I/O on the previous one. A stream is never
        in two flushes at once: its expected versions and its order of appends stay exact.
        """
        while (
            len(self._flushing) >= self.max_concurrent_flushes
            or not self._streams_in_flight.isdisjoint(groups)
        ):
            await self._flush_finished.wait()

    async def _collect(self) -> bool:
        """Move queued submissions into ``_collecting`` until a flush is due.

        Returns True when the queue is closed and empty (the writer is shutting down).
        """
        groups = self._collecting
        receive = self._receive
        pending_events = 0
        deadline: float | None = None
        while pending_events < self.max_batch_events:
            handle: AppendHandle | None
            try:
                # No checkpoint per item: under load the queue is rarely empty.
                handle = receive.receive_nowait()
            except anyio.WouldBlock:
                handle = None
            except anyio.EndOfStream:
                return True
            if handle is None:
                try:
                    if deadline is None:
                        handle = await receive.receive()
                    else:
                        # anyio does not cancel a task whose wait already completed, so an item
                        # handed over as the deadline passes is still returned, never lost.
                        with anyio.move_on_after(deadline - anyio.current_time()):
                            handle = await receive.receive()
                        if handle is None:
                            return False
                except anyio.EndOfStream:
                    return True
            if deadline is None:
                deadline = handle.enqueued_at + self.max_delay_s
            group = groups.get(handle.stream_id)
            if group is None:
                groups[handle.stream_id] = [handle]
            else:
                group.append(handle)
            pending_events += len(handle.events)
        return False

    async def _flush(self, groups: dict[str, list[AppendHandle]]) -> None:
        self.metrics.flushes += 1
        works: list[_StreamWork] = []
        self._flushing.append(works)
        try:
            works.extend(_StreamWork(stream_id, handles) for stream_id, handles in groups.items())
            active: list[_StreamWork] = []
            for work in works:
                # The first submission's expected version (later ones of the stream follow it).
                head = work.handles[0].expected
                if head is None:
                    head = self.cache.get(work.stream_id)
                if head is None:
                    try:
                        head = await self._read_head(work.stream_id)
                    except StoreError as error:
                        self._fail_work(work, error)
                        continue
                    self.cache.set(work.stream_id, head)
                work.expected = head
                active.append(work)
            while active:
                active = await self._append_round(active)
        except Exception as error:  # a bug below us: tell the submitters, keep the writer alive
            log.exception("batched writer: unexpected error during a flush")
            for stream_id, handles in groups.items():
                self.cache.invalidate(stream_id)
                for handle in handles:
                    handle._fail(error)
        finally:
            self._flushing.remove(works)
            self._streams_in_flight.difference_update(groups)
            self._flush_finished.set()
            self._flush_finished = anyio.Event()

    async def _append_round(self, works: list[_StreamWork]) -> list[_StreamWork]:
        """One append_batch for ``works``; returns the streams to try again."""
        requests = [AppendRequest(w.stream_id, w.expected, tuple(w.events)) for w in works]
        try:
            outcomes = [
                (o.result, o.error)
                for o in await self._with_backoff(lambda: self._timed_append_batch(requests))
            ]
        except StoreError as error:
            for work in works:
                self._fail_work(work, error)
            return []
        except Exception as error:
            # The backend refused the call before any I/O (bad event data, invalid request):
            # find the culprit by appending each stream on its own, so only its submitters fail.
            if len(works) == 1:
                self._fail_work(works[0], error)
                return []
            outcomes = [await self._append_alone(request) for request in requests]
        retry: list[tuple[_StreamWork, int | None]] = []
        unavailable = False
        for work, (result, error) in zip(works, outcomes, strict=True):
            if result is not None:
                self._complete(work, result)
                continue
            assert error is not None, "append outcome without result nor error"
            retryable = isinstance(error, (WrongExpectedVersion, StoreUnavailable))
            if not retryable or work.attempts >= self.max_retries:
                self._fail_work(work, error)
                continue
            work.attempts += 1
            self.metrics.retries += 1
            if isinstance(error, WrongExpectedVersion):
                self.metrics.conflicts += 1
                retry.append((work, error.actual))
            else:
                unavailable = True
                retry.append((work, None))  # it may have landed with its answer lost: read the head
        if unavailable:
            await anyio.sleep(self._backoff_delay(max(w.attempts for w, _ in retry)))
        still_to_append: list[_StreamWork] = []
        for work, head in retry:
            try:
                if await self._resync(work, head):
                    still_to_append.append(work)
            except StoreError as error:
                self._fail_work(work, error)
        return still_to_append

    async def _append_alone(
        self, request: AppendRequest
    ) -> tuple[AppendResult | None, Exception | None]:
        try:
            (outcome,) = await self._with_backoff(lambda: self._timed_append_batch([request]))
        except Exception as error:
            return None, error
        return outcome.result, outcome.error

    async def _resync(self, work: _StreamWork, head: int | None) -> bool:
        """Drop the events already stored (``gateway.store.reconcile``) and move to the stream's
        head (``head``: as the store reported it; None: read it); False if nothing is left."""
        self.cache.invalidate(work.stream_id)
        if head is None:
            head = await self._read_head(work.stream_id)
        found = await reconcile(
            self.store, work.stream_id, work.events, since=work.expected, head=head, via=self._with_backoff
        )
        if found.stored:
            work.stored_versions.update(found.stored)
            work.events = list(found.remaining)
        self.cache.set(work.stream_id, found.head)
        work.expected = found.head
        if not work.events:
            self._complete(work, None)
            return False
        return True

    async def _read_head(self, stream_id: str) -> int:
        self.metrics.head_reads += 1
        return await self._with_backoff(lambda: self.store.head(stream_id))

    async def _timed_append_batch(self, requests: list[AppendRequest]) -> list[BatchOutcome]:
        started = anyio.current_time()
        outcomes = await self.store.append_batch(requests)
        elapsed = anyio.current_time() - started
        self.metrics.store_calls += 1
        self.metrics.appends += len(requests)
        self.metrics.append_latencies_s.extend([elapsed] * len(requests))
        return outcomes

    async def _with_backoff(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()`` retried on StoreUnavailable; a store silent for ``store_timeout_s`` counts
        as unavailable (an append that landed anyway is then retried idempotently)."""
        attempt = 0
        while True:
            try:
                return await within(self.store_timeout_s, call)
            except StoreUnavailable:
                if attempt >= self.max_retries:
                    raise
                attempt += 1
                self.metrics.retries += 1
                await anyio.sleep(self._backoff_delay(attempt))

    def _backoff_delay(self, attempt: int) -> float:
        return min(self.backoff_max_s, self.backoff_initial_s * 2 ** (attempt - 1))

    # ---- outcomes --------------------------------------------------------------------------

    def _complete(self, work: _StreamWork, result: AppendResult | None) -> None:
        """Resolve every submission of ``work``; ``result`` is None when all were already stored."""
        stream_id = work.stream_id
        if result is not None:
            self.cache.set(stream_id, result.last_version)
            if not result.already_done:
                self.metrics.events_written += len(work.events)
        if result is not None and not work.stored_versions and not work.deduplicated:
            # Common case: the submissions' events are contiguous from result.first_version.
            version = result.first_version
            for handle in work.handles:
                count = len(handle.events)
                handle._resolve(
                    AppendResult(stream_id, version, version + count - 1, result.already_done)
                )
                version += count
            return
        versions = dict(work.stored_versions)
        if result is not None:
            for offset, event in enumerate(work.events):
                versions[event.event_id] = result.first_version + offset
        for handle in work.handles:
            found = [versions[event.event_id] for event in handle.events]
            already = (result is None or result.already_done) or all(
                event.event_id in work.stored_versions for event in handle.events
            )
            handle._resolve(AppendResult(stream_id, min(found), max(found), already))

    def _fail_work(self, work: _StreamWork, error: BaseException) -> None:
        # The append may or may not have landed: the next append to this stream reads the head.
        self.cache.invalidate(work.stream_id)
        for handle in work.handles:
            handle._fail(error)

    def _fail_unflushed(self, error: WriterClosed) -> None:
        for works in self._flushing:
            for work in works:
                for handle in work.handles:
                    handle._fail(error)
        for handles in self._collecting.values():
            for handle in handles:
                handle._fail(error)
        self._collecting = {}
        while True:
            try:
                self._receive.receive_nowait()._fail(error)
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
