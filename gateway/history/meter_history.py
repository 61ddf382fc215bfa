"""A meter's history as the poller sees it: the state a poll starts from, and where a poll goes.

``MeterHistory`` is the one seam between polling and storing: ``current(meter, year)`` before reading,
``record(meter, poll)`` after. ``CachedHistory`` implements it for both backends over a
``CachingRepository`` (states, snapshots, the local states of the Cosmos path) and an ``EventSink``
(the batched writer on the embedded store, or the outbox the forwarder drains to Cosmos DB);
``gateway.wiring`` builds one per backend (``embedded_history``, ``forwarded_history``). Loading states
with the New Year retry (``plan_poll``), idempotent storing (``gateway.store.reconcile``), snapshots
and the cached states live here, once.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from gateway.history.cached_repository import CachingRepository
from gateway.config.model import MeterConfig
from gateway.domain.events import ReadingGapDetected, SuspectReadingFlagged
from gateway.domain.meter import MeterState
from gateway.domain.normalize import AppendPlan, NormalizeSettings, load_states, plan_poll
from gateway.history.outbox import OutboxState
from gateway.domain.poll_result import PollResult
from gateway.history.sinks import EventSink, OutboxSink, OutboxView, WriterSink
from gateway.store.base import EventStore
from gateway.store.errors import EventIdConflict, StoreError
from gateway.store.reconcile import reconcile
from gateway.history.writer import BatchedWriter, WriterError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Recorded:
    """What recording one poll did: events appended now per type, events the store already had, the
    streams written, and the plans (the states after, the domain events)."""

    stored: Mapping[str, int]
    already: int
    streams: tuple[str, ...]
    plans: tuple[AppendPlan, ...]


NOTHING_RECORDED = Recorded({}, 0, (), ())

# What recording a poll can fail with (nothing of it stored; it is read again next poll).
RECORD_FAILURES: tuple[type[Exception], ...] = (StoreError, WriterError)


@dataclass(frozen=True, slots=True)
class Findings:
    """What the plans of a poll found, for the meter's health row."""

    gap_intervals: int
    suspects: int
    last_suspect: str | None
    interval_ends: tuple[datetime, ...]  # each profile's last interval end after the plans


def findings(plans: Sequence[AppendPlan], period_s: int) -> Findings:
    gaps = suspects = 0
    last_suspect: str | None = None
    ends: list[datetime] = []
    for plan in plans:
        ends.extend(plan.state_after.interval_ends.values())
        for event in plan.domain_events:
            if isinstance(event, ReadingGapDetected):
                gaps += max(1, int((event.gap_end - event.gap_start).total_seconds() // period_s))
            elif isinstance(event, SuspectReadingFlagged):
                suspects += 1
                last_suspect = f"{event.obis} at {event.capture_time.isoformat()}: {event.reason}"
    return Findings(gaps, suspects, last_suspect, tuple(ends))


class MeterHistory(Protocol):
    """Where the poller gets a meter's state and hands its polls; it never sees the store behind."""

    async def current(self, meter_id: str, year: int) -> MeterState:
        """What the store knows of the meter as of ``year`` (catch-up cursors, first contact)."""
        ...

    async def record(self, meter: MeterConfig, poll: PollResult, settings: NormalizeSettings) -> Recorded:
        """Normalize ``poll`` against the stored states and store the events (``StoreError`` and
        ``WriterError`` when nothing could be stored)."""
        ...

    def polled_elsewhere(self, meter_id: str) -> None:
        """Another process polled the meter since our last poll: trust nothing kept of it."""
        ...

    async def distrust(self, meter_id: str) -> None:
        """Another process stored to the meter while we did: drop what either may have missed."""
        ...

    async def forward(self, wait_s: float) -> tuple[OutboxState, str | None] | None:
        """For one-shot commands: forward what is queued for a far store, for at most ``wait_s``;
        None when nothing is ever queued (the embedded store)."""
        ...


class CachedHistory:
    """``MeterHistory`` over a ``CachingRepository`` and an ``EventSink``."""

    def __init__(self, repository: CachingRepository, sink: EventSink) -> None:
        self.repository = repository
        self.sink = sink

    async def current(self, meter_id: str, year: int) -> MeterState:
        return await self.repository.current(meter_id, year)

    def polled_elsewhere(self, meter_id: str) -> None:
        log.info("meter %s: polled by another process since our last poll; reloading its state", meter_id)
        self.repository.forget_meter(meter_id)

    async def distrust(self, meter_id: str) -> None:
        # Both processes stored against the same state, so the local state either saved last may
        # lack the other's events (dropped unless the forwarder's records confirm it).
        log.info("meter %s: polled by another process since our last poll; reloading its state", meter_id)
        await self.repository.distrust_meter(meter_id)

    async def forward(self, wait_s: float) -> tuple[OutboxState, str | None] | None:
        return await self.sink.forward(wait_s)

    async def record(self, meter: MeterConfig, poll: PollResult, settings: NormalizeSettings) -> Recorded:
        if not (poll.identity or poll.clock or poll.registers or poll.profiles or poll.events):
            return NOTHING_RECORDED
        plans = await plan_poll(self.repository, poll, meter, settings, states=self._states)
        stored: Counter[str] = Counter()
        already = 0
        streams = []
        for plan in plans:
            if not plan.events:
                continue
            streams.append(plan.stream_id)
            events = list(plan.events)
            try:
                append = await self.sink.submit(plan.stream_id, events, plan.expected_version)
            except EventIdConflict:
                # Facts read again that the state does not track (an event log re-read after the
                # health table lost its cursor): drop what the stream already holds, append the rest.
                found = await reconcile(self.repository.store, plan.stream_id, events, since=0)
                already += len(found.stored)
                events = list(found.remaining)
                if not events:
                    continue
                append = await self.sink.submit(plan.stream_id, events, plan.expected_version)
            if append.already_done:
                already += len(events)
                await self.repository.discard(meter.id, plan.year)  # the state did not know them
                continue
            stored.update(event.type for event in events)
            if append.last_version == plan.state_after.version:
                await self.repository.maybe_snapshot(meter.id, plan.year, plan.state_after)
                await self.repository.keep(meter.id, plan.year, plan.state_after)
            else:
                await self.repository.discard(meter.id, plan.year)  # some were already stored: reload
        return Recorded(dict(stored), already, tuple(streams), tuple(plans))

    async def _states(self, meter_id: str, years: frozenset[int]) -> Mapping[int, MeterState]:
        cached = self.repository.cached_states(meter_id, years)  # no far read while cached
        if cached is not None:
            return cached
        return await load_states(self.repository, meter_id, years)


def embedded_history(store: EventStore, writer: BatchedWriter) -> CachedHistory:
    """The embedded store: states read from the SQLite store (a cached state is checked against the
    stream's head), events appended by the batched writer at the plan's expected version."""
    return CachedHistory(CachingRepository(store), WriterSink(writer))


def forwarded_history(view: OutboxView, sink: OutboxSink) -> CachedHistory:
    """Cosmos DB through the outbox: states from the cache (trusted: the gateway is its meters' only
    writer), else the outbox's local states, else Cosmos with the pending events folded on top."""
    repository = CachingRepository(view, verify_head=False, local=view)  # type: ignore[arg-type]
    return CachedHistory(repository, sink)


__all__ = [
    "CachedHistory", "Findings", "MeterHistory", "NOTHING_RECORDED", "RECORD_FAILURES", "Recorded",
    "embedded_history", "findings", "forwarded_history",
]
