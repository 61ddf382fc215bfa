"""Where a poll's events go: the poller's event sink, one per kind of store.

``WriterSink`` (SQLite) hands them to the batched writer; ``OutboxSink`` (Cosmos DB) puts them in the
local outbox, which a ``Forwarder`` drains. ``OutboxView`` is the matching read side: a stream as it
will be once drained, read from its local state when it has one, with a bounded wait for streams the
outbox never wrote. The rules: docs/architecture.md, "Sinks: SQLite and Cosmos DB".
"""
from __future__ import annotations

import logging
from typing import Awaitable, Callable, Protocol, Sequence, TypeVar

import anyio

from gateway.history.outbox import LocalState, Outbox, OutboxState
from gateway.history.outbox_forwarder import Forwarder
from gateway.store.base import EventStore
from gateway.store.errors import StoreUnavailable, StreamNotFound
from gateway.store.model import NO_STREAM, AppendResult, NewEvent, RecordedEvent, Snapshot, StreamInfo
from gateway.history.writer import BatchedWriter

log = logging.getLogger(__name__)

T = TypeVar("T")

NEW_STREAM_WAIT_S = 3.0
"""How long a stream the outbox never wrote is looked for in the far store before taken as new."""

TAKEN_AS_NEW_S = 60.0
"""How long a stream taken as new stays so before the far store is asked again."""


class EventSink(Protocol):
    """What the poller hands a plan's events to."""

    async def submit(self, stream_id: str, events: Sequence[NewEvent], expected_version: int) -> AppendResult:
        """Make ``events`` durable for ``stream_id``, whose state the caller knows at ``expected_version``.

        ``already_done``: every event was already there. Raises ``StoreError`` (nothing was taken).
        """
        ...

    async def forward(self, wait_s: float) -> tuple[OutboxState, str | None] | None:
        """For one-shot commands: forward what is queued for a far store, for at most ``wait_s``
        (the outbox state after, why it stopped early); None when nothing is ever queued."""
        ...


class WriterSink:
    """SQLite: the batched writer on the local store, at the version the caller's plan expects."""

    def __init__(self, writer: BatchedWriter) -> None:
        self.writer = writer

    async def submit(self, stream_id: str, events: Sequence[NewEvent], expected_version: int) -> AppendResult:
        return await self.writer.submit(stream_id, events, expected_version)

    async def forward(self, wait_s: float) -> None:
        return None  # appended to the store itself: nothing waits to be forwarded


class OutboxView:
    """Read side of an event store as it will be once the outbox has drained (see the module doc).

    Implements the reads ``MeterRepository`` uses (``head``, ``load``, ``list_streams``, snapshots);
    appends go through the outbox, never through here. Pending events are read *before* the far
    stream: an event the forwarder moves in between then shows in both and is counted once (by id),
    whereas the other order could miss it. After a lost acknowledgement some pending events may
    already be at the far stream's tail; they are recognised by id there too.
    """

    def __init__(
        self, far: EventStore, outbox: Outbox, *, new_stream_wait_s: float = NEW_STREAM_WAIT_S,
        taken_as_new_s: float = TAKEN_AS_NEW_S,
    ) -> None:
        if new_stream_wait_s <= 0 or taken_as_new_s < 0:
            raise ValueError("new_stream_wait_s must be positive and taken_as_new_s non-negative")
        self.far = far
        self.outbox = outbox
        self.new_stream_wait_s = new_stream_wait_s
        self.taken_as_new_s = taken_as_new_s
        # Streams put into the outbox by this process: list_streams shows them before they reach
        # the far store (a new year stream's carry-over needs to find last year's stream).
        self._put: set[str] = set()
        self._taken_as_new: dict[str, float] = {}  # stream (or listing) -> anyio time it stays so until
        self._seen_far: set[str] = set()  # streams the outbox never wrote that the far store holds

    def note_put(self, stream_id: str) -> None:
        self._put.add(stream_id)

    async def save_local(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` (the state after our last put to its stream) as its local state."""
        await self.outbox.save_local_state(
            snapshot.stream_id, snapshot.version, snapshot.schema_version, snapshot.state
        )

    async def drop_local(self, stream_id: str) -> None:
        await self.outbox.drop_local_state(stream_id)

    async def drop_local_unless_verified(self, stream_id: str) -> bool:
        """Keep the local state only if the forwarder has a head for the stream and the state agrees
        with it; without a recorded head nothing checks the events counted into the state."""
        local = await self.outbox.local_state(stream_id)
        if local is None or (local.expected_head is not None and local.consistent):
            return False
        await self.outbox.drop_local_state(stream_id)
        return True

    async def _local(self, stream_id: str) -> LocalState | None:
        local = await self.outbox.local_state(stream_id)
        if local is not None and not local.consistent:
            log.info("stream %s: local state v%d + %d events put after it does not match the far head "
                     "recorded + pending (%s); reading the far store", stream_id, local.version,
                     len(local.tail), local.expected_head)
            return None
        return local

    @staticmethod
    def _tail(local: LocalState, from_version: int) -> list[RecordedEvent]:
        return [
            RecordedEvent(
                stream_id=local.stream_id, version=version, position=0, event_id=event.event_id,
                type=event.type, schema_version=event.schema_version, data=event.data, metadata=event.metadata,
            )
            for version, event in enumerate(local.tail, start=local.version + 1)
            if version >= from_version
        ]

    async def _merged(self, stream_id: str, from_version: int) -> tuple[int, list[RecordedEvent]]:
        """(head, events from ``from_version``) of the stream with its pending events on top."""
        pending = await self.outbox.pending(stream_id)
        far_head = await self.far.head(stream_id)
        start = max(from_version, 1)
        if pending and far_head:
            # Pending events already forwarded (lost acknowledgement) sit in the far stream's last
            # len(pending) versions at most: we are the streams' only writer.
            start = min(start, max(1, far_head - len(pending) + 1))
        far_events: list[RecordedEvent] = []
        if far_head >= start:
            try:
                far_events = await self.far.load(stream_id, start)
            except StreamNotFound:
                far_events = []
        head = max(far_head, far_events[-1].version if far_events else NO_STREAM)
        there = {e.event_id for e in far_events}
        events = [e for e in far_events if e.version >= from_version]
        for event in pending:
            if event.event_id in there:
                continue
            head += 1
            if head >= from_version:
                events.append(RecordedEvent(
                    stream_id=stream_id, version=head, position=0, event_id=event.event_id, type=event.type,
                    schema_version=event.schema_version, data=event.data, metadata=event.metadata,
                ))
        return head, events

    async def _bounded_far(self, key: str, read: Callable[[], Awaitable[T]]) -> T | None:
        """``read()`` of the far store, or None when it fails (``StoreUnavailable``) or does not
        answer within ``new_stream_wait_s``; then None again for ``taken_as_new_s`` without asking.
        Only the far store is read under the time limit (the outbox is local)."""
        now = anyio.current_time()
        until = self._taken_as_new.get(key)
        if until is not None:
            if now < until:
                return None
            del self._taken_as_new[key]
        reason = f"no answer within {self.new_stream_wait_s:g} s"
        with anyio.move_on_after(self.new_stream_wait_s):
            try:
                return await read()
            except StoreUnavailable as exc:
                reason = str(exc)
        self._taken_as_new[key] = anyio.current_time() + self.taken_as_new_s
        log.warning("%s: the far store is out of reach (%s); going on from what this gateway wrote "
                    "(asked again in %g s)", key, reason, self.taken_as_new_s)
        return None

    async def _is_new_to_us(self, stream_id: str) -> bool:
        """Whether this outbox never wrote the stream and the far store has not shown it."""
        return stream_id not in self._seen_far and stream_id not in await self.outbox.written_streams(stream_id)

    async def head(self, stream_id: str) -> int:
        local = await self._local(stream_id)
        if local is not None:
            return local.version + len(local.tail)
        if await self._is_new_to_us(stream_id):
            # Never written here: nothing pending, the far head is the head.
            head = await self._bounded_far(f"stream {stream_id}", lambda: self.far.head(stream_id))
            if head:
                self._seen_far.add(stream_id)
            return head or NO_STREAM
        head, _ = await self._merged(stream_id, 1 << 62)  # nothing to load beyond the head
        return head

    async def load(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]:
        local = await self._local(stream_id)
        if local is not None and from_version > local.version:
            return self._tail(local, from_version)  # what follows the local state (its snapshot)
        if await self._is_new_to_us(stream_id):
            # StreamNotFound from the far store passes through: the stream does not exist.
            events = await self._bounded_far(
                f"stream {stream_id}", lambda: self.far.load(stream_id, max(from_version, 1)))
            if events is None:
                raise StreamNotFound(stream_id)
            self._seen_far.add(stream_id)
            return events
        head, events = await self._merged(stream_id, from_version)
        if head == NO_STREAM:
            raise StreamNotFound(stream_id)
        return events

    async def list_streams(self, prefix: str = "") -> list[StreamInfo]:
        """The far store's streams and those put by this process, with heads counting pending
        events (the repository lists one meter's few streams; each pending one costs a far read).
        The far listing is bounded as a new stream's lookup is (see the module doc); without it, the
        streams this outbox has written are listed, with the heads it knows."""
        written = await self.outbox.written_streams(prefix)
        far = await self._bounded_far(f"streams {prefix}*", lambda: self.far.list_streams(prefix))
        if far is None:
            return await self._written_listing(written)
        # Shown by the far store: read from it from now on, never taken as new (its carry-over counts).
        self._seen_far.update(info.stream_id for info in far if info.head != NO_STREAM)
        streams = {info.stream_id: info for info in far}
        for stream_id in sorted({*streams, *written, *(s for s in self._put if s.startswith(prefix))}):
            if not await self.outbox.pending(stream_id):
                continue
            head = await self.head(stream_id)
            info = streams.get(stream_id)
            if info is not None:
                streams[stream_id] = StreamInfo(stream_id, head, info.first_recorded_at, info.last_recorded_at)
            elif head != NO_STREAM:
                streams[stream_id] = StreamInfo(stream_id, head, None, None)
        return [streams[s] for s in sorted(streams)]

    async def _written_listing(self, written: dict[str, int | None]) -> list[StreamInfo]:
        infos = []
        for stream_id, recorded in sorted(written.items()):
            local = await self._local(stream_id)
            head = local.version + len(local.tail) if local is not None else recorded
            if head is None:
                raise StoreUnavailable("the far store is out of reach and the stream's head is not known here",
                                       stream_id)
            if head != NO_STREAM:
                infos.append(StreamInfo(stream_id, head, None, None))
        return infos

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        """The local state if usable (it is never older than the far snapshot), else the far one."""
        local = await self._local(stream_id)
        if local is not None:
            return Snapshot(stream_id, local.version, local.schema_version, local.state, local.saved_at)
        if await self._is_new_to_us(stream_id):
            snapshot = await self._bounded_far(f"stream {stream_id}", lambda: self.far.load_snapshot(stream_id))
            if snapshot is not None:
                self._seen_far.add(stream_id)
            return snapshot
        return await self.far.load_snapshot(stream_id)

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Saved only once the far stream holds the snapshot's version: a snapshot ahead of the far
        head would be discarded by every reader until the outbox drained."""
        if await self.far.head(snapshot.stream_id) < snapshot.version:
            log.debug("stream %s: snapshot v%d deferred, not forwarded yet", snapshot.stream_id, snapshot.version)
            return
        await self.far.save_snapshot(snapshot)


class OutboxSink:
    """Cosmos DB: events go to the outbox; ``forwarder`` drains it (run it in a task group)."""

    def __init__(self, outbox: Outbox, view: OutboxView, forwarder: Forwarder) -> None:
        self.outbox = outbox
        self.view = view
        self.forwarder = forwarder

    async def submit(self, stream_id: str, events: Sequence[NewEvent], expected_version: int) -> AppendResult:
        put = await self.outbox.put(stream_id, events)
        self.view.note_put(stream_id)
        # Versions as the stream will have them when drained, if the caller's state was current
        # (a partial put means it was not: the caller then sees last_version != its plan's).
        first = expected_version + 1
        return AppendResult(stream_id, first, expected_version + put.queued, already_done=put.queued == 0)

    async def forward(self, wait_s: float) -> tuple[OutboxState, str | None]:
        return await self.drain(wait_s)

    async def drain(self, wait_s: float) -> tuple[OutboxState, str | None]:
        """Forward what is pending, for at most ``wait_s``; (the outbox state after, why it stopped
        early or None). For one-shot commands: ``gateway run`` runs the forwarder instead."""
        reason: str | None = None
        with anyio.move_on_after(wait_s) as scope:
            while (await self.outbox.state()).depth:
                try:
                    await self.forwarder.drain_once()
                except StoreUnavailable as exc:
                    reason = f"far store unavailable: {exc}"
                    await anyio.sleep(min(1.0, wait_s / 4))
        if scope.cancelled_caught:
            reason = reason or f"still forwarding after {wait_s:g} s"
        state = await self.outbox.state()
        return state, (reason if state.depth else None)


def describe_outbox(state: OutboxState) -> str:
    """One line for operators: depth, bytes against the bound, age, the full alarm, refusals, poison."""
    parts = [f"{state.depth} events pending ({state.bytes} of {state.max_bytes} bytes)"]
    if state.oldest_age_s is not None:
        parts.append(f"oldest {state.oldest_age_s:.0f} s")
    if state.full:
        since = "" if state.full_since is None else f" since {state.full_since:%Y-%m-%d %H:%M:%S} UTC"
        parts.append(f"FULL{since}: new events are refused")
    if state.refused_puts:
        parts.append(f"{state.refused_puts} puts refused in all")
    if state.poisoned:
        parts.append(f"{state.poisoned} poisoned (set aside, see the outbox_poison table)")
    return ", ".join(parts)


__all__ = ["EventSink", "OutboxSink", "OutboxView", "WriterSink", "describe_outbox"]
