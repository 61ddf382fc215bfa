"""Tests of the store-and-forward outbox and its forwarder; shared helpers live here.

The far store is always a real ``SqliteEventStore`` in its own file. Faults a healthy file cannot
produce on demand (an outage, a lost acknowledgement, a crash right after the far append, a backend
with a small size limit) come from ``FaultyStore``, a thin wrapper that forwards to the real store
and adds the fault.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import anyio

from gateway.store.base import BatchOutcome, EventStore
from gateway.store.errors import AppendTooLarge, EventIdConflict, StoreUnavailable
from gateway.store.model import (
    AppendRequest,
    AppendResult,
    NewEvent,
    RecordedEvent,
    Snapshot,
    StreamInfo,
)

class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing in the forwarder handles it."""


class FaultyStore:
    """Forwards to a real store, adding faults the test switches on.

    * ``down``: every call raises StoreUnavailable without reaching the store (a WAN outage).
    * ``lose_acks``: that many next append_batch calls are carried out, then raise StoreUnavailable.
    * ``crash_after_append``: the next append_batch is carried out, then raises ``Crash``.
    * ``max_event_bytes``: an append with an event whose data is larger raises AppendTooLarge in its
      outcome (a backend with a small item limit).

    ``id_conflicts`` counts EventIdConflict answers (and appends a line to ``conflict_log`` if
    given, for a process that may be killed): the crash protocol must not need them, since Cosmos DB
    does not check ids across commits (SQLite's check would otherwise hide a duplicate).
    * ``refuse_type``: append_batch raises ValueError (before any I/O) if an event has this type.
    * ``hang``: every read waits forever (a far store that does not answer: a WAN dropping packets).
    """

    def __init__(self, inner: EventStore, conflict_log: Path | None = None) -> None:
        self.inner = inner
        self.conflict_log = conflict_log
        self.stats = inner.stats
        self.down = False
        self.lose_acks = 0
        self.crash_after_append = False
        self.max_event_bytes: int | None = None
        self.refuse_type: str | None = None
        self.hang = False
        self.reads = 0  # head/load/load_snapshot/list_streams calls that reached this wrapper
        self.failed_calls = 0
        self.id_conflicts = 0
        self.append_calls = 0
        self.failures_seen = anyio.Event()

    def _check_up(self) -> None:
        if self.down:
            self.failed_calls += 1
            if self.failed_calls >= 3:
                self.failures_seen.set()
            raise StoreUnavailable("injected outage: the far store cannot be reached")

    async def append_batch(self, requests: Sequence[AppendRequest]) -> list[BatchOutcome]:
        self._check_up()
        self.append_calls += 1
        if self.refuse_type is not None:
            for request in requests:
                if any(e.type == self.refuse_type for e in request.events):
                    raise ValueError(
                        f"stream {request.stream_id!r}: injected refusal of {self.refuse_type}"
                    )
        passed: list[AppendRequest] = []
        too_large: dict[int, BatchOutcome] = {}
        for index, request in enumerate(requests):
            if self.max_event_bytes is not None:
                size = max(len(str(e.data)) for e in request.events)
                if size > self.max_event_bytes:
                    too_large[index] = BatchOutcome(
                        request, error=AppendTooLarge(request.stream_id, size, self.max_event_bytes)
                    )
                    continue
            passed.append(request)
        done = iter(await self.inner.append_batch(passed) if passed else [])
        outcomes = [too_large[i] if i in too_large else next(done) for i in range(len(requests))]
        conflicts = [o.error for o in outcomes if isinstance(o.error, EventIdConflict)]
        self.id_conflicts += len(conflicts)
        if conflicts and self.conflict_log is not None:
            with self.conflict_log.open("a") as log:
                log.writelines(f"{error}\n" for error in conflicts)
        if self.crash_after_append:
            self.crash_after_append = False
            raise Crash()
        if self.lose_acks:
            self.lose_acks -= 1
            raise StoreUnavailable("injected lost acknowledgement (the append was carried out)")
        return outcomes

    async def append(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: int
    ) -> AppendResult:
        (outcome,) = await self.append_batch([AppendRequest(stream_id, expected_version, tuple(events))])
        if outcome.error is not None:
            raise outcome.error
        assert outcome.result is not None
        return outcome.result

    async def _read_fault(self) -> None:
        self.reads += 1
        if self.hang:
            await anyio.sleep_forever()
        self._check_up()

    async def head(self, stream_id: str) -> int:
        await self._read_fault()
        return await self.inner.head(stream_id)

    async def load(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]:
        await self._read_fault()
        return await self.inner.load(stream_id, from_version)

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        await self._read_fault()
        return await self.inner.load_snapshot(stream_id)

    async def list_streams(self, prefix: str = "") -> list[StreamInfo]:
        await self._read_fault()
        return await self.inner.list_streams(prefix)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
