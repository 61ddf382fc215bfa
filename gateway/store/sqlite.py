"""Embedded SQLite backend of the event store (the default on the substation box).

One file, WAL journal and ``synchronous=FULL`` so a committed append survives a power cut; the
connection is owned through ``gateway.store.sqlite_file`` (serialised, blocking calls in a worker
thread). ``append_batch`` writes all of its requests in one ``BEGIN IMMEDIATE`` transaction. The
normal case (every expected version is the head, no id clash) takes a bulk path: one read of the
heads, one ``executemany`` for all the events and one for the heads. Otherwise the bulk attempt is
rolled back and each request runs in a savepoint of its own, so one stream's conflict is reported
on its own without undoing the others. ``position`` (AUTOINCREMENT, never reused) is the global
commit order that ``read_all`` checkpoints refer to.

A failure of the database itself (locked past the busy timeout, disk I/O) raises ``StoreUnavailable``
for the whole call: nothing of that call was committed, and it may be retried as it is.
"""
from __future__ import annotations

import sqlite3
import uuid
from datetime import datetime
from itertools import chain
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import anyio
import anyio.to_thread

from gateway.store.sqlite_file import SqliteFile, immediate_transaction
from gateway.store import codec
from gateway.store.base import BatchOutcome, ReadAllPage, StoreStats
from gateway.store.errors import (
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
    NewEvent,
    RecordedEvent,
    Snapshot,
    StreamInfo,
)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id      TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    event_id       TEXT    NOT NULL UNIQUE,
    type           TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    data           TEXT    NOT NULL,
    metadata       TEXT    NOT NULL,
    UNIQUE (stream_id, version)
);
CREATE TABLE IF NOT EXISTS streams (
    stream_id TEXT    PRIMARY KEY,
    head      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS store_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
    stream_id      TEXT    PRIMARY KEY,
    version        INTEGER NOT NULL,
    schema_version INTEGER NOT NULL,
    state          TEXT    NOT NULL,
    taken_at       TEXT    NOT NULL
);
"""

_EVENT_COLUMNS = "position, stream_id, version, event_id, type, schema_version, data, metadata"

# One event row for INSERT: stream_id, version, event_id, type, schema_version, data, metadata.
_EventRow = tuple[str, int, str, str, int, str, str]
_EVENT_ID = 2  # index of event_id in an _EventRow


def _encode_request(request: AppendRequest, metadata_cache: dict[int, str]) -> list[_EventRow]:
    """Rows for INSERT, numbered from the request's expected version (right whenever the append
    is). Each payload is serialised once, straight to its stored JSON, and a metadata object
    shared by the events of one poll once per batch. Done before the database call, so the
    worker thread holding the write lock only runs SQL."""
    dumps = codec.dumps
    stream_id, version = request.stream_id, request.expected_version
    rows: list[_EventRow] = []
    for event in request.events:
        metadata = event.metadata
        meta = metadata_cache.get(id(metadata))
        if meta is None:
            meta = dumps(codec.metadata_to_dict(metadata))
            metadata_cache[id(metadata)] = meta
        version += 1
        rows.append(
            (stream_id, version, event.event_id, event.type, event.schema_version, dumps(event.data), meta)
        )
    return rows


def _decode(row: sqlite3.Row) -> RecordedEvent:
    return codec.recorded_from_dict(
        {
            "id": row["event_id"],
            "type": row["type"],
            "schemaVersion": row["schema_version"],
            "data": codec.loads(row["data"]),
            "metadata": codec.loads(row["metadata"]),
        },
        stream_id=row["stream_id"],
        version=row["version"],
        position=row["position"],
    )


def _validate(request: AppendRequest) -> None:
    if not request.events:
        raise ValueError(f"stream {request.stream_id!r}: an append needs at least one event")
    if request.expected_version < NO_STREAM:
        raise ValueError(
            f"stream {request.stream_id!r}: expected version {request.expected_version} is negative"
        )
    ids = [e.event_id for e in request.events]
    if len(set(ids)) != len(ids):
        raise ValueError(f"stream {request.stream_id!r}: the same event id appears twice in one append")


class SqliteEventStore:
    """``EventStore`` on one SQLite file. Create with ``await SqliteEventStore.open(path)``."""

    def __init__(self, db: SqliteFile, store_id: str) -> None:
        self._db = db
        self.path = db.path
        self.store_id = store_id
        self.stats = StoreStats()

    @classmethod
    async def open(cls, path: str | Path, *, busy_timeout: float = 5.0) -> SqliteEventStore:
        """Open (creating if needed) the store at ``path``; ``busy_timeout`` in seconds."""
        db = await SqliteFile.open(
            path, schema=_SCHEMA, what="event store", unavailable=StoreUnavailable,
            busy_timeout=busy_timeout,
        )
        try:
            store_id = await db.run(_identify, unavailable=StoreUnavailable)
        except BaseException:
            await db.aclose()
            raise
        return cls(db, store_id)

    async def aclose(self) -> None:
        await self._db.aclose()

    async def _run(self, func: Callable[[sqlite3.Connection], T], stream_id: str | None = None) -> T:
        return await self._db.run(func, unavailable=lambda message: StoreUnavailable(message, stream_id))

    async def pragmas(self) -> dict[str, int | str]:
        """The durability settings in force on the store's connection, as SQLite reports them."""

        def read(conn: sqlite3.Connection) -> dict[str, int | str]:
            return {
                name: conn.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "synchronous", "busy_timeout")
            }

        return await self._run(read)

    # -- writes ---------------------------------------------------------------------------------

    async def append(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: int
    ) -> AppendResult:
        (outcome,) = await self.append_batch(
            [AppendRequest(stream_id=stream_id, expected_version=expected_version, events=tuple(events))]
        )
        if outcome.error is not None:
            raise outcome.error
        assert outcome.result is not None
        return outcome.result

    async def append_batch(self, requests: Sequence[AppendRequest]) -> list[BatchOutcome]:
        if not requests:
            return []
        for request in requests:
            _validate(request)
        # Encoding refuses bad data (naive datetimes, values JSON cannot hold): do it before any I/O.
        metadata_cache: dict[int, str] = {}
        encoded = [_encode_request(request, metadata_cache) for request in requests]

        def batch(conn: sqlite3.Connection) -> list[BatchOutcome]:
            conn.execute("SAVEPOINT append_bulk")
            bulk = _append_bulk(conn, requests, encoded)  # raising: the transaction rolls back
            if bulk is not None:
                conn.execute("RELEASE append_bulk")
                return bulk
            # Some request needs a per-stream answer (conflict, retry, id clash): undo the bulk
            # attempt and take each request on its own.
            conn.execute("ROLLBACK TO append_bulk")
            conn.execute("RELEASE append_bulk")
            outcomes: list[BatchOutcome] = []
            for request, rows in zip(requests, encoded):
                conn.execute("SAVEPOINT append_request")
                try:
                    result = _append_one(conn, request, rows)
                except StoreError as error:
                    conn.execute("ROLLBACK TO append_request")
                    conn.execute("RELEASE append_request")
                    outcomes.append(BatchOutcome(request=request, error=error))
                else:
                    conn.execute("RELEASE append_request")
                    outcomes.append(BatchOutcome(request=request, result=result))
            return outcomes

        self.stats.writes += 1
        self.stats.appends += len(requests)
        def batch_in_transaction(conn: sqlite3.Connection) -> list[BatchOutcome]:
            with immediate_transaction(conn):
                return batch(conn)

        return await self._run(
            batch_in_transaction,
            requests[0].stream_id if len(requests) == 1 else None,
        )

    async def delete_stream(self, stream_id: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            with immediate_transaction(conn):
                if conn.execute("DELETE FROM streams WHERE stream_id = ?", (stream_id,)).rowcount == 0:
                    raise StreamNotFound(stream_id)
                conn.execute("DELETE FROM events WHERE stream_id = ?", (stream_id,))
                conn.execute("DELETE FROM snapshots WHERE stream_id = ?", (stream_id,))

        self.stats.writes += 1
        await self._run(delete, stream_id)

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        if snapshot.version < 1:
            raise ValueError(f"stream {snapshot.stream_id!r}: a snapshot needs a version >= 1")
        row = (
            snapshot.stream_id,
            snapshot.version,
            snapshot.schema_version,
            codec.dumps(snapshot.state),
            codec.iso_utc(snapshot.taken_at),
        )

        def upsert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO snapshots (stream_id, version, schema_version, state, taken_at)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version,"
                " schema_version = excluded.schema_version, state = excluded.state,"
                " taken_at = excluded.taken_at",
                row,
            )

        self.stats.writes += 1
        await self._run(upsert, snapshot.stream_id)

    # -- reads ----------------------------------------------------------------------------------

    async def head(self, stream_id: str) -> int:
        self.stats.reads += 1
        return await self._run(lambda conn: _head(conn, stream_id), stream_id)

    async def load(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]:
        if from_version < 1:
            raise ValueError(f"stream {stream_id!r}: versions count from 1, not {from_version}")

        def select(conn: sqlite3.Connection) -> list[RecordedEvent]:
            rows = conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE stream_id = ? AND version >= ?"
                " ORDER BY version",
                (stream_id, from_version),
            ).fetchall()
            if not rows and _head(conn, stream_id) == NO_STREAM:
                raise StreamNotFound(stream_id)
            return [_decode(row) for row in rows]

        self.stats.reads += 1
        return await self._run(select, stream_id)

    async def read_all(self, checkpoint: str | None = None, limit: int = 1000) -> ReadAllPage:
        if limit < 1:
            raise ValueError(f"read_all limit must be at least 1, not {limit}")
        after = _position_of(checkpoint)

        def select(conn: sqlite3.Connection) -> list[RecordedEvent]:
            rows = conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?",
                (after, limit),
            ).fetchall()
            return [_decode(row) for row in rows]

        self.stats.reads += 1
        events = await self._run(select)
        next_checkpoint = str(events[-1].position) if events else checkpoint
        return ReadAllPage(events=events, checkpoint=next_checkpoint, done=len(events) < limit)

    async def head_position(self) -> int:
        """The highest ``read_all`` position this store ever assigned (0 for none)."""
        self.stats.reads += 1
        return await self._run(_head_position)

    async def beyond_head(self, checkpoint: str | None) -> bool:
        """A checkpoint after every position this store ever assigned was not taken on this store
        as it stands (an older copy of it was restored, or it is another store)."""
        return _position_of(checkpoint) > await self.head_position()

    async def event_at(self, checkpoint: str) -> str | None:
        """The id of the event at a checkpoint's position (None: deleted, or never there)."""
        position = _position_of(checkpoint)

        def select(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT event_id FROM events WHERE position = ?", (position,)).fetchone()
            return None if row is None else str(row[0])

        self.stats.reads += 1
        return await self._run(select)

    async def events_after(self, checkpoint: str | None) -> int:
        """How many events were committed after a ``read_all`` checkpoint (projection lag)."""
        after = _position_of(checkpoint)
        uri = f"{self.path.resolve().as_uri()}?mode=ro"

        def count() -> int:
            # Its own read-only connection: the store's connection may be busy with a writer's
            # flush, and a lag report must not queue behind it.
            conn = sqlite3.connect(uri, uri=True, timeout=5.0)
            try:
                return int(conn.execute("SELECT count(*) FROM events WHERE position > ?", (after,)).fetchone()[0])
            finally:
                conn.close()

        self.stats.reads += 1
        try:
            return await anyio.to_thread.run_sync(count)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"event store {self.path}: {exc}") from exc

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        def select(conn: sqlite3.Connection) -> sqlite3.Row | None:
            return conn.execute(
                "SELECT version, schema_version, state, taken_at FROM snapshots WHERE stream_id = ?",
                (stream_id,),
            ).fetchone()

        self.stats.reads += 1
        row = await self._run(select, stream_id)
        if row is None:
            return None
        return Snapshot(
            stream_id=stream_id,
            version=row["version"],
            schema_version=row["schema_version"],
            state=codec.loads(row["state"]),
            taken_at=codec.parse_utc(row["taken_at"]),
        )

    async def list_streams(self, prefix: str = "") -> list[StreamInfo]:
        def select(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            return conn.execute(
                "SELECT s.stream_id, s.head,"
                " (SELECT metadata FROM events WHERE stream_id = s.stream_id AND version = 1) AS first,"
                " (SELECT metadata FROM events WHERE stream_id = s.stream_id AND version = s.head)"
                "   AS last"
                " FROM streams AS s WHERE substr(s.stream_id, 1, ?) = ? ORDER BY s.stream_id",
                (len(prefix), prefix),
            ).fetchall()

        self.stats.reads += 1
        rows = await self._run(select)
        return [
            StreamInfo(
                stream_id=row["stream_id"],
                head=row["head"],
                first_recorded_at=_recorded_at(row["first"]),
                last_recorded_at=_recorded_at(row["last"]),
            )
            for row in rows
        ]


def _recorded_at(metadata_json: str | None) -> datetime | None:
    if metadata_json is None:
        return None
    return codec.metadata_from_dict(codec.loads(metadata_json)).recorded_at


def _position_of(checkpoint: str | None) -> int:
    if checkpoint is None:
        return 0
    try:
        return int(checkpoint)
    except ValueError:
        raise ValueError(f"not a checkpoint of this SQLite store: {checkpoint!r}") from None


def _identify(conn: sqlite3.Connection) -> str:
    """The store's identity: a random id written when the file is created (or, for a store from
    before identities, when it is first opened: a restored old backup then gets a new one, and its
    views are rebuilt, the conservative outcome). A copy by ``gateway backup`` carries the id of its
    original: the same history."""
    # Read first: opening a store whose writer is busy must not queue for the write lock.
    row = conn.execute("SELECT value FROM store_meta WHERE key = 'store_id'").fetchone()
    if row is not None:
        return str(row[0])
    with immediate_transaction(conn):
        conn.execute("INSERT OR IGNORE INTO store_meta (key, value) VALUES ('store_id', ?)",
                     (uuid.uuid4().hex,))
        return str(conn.execute("SELECT value FROM store_meta WHERE key = 'store_id'").fetchone()[0])


def _head_position(conn: sqlite3.Connection) -> int:
    # AUTOINCREMENT never reuses a position, also after a stream is deleted: sqlite_sequence holds
    # the highest one ever assigned (the table exists once the first event was inserted).
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    return 0 if row is None else int(row[0])


def _head(conn: sqlite3.Connection, stream_id: str) -> int:
    row = conn.execute("SELECT head FROM streams WHERE stream_id = ?", (stream_id,)).fetchone()
    return NO_STREAM if row is None else int(row[0])


_INSERT_EVENT = (
    "INSERT INTO events (stream_id, version, event_id, type, schema_version, data, metadata)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
# Multi-row INSERT for the bulk path: measured ~15% less time than one statement per row, and the
# worker thread gives up and retakes the GIL once per statement instead of once per row (which,
# with the event loop busy, costs the most). 64 rows x 7 = 448 parameters, below every
# SQLITE_MAX_VARIABLE_NUMBER.
ROWS_PER_INSERT = 64
_INSERT_EVENTS = _INSERT_EVENT + ", (?, ?, ?, ?, ?, ?, ?)" * (ROWS_PER_INSERT - 1)
_UPSERT_HEAD = (
    "INSERT INTO streams (stream_id, head) VALUES (?, ?)"
    " ON CONFLICT (stream_id) DO UPDATE SET head = excluded.head"
)
_HEADS_PER_SELECT = 500  # bound parameters per statement stay far below SQLITE_MAX_VARIABLE_NUMBER


def _append_bulk(
    conn: sqlite3.Connection, requests: Sequence[AppendRequest], encoded: Sequence[list[_EventRow]]
) -> list[BatchOutcome] | None:
    """All requests at once inside the caller's savepoint, or None (possibly after partial
    writes, which the caller rolls back) when any request needs the per-request path."""
    stream_ids = [request.stream_id for request in requests]
    if len(set(stream_ids)) != len(stream_ids):
        return None  # two appends to one stream in a batch: the second depends on the first
    heads: dict[str, int] = {}
    for start in range(0, len(stream_ids), _HEADS_PER_SELECT):
        chunk = stream_ids[start : start + _HEADS_PER_SELECT]
        heads.update(
            conn.execute(
                f"SELECT stream_id, head FROM streams WHERE stream_id IN ({','.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
        )
    head_rows: list[tuple[str, int]] = []
    outcomes: list[BatchOutcome] = []
    for request in requests:
        stream_id, expected = request.stream_id, request.expected_version
        if heads.get(stream_id, NO_STREAM) != expected:
            return None
        last = expected + len(request.events)
        head_rows.append((stream_id, last))
        result = AppendResult(stream_id, expected + 1, last)
        outcomes.append(BatchOutcome(request=request, result=result))
    rows = list(chain.from_iterable(encoded))
    whole = len(rows) - len(rows) % ROWS_PER_INSERT
    try:
        for start in range(0, whole, ROWS_PER_INSERT):
            conn.execute(
                _INSERT_EVENTS, tuple(chain.from_iterable(rows[start : start + ROWS_PER_INSERT]))
            )
        conn.executemany(_INSERT_EVENT, rows[whole:])
    except sqlite3.IntegrityError:
        return None  # an event id stored before: the per-request path names the stream and id
    conn.executemany(_UPSERT_HEAD, head_rows)
    return outcomes


def _append_one(
    conn: sqlite3.Connection, request: AppendRequest, rows: list[_EventRow]
) -> AppendResult:
    """One request inside the caller's transaction/savepoint; raises StoreError on a refusal."""
    stream_id, expected, count = request.stream_id, request.expected_version, len(rows)
    head = _head(conn, stream_id)
    if expected != head:
        if expected + count <= head:
            stored = [
                r[0]
                for r in conn.execute(
                    "SELECT event_id FROM events WHERE stream_id = ? AND version BETWEEN ? AND ?"
                    " ORDER BY version",
                    (stream_id, expected + 1, expected + count),
                )
            ]
            if stored == [r[_EVENT_ID] for r in rows]:
                # A retry after a lost acknowledgement: the same events already sit where the
                # writer meant to put them.
                return AppendResult(stream_id, expected + 1, expected + count, already_done=True)
        raise WrongExpectedVersion(stream_id, expected, head)
    try:
        conn.executemany(_INSERT_EVENT, rows)  # numbered from expected, which is the head here
    except sqlite3.IntegrityError:
        # The write lock is ours and head was checked, so only an event id can collide.
        # Rows this executemany already inserted (above the old head) are not the clash.
        ids = [r[_EVENT_ID] for r in rows]
        clash = conn.execute(
            f"SELECT event_id FROM events WHERE event_id IN ({','.join('?' * len(ids))})"
            " AND NOT (stream_id = ? AND version > ?)",
            (*ids, stream_id, head),
        ).fetchone()
        if clash is None:
            raise
        raise EventIdConflict(stream_id, clash[0]) from None
    conn.execute(_UPSERT_HEAD, (stream_id, head + count))
    return AppendResult(stream_id, head + 1, head + count)
