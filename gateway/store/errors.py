"""Typed errors of the event store layer; every one names the stream it is about."""
from __future__ import annotations


class StoreError(Exception):
    """Base class of every error raised by an event store backend."""


class WrongExpectedVersion(StoreError):
    """The stream's head is not the version the writer expected (optimistic concurrency)."""

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"stream {stream_id!r}: expected version {expected}, but the head is {actual}"
        )


class StreamNotFound(StoreError):
    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        super().__init__(f"stream {stream_id!r} does not exist")


class StoreUnavailable(StoreError):
    """The store cannot be reached or did not answer in time; the operation may be retried."""

    def __init__(self, message: str, stream_id: str | None = None) -> None:
        self.stream_id = stream_id
        super().__init__(message if stream_id is None else f"stream {stream_id!r}: {message}")


class StoreFull(StoreUnavailable):
    """The store refuses new events until it has drained (a local outbox at its size bound). It
    raises its own alarm once; callers count the refusals instead of logging each."""

class AppendTooLarge(StoreError):
    """One append is larger than the backend can store atomically; split it."""

    def __init__(self, stream_id: str, size: int, limit: int) -> None:
        self.stream_id = stream_id
        self.size = size
        self.limit = limit
        super().__init__(
            f"stream {stream_id!r}: append of {size} bytes exceeds the limit of {limit} bytes"
        )


class EventIdConflict(StoreError):
    """An event id supplied by the caller is already stored under a different position."""

    def __init__(self, stream_id: str, event_id: str) -> None:
        self.stream_id = stream_id
        self.event_id = event_id
        super().__init__(f"stream {stream_id!r}: event id {event_id!r} is already stored elsewhere")


class CheckpointMismatch(StoreError, ValueError):
    """A read-all checkpoint that is not a position of this store's feed: saved for another store,
    or for a container since deleted and created again under the same name (a new change feed)."""
