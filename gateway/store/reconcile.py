"""After a refused append: what of it the stream already holds, and where the rest goes.

Every appender meets the same two refusals: ``WrongExpectedVersion`` (the head moved: a retry after a
lost acknowledgement, or another writer) and ``EventIdConflict`` (an event id is already stored, e.g.
a fact read again). The answer is the same each time: read the stream after the version the caller
knew, recognise the events already there by their deterministic ids, and append the rest at the head.
``reconcile`` is that answer, used by the batched writer, the outbox forwarder and the meter history.
``WrongExpectedVersion.actual`` gives the head, so a conflict costs one read, not two.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.store.errors import StreamNotFound
from gateway.store.model import NewEvent, RecordedEvent

class StreamReader(Protocol):
    """What reconciling reads of a store (every ``EventStore``, and the outbox view, have it)."""

    async def head(self, stream_id: str) -> int: ...

    async def load(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]: ...


@dataclass(frozen=True, slots=True)
class Reconciled:
    """``events`` split: ``stored`` (event id -> its version in the stream) and ``remaining``, to be
    appended at ``head``."""

    head: int
    remaining: tuple[NewEvent, ...]
    stored: Mapping[str, int]


Via = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]


async def _direct(call: Callable[[], Awaitable[Any]]) -> Any:
    return await call()


async def reconcile(
    store: StreamReader,
    stream_id: str,
    events: Sequence[NewEvent],
    *,
    since: int,
    head: int | None = None,
    via: Via | None = None,
) -> Reconciled:
    """Split ``events`` by what ``stream_id`` holds after version ``since``.

    ``since``: the version the refused append expected (``WrongExpectedVersion``), or 0 to look at the
    whole stream (``EventIdConflict``). ``head``: the head the store reported
    (``WrongExpectedVersion.actual``); read when not given. ``via`` wraps each store call (the
    caller's retry and timeout policy).
    """
    run = via or _direct
    if head is None:
        head = await run(lambda: store.head(stream_id))
    stored: dict[str, int] = {}
    if head > since:
        try:
            tail = await run(lambda: store.load(stream_id, since + 1))
        except StreamNotFound:  # deleted meanwhile
            tail = []
        wanted = {event.event_id for event in events}
        stored = {recorded.event_id: recorded.version for recorded in tail if recorded.event_id in wanted}
        if tail:
            head = max(head, tail[-1].version)  # appended to since the store answered
    return Reconciled(head, tuple(e for e in events if e.event_id not in stored), stored)


__all__ = ["Reconciled", "StreamReader", "reconcile"]
