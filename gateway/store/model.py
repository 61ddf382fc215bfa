"""Values that cross the event store boundary: events to append, recorded events, snapshots.

Versions of a stream count from 1. ``NO_STREAM`` (0) is the expected version of a stream that has
no event yet; it is the only place that number is spelled.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Mapping

NO_STREAM: Final[int] = 0
"""Expected version meaning "this stream must not exist yet"; also the head of a missing stream."""


@dataclass(frozen=True, slots=True)
class EventMetadata:
    gateway_id: str
    recorded_at: datetime  # aware, UTC
    correlation_id: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # unknown keys survive round trips


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append. ``event_id`` is deterministic and supplied by the caller."""

    event_id: str
    type: str
    schema_version: int
    data: Mapping[str, Any]  # JSON-ready (see gateway.store.codec)
    metadata: EventMetadata


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as stored: its envelope plus where it sits in its stream and in the store."""

    stream_id: str
    version: int
    position: int  # global commit order; for Cosmos, a per-load ordinal (see backend docs)
    event_id: str
    type: str
    schema_version: int
    data: Mapping[str, Any]
    metadata: EventMetadata


@dataclass(frozen=True, slots=True)
class AppendResult:
    stream_id: str
    first_version: int
    last_version: int  # the stream's head after the append
    already_done: bool = False  # True when every event was already stored (idempotent retry)


@dataclass(frozen=True, slots=True)
class AppendRequest:
    stream_id: str
    expected_version: int
    events: tuple[NewEvent, ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    stream_id: str
    version: int  # the stream version the state includes
    schema_version: int
    state: Mapping[str, Any]
    taken_at: datetime


@dataclass(frozen=True, slots=True)
class StreamInfo:
    stream_id: str
    head: int
    first_recorded_at: datetime | None
    last_recorded_at: datetime | None
