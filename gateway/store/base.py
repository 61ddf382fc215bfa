"""The one event store contract that every backend (SQLite, Cosmos DB) implements.

Domain code (writer, aggregates, projections) depends on this protocol only, never on a backend
module. The shared contract test suite (tests/store/test_contract.py) is the executable form of the
rules written here.

Rules:
* ``append`` is atomic: all of its events or none.
* ``expected_version`` must equal the stream's head (``NO_STREAM`` for a new stream); a lower or
  higher value raises ``WrongExpectedVersion``.
* Idempotent retry: when ``expected_version`` is stale but the events at versions
  ``expected_version + 1 ..`` carry exactly the event ids being appended (a retry after a lost
  acknowledgement), nothing is written and the result has ``already_done=True``.
* Event ids are supplied by the caller and deterministic. A backend that can check cheaply refuses an
  id already stored elsewhere with ``EventIdConflict`` (SQLite does, store-wide); the contract does
  not require it, because Cosmos DB could only do it with an extra cross-partition query per append.
  On the box, the embedded store or the outbox in front of Cosmos is where ids are kept unique.
* ``append_batch`` appends to many streams in one round trip / transaction where the backend can;
  each request succeeds or fails on its own (a conflict on one stream never affects another).
* ``read_all`` returns events after an opaque checkpoint, each once, in commit order within each
  stream (SQLite: in global commit order), with the checkpoint to resume from.
* A backend that can (``IdentifiedStore``: SQLite) names the history it holds with ``store_id``,
  created with the store and carried by its backups, and tells whether a checkpoint lies beyond
  everything it ever wrote: projections use both to notice that the store under their views was
  replaced (a new store, a restored older backup) and rebuild them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

from gateway.store.errors import StoreError
from gateway.store.model import (
    AppendRequest,
    AppendResult,
    NewEvent,
    RecordedEvent,
    Snapshot,
    StreamInfo,
)


@dataclass(slots=True)
class StoreStats:
    """Round trips made by a backend, counted where they happen (used by benchmarks)."""

    reads: int = 0
    writes: int = 0
    appends: int = 0  # append requests carried by the writes


@dataclass(frozen=True, slots=True)
class ReadAllPage:
    events: list[RecordedEvent]
    checkpoint: str | None  # pass back to read_all to resume after these events
    done: bool = False  # True when the feed had nothing more at the time of reading


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    request: AppendRequest
    result: AppendResult | None = None
    error: StoreError | None = None


@runtime_checkable
class EventStore(Protocol):
    stats: StoreStats

    async def append(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: int
    ) -> AppendResult: ...

    async def append_batch(self, requests: Sequence[AppendRequest]) -> list[BatchOutcome]: ...

    async def load(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]:
        """Events with version >= from_version, in order. StreamNotFound if the stream has none."""
        ...

    async def head(self, stream_id: str) -> int:
        """Current version of the stream, NO_STREAM if it does not exist."""
        ...

    async def read_all(self, checkpoint: str | None = None, limit: int = 1000) -> ReadAllPage: ...

    async def delete_stream(self, stream_id: str) -> None:
        """Remove the stream, its events and its snapshot. StreamNotFound if it does not exist."""
        ...

    async def save_snapshot(self, snapshot: Snapshot) -> None: ...

    async def load_snapshot(self, stream_id: str) -> Snapshot | None: ...

    async def list_streams(self, prefix: str = "") -> list[StreamInfo]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class IdentifiedStore(Protocol):
    """The optional part of the contract that lets views know their store (see the rules above)."""

    store_id: str  # random, created with the store; the same in a backup copy of it

    async def beyond_head(self, checkpoint: str | None) -> bool:
        """True when ``checkpoint`` is after every position this store ever assigned (it was taken
        on another or a later state of the store)."""
        ...

    async def event_at(self, checkpoint: str) -> str | None:
        """The id of the event a checkpoint was taken after (None: that event is gone). Another id
        there means the history was rewound and written again (an older backup restored)."""
        ...
