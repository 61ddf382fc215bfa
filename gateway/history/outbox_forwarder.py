"""Forwarder: drains the local outbox (``gateway.history.outbox``) to the far event store, exactly once.

Each round appends the oldest pending events of the longest-waiting streams with one
``append_batch`` at the far heads recorded in the outbox and settles the outcome locally in one
transaction; outages are waited out, permanent refusals are set aside as poison. How exactly once
holds, and why poison does not block a stream: docs/architecture.md, "Forwarder".
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Awaitable, Callable, TypeVar

import anyio

from gateway.history.outbox import Outbox, Settlement, StreamBatch
from gateway.store.base import EventStore
from gateway.store.errors import (
    AppendTooLarge,
    EventIdConflict,
    StoreError,
    StoreUnavailable,
    WrongExpectedVersion,
)
from gateway.store.model import AppendRequest, AppendResult
from gateway.store.deadline import within
from gateway.store.reconcile import reconcile

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MAX_APPEND_BYTES = 192 * 1024
"""Payload bytes per append: below the Cosmos commit limit (256 KB) with room for the envelope."""


@dataclass(slots=True)
class ForwarderMetrics:
    """Counters since the forwarder was created (mutable: updated as it runs)."""

    rounds: int = 0
    store_calls: int = 0  # append_batch round trips
    forwarded: int = 0  # events newly stored in the far store
    already_stored: int = 0  # events found already there (lost acknowledgement, crash retry)
    poisoned: int = 0
    conflicts: int = 0  # WrongExpectedVersion answers
    unavailable: int = 0  # rounds that ended with StoreUnavailable


@dataclass(frozen=True, slots=True)
class DrainReport:
    forwarded: int
    already_stored: int
    poisoned: int
    rounds: int


@dataclass(slots=True)
class _Round:
    """Outcome of one round being collected."""

    forwarded: dict[str, tuple[int, ...]] = field(default_factory=dict)
    heads: dict[str, int] = field(default_factory=dict)
    poisoned: list[tuple[int, str, str]] = field(default_factory=list)
    new_events: int = 0
    already_stored: int = 0
    unavailable: StoreUnavailable | None = None

    def settlement(self) -> Settlement:
        return Settlement(forwarded=self.forwarded, heads=self.heads, poisoned=self.poisoned)


def _is_refusal(error: BaseException) -> bool:
    """A request the backend refused before any I/O (bad data); an anyio task group may wrap it."""
    if isinstance(error, BaseExceptionGroup):
        return all(_is_refusal(inner) for inner in error.exceptions)
    return isinstance(error, (ValueError, TypeError))


class Forwarder:
    """Moves events from ``outbox`` to ``store``. ``await run()`` until cancelled, or ``drain_once()``."""

    def __init__(
        self,
        outbox: Outbox,
        store: EventStore,
        *,
        max_streams: int = 64,
        max_events_per_append: int = 500,
        max_append_bytes: int = DEFAULT_MAX_APPEND_BYTES,
        store_timeout_s: float = 30.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 60.0,
        idle_wait_s: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        for name, value in (
            ("max_streams", max_streams),
            ("max_events_per_append", max_events_per_append),
            ("max_append_bytes", max_append_bytes),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if store_timeout_s <= 0 or idle_wait_s <= 0:
            raise ValueError("store_timeout_s and idle_wait_s must be positive")
        if backoff_initial_s <= 0 or backoff_max_s < backoff_initial_s:
            raise ValueError("backoff_initial_s must be positive and backoff_max_s >= backoff_initial_s")
        self.outbox = outbox
        self.store = store
        self.max_streams = max_streams
        self.max_events_per_append = max_events_per_append
        self.max_append_bytes = max_append_bytes
        self.store_timeout_s = store_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.idle_wait_s = idle_wait_s
        self.metrics = ForwarderMetrics()
        self._rng = rng or random.Random()
        # Streams whose last batch was refused as a whole: smaller batches until one succeeds.
        self._event_limits: dict[str, int] = {}

    # -- loops ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Forward continuously until cancelled; an unavailable store is waited out, never fatal."""
        failures = 0
        while True:
            # Taken before draining, so a put during the drain wakes the wait below at once.
            changed = self.outbox.changed()
            progress_before = self._progress()
            try:
                await self.drain_once()
            except StoreUnavailable as error:
                if self._progress() != progress_before:
                    # Some streams went through (one stream's trouble): keep the next try soon.
                    failures = 0
                failures += 1
                delay = self._backoff_delay(failures)
                if failures == 1:
                    log.warning("forwarder: far store unavailable (%s); retrying, events are kept", error)
                else:
                    log.info("forwarder: still unavailable after %d attempts (%s); next in %.1f s",
                             failures, error, delay)
                await anyio.sleep(delay)
                continue
            if failures:
                log.warning("forwarder: far store reachable again after %d failed attempts", failures)
                failures = 0
            with anyio.move_on_after(self.idle_wait_s):
                await changed.wait()

    def _progress(self) -> int:
        m = self.metrics
        return m.forwarded + m.already_stored + m.poisoned

    def _backoff_delay(self, failures: int) -> float:
        ceiling = min(self.backoff_max_s, self.backoff_initial_s * 2 ** min(failures - 1, 62))
        # Jitter between half and all of the ceiling: many boxes coming back after one WAN outage
        # do not hit Cosmos in lockstep, and the wait never collapses to zero.
        return self._rng.uniform(ceiling / 2, ceiling)

    async def drain_once(self) -> DrainReport:
        """Forward every event pending when called (not those put meanwhile), then return.

        Raises ``StoreUnavailable`` (after settling what did succeed) if the far store fails.
        """
        up_to = await self.outbox.last_seq()
        report = DrainReport(0, 0, 0, 0)
        while up_to:
            batches = await self.outbox.next_batches(
                max_streams=self.max_streams,
                max_events=self.max_events_per_append,
                max_bytes=self.max_append_bytes,
                event_limits=self._event_limits,
                up_to=up_to,
            )
            if not batches:
                break
            outcome = await self._round(batches)
            report = DrainReport(
                report.forwarded + outcome.new_events,
                report.already_stored + outcome.already_stored,
                report.poisoned + len(outcome.poisoned),
                report.rounds + 1,
            )
            if outcome.unavailable is not None:
                self.metrics.unavailable += 1
                raise outcome.unavailable
        return report

    # -- one round ------------------------------------------------------------------------------

    async def _round(self, batches: list[StreamBatch]) -> _Round:
        self.metrics.rounds += 1
        outcome = _Round()
        try:
            await self._forward(batches, outcome)
        except StoreUnavailable as error:
            outcome.unavailable = error
        finally:
            # Settle what was learned even when the round stopped half way (also when cancelled:
            # shielded, it is a short local transaction, and it saves re-checking the far tail).
            with anyio.CancelScope(shield=True):
                await self.outbox.settle(outcome.settlement())
        self.metrics.forwarded += outcome.new_events
        self.metrics.already_stored += outcome.already_stored
        self.metrics.poisoned += len(outcome.poisoned)
        return outcome

    async def _forward(self, batches: list[StreamBatch], outcome: _Round) -> None:
        cold = {b.stream_id: await self._call(lambda b=b: self.store.head(b.stream_id))
                for b in batches if b.expected_version is None}
        # Durable before appending at them: a crash after the append retries at the same version.
        await self.outbox.record_heads(cold)
        requests = [
            AppendRequest(
                b.stream_id,
                b.expected_version if b.expected_version is not None else cold[b.stream_id],
                tuple(p.event for p in b.events),
            )
            for b in batches
        ]
        results: list[tuple[AppendResult | None, BaseException | None]]
        try:
            self.metrics.store_calls += 1
            outcomes = await self._call(lambda: self.store.append_batch(requests))
            results = [(o.result, o.error) for o in outcomes]
        except StoreUnavailable:
            raise
        except Exception as error:
            if not _is_refusal(error):
                raise
            # Refused before any I/O: find the culprit stream by appending each alone.
            results = [await self._append_alone(r) if len(requests) > 1 else (None, error)
                       for r in requests]
        for batch, request, (result, error) in zip(batches, requests, results, strict=True):
            try:
                await self._settle_stream(batch, request, result, error, outcome)
            except StoreUnavailable as unavailable:
                outcome.unavailable = unavailable

    async def _append_alone(
        self, request: AppendRequest
    ) -> tuple[AppendResult | None, BaseException | None]:
        try:
            self.metrics.store_calls += 1
            (result,) = await self._call(lambda: self.store.append_batch([request]))
        except StoreUnavailable as error:
            return None, error
        except Exception as error:
            if not _is_refusal(error):
                raise
            return None, error
        return result.result, result.error

    async def _settle_stream(
        self,
        batch: StreamBatch,
        request: AppendRequest,
        result: AppendResult | None,
        error: BaseException | None,
        outcome: _Round,
    ) -> None:
        stream_id = batch.stream_id
        if result is not None:
            self._event_limits.pop(stream_id, None)
            outcome.forwarded[stream_id] = tuple(p.seq for p in batch.events)
            outcome.heads[stream_id] = result.last_version
            if result.already_done:
                outcome.already_stored += len(batch.events)
            else:
                outcome.new_events += len(batch.events)
            return
        assert error is not None, "append outcome without result nor error"
        if isinstance(error, StoreUnavailable):
            raise error
        if isinstance(error, WrongExpectedVersion):
            self.metrics.conflicts += 1
            await self._resync(batch, request.expected_version, error.actual, outcome)
        elif isinstance(error, EventIdConflict):
            await self._resolve_id_conflict(batch, error, outcome)
        elif isinstance(error, AppendTooLarge) or _is_refusal(error):
            if len(batch.events) > 1:
                # Too large: halve until it fits. Bad data: one by one, to find the event.
                smaller = len(batch.events) // 2 if isinstance(error, AppendTooLarge) else 1
                self._event_limits[stream_id] = smaller
            else:
                self._poison(batch.events[0].seq, error, outcome, stream_id)
        elif isinstance(error, StoreError):
            # Not a refusal we know to be permanent: treat it as an outage rather than lose data.
            log.warning("forwarder: stream %r: unexpected store error, will retry: %s", stream_id, error)
            raise StoreUnavailable(f"unexpected store error: {error}", stream_id) from error
        else:
            raise error

    async def _resync(self, batch: StreamBatch, expected: int, head: int, outcome: _Round) -> None:
        """The far head is not where the outbox thought (``head``, as the store reported it): what is
        already there is forwarded (``gateway.store.reconcile``), the head moves."""
        stream_id = batch.stream_id
        if head == expected:
            # A conflict the store cannot show us: back off instead of spinning on it.
            raise StoreUnavailable(
                f"the store refused version {expected} as stale but reports it as the head", stream_id
            )
        found = await reconcile(
            self.store, stream_id, [p.event for p in batch.events], since=expected, head=head, via=self._call
        )
        done = tuple(p.seq for p in batch.events if p.event.event_id in found.stored)
        if done:
            outcome.forwarded[stream_id] = done
            outcome.already_stored += len(done)
        outcome.heads[stream_id] = found.head

    async def _resolve_id_conflict(
        self, batch: StreamBatch, error: EventIdConflict, outcome: _Round
    ) -> None:
        stream_id = batch.stream_id
        culprit = next((p for p in batch.events if p.event.event_id == error.event_id), None)
        if culprit is None:
            # The store named an id we did not send: isolate by going one event at a time.
            if len(batch.events) > 1:
                self._event_limits[stream_id] = 1
            else:
                self._poison(batch.events[0].seq, error, outcome, stream_id)
            return
        found = await reconcile(self.store, stream_id, [culprit.event], since=0, via=self._call)
        if found.stored:
            # Forwarded before (its id outlived our memory of it, or came back by another path).
            outcome.forwarded[stream_id] = (culprit.seq,)
            outcome.already_stored += 1
        else:
            self._poison(culprit.seq, error, outcome, stream_id)

    def _poison(self, seq: int, error: BaseException, outcome: _Round, stream_id: str) -> None:
        while isinstance(error, BaseExceptionGroup) and error.exceptions:
            error = error.exceptions[0]  # the backend's own error, not a task group's wrapper
        reason = str(error) or type(error).__name__
        log.error("forwarder: stream %r: event set aside as poison (%s: %s)",
                  stream_id, type(error).__name__, reason)
        outcome.poisoned.append((seq, type(error).__name__, reason))

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        """One far-store call; silence for ``store_timeout_s`` counts as unavailability (a write
        that landed anyway is then recognised by the retry)."""
        return await within(self.store_timeout_s, call, what="the far store")
