"""Event store contract and backends. Import backends from their own modules."""
from gateway.store.base import BatchOutcome, EventStore, ReadAllPage, StoreStats
from gateway.store.errors import (
    AppendTooLarge,
    EventIdConflict,
    StoreError,
    StoreUnavailable,
    StreamNotFound,
    WrongExpectedVersion,
)
from gateway.store.model import (
    NO_STREAM,
    AppendRequest,
    AppendResult,
    EventMetadata,
    NewEvent,
    RecordedEvent,
    Snapshot,
    StreamInfo,
)

__all__ = [
    "NO_STREAM", "AppendRequest", "AppendResult", "AppendTooLarge", "BatchOutcome", "EventIdConflict",
    "EventMetadata", "EventStore", "NewEvent", "ReadAllPage", "RecordedEvent", "Snapshot",
    "StoreError", "StoreStats", "StoreUnavailable", "StreamInfo", "StreamNotFound",
    "WrongExpectedVersion",
]
