"""Local store-and-forward outbox: events made durable on the box before they go to Cosmos DB.

When the fleet's store is Cosmos, the pipeline ``put``s each append into this SQLite file (a put that
returned survives a power cut) and ``gateway.history.outbox_forwarder`` drains it to the far store in
per-stream order, exactly once; the file also keeps each stream's last local meter state and the
poison table. Tables, size bound and alarm: docs/architecture.md, "Outbox".
"""
from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence, TypeVar

import anyio

from gateway.store.sqlite_file import SqliteFile
from gateway.store import codec
from gateway.store.errors import EventIdConflict, StoreFull, StoreUnavailable
from gateway.store.model import NewEvent

log = logging.getLogger(__name__)

T = TypeVar("T")

RESUME_FRACTION = 0.9
"""The full alarm clears once pending bytes fall to this fraction of the bound (hysteresis)."""

DEFAULT_FORWARDED_RETENTION_S = 7 * 24 * 3600.0
"""How long forwarded event ids are remembered to drop repeats; a week covers catch-up re-reads."""

_PRUNE_EVERY_S = 60.0
_SQL_VARIABLES = 500  # ids per IN (...) list, well below SQLite's limit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox_pending (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id TEXT    NOT NULL,
    event_id  TEXT    NOT NULL UNIQUE,
    envelope  TEXT    NOT NULL,
    size      INTEGER NOT NULL,
    queued_at REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_pending_stream ON outbox_pending (stream_id, seq);
CREATE TABLE IF NOT EXISTS outbox_forwarded (
    event_id     TEXT PRIMARY KEY,
    stream_id    TEXT NOT NULL,
    forwarded_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS outbox_forwarded_at ON outbox_forwarded (forwarded_at);
CREATE TABLE IF NOT EXISTS outbox_heads (
    stream_id TEXT    PRIMARY KEY,
    head      INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox_poison (
    seq         INTEGER PRIMARY KEY,
    stream_id   TEXT    NOT NULL,
    event_id    TEXT    NOT NULL UNIQUE,
    envelope    TEXT    NOT NULL,
    error_type  TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    queued_at   REAL    NOT NULL,
    poisoned_at REAL    NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox_local_states (
    stream_id      TEXT    PRIMARY KEY,
    version        INTEGER NOT NULL,
    schema_version INTEGER NOT NULL,
    state          TEXT    NOT NULL,
    after_seq      INTEGER NOT NULL,
    saved_at       REAL    NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox_totals (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    depth INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
INSERT OR IGNORE INTO outbox_totals (id, depth, bytes) VALUES (1, 0, 0);
CREATE TABLE IF NOT EXISTS outbox_alarm (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    full         INTEGER NOT NULL,
    full_since   REAL,
    refused_puts INTEGER NOT NULL
);
INSERT OR IGNORE INTO outbox_alarm (id, full, full_since, refused_puts) VALUES (1, 0, NULL, 0);
CREATE TRIGGER IF NOT EXISTS outbox_pending_added AFTER INSERT ON outbox_pending BEGIN
    UPDATE outbox_totals SET depth = depth + 1, bytes = bytes + NEW.size WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS outbox_pending_removed AFTER DELETE ON outbox_pending BEGIN
    UPDATE outbox_totals SET depth = depth - 1, bytes = bytes - OLD.size WHERE id = 1;
END;
"""


class OutboxFull(StoreFull):
    """The outbox has reached its size bound; the put was refused whole, nothing was dropped.

    A ``StoreUnavailable``: like a store that cannot be reached, it clears by itself once the far
    store is back and the forwarder drains, and callers that retry on unavailability may retry.
    """

    def __init__(self, stream_id: str, needed: int, used: int, limit: int) -> None:
        self.needed = needed
        self.used = used
        self.limit = limit
        super().__init__(
            f"outbox full: {needed} more bytes refused, {used} of {limit} bytes pending", stream_id
        )


@dataclass(frozen=True, slots=True)
class OutboxState:
    depth: int  # events pending
    bytes: int  # payload bytes pending (what max_bytes bounds)
    max_bytes: int
    full: bool  # the full alarm is on (see the module docstring)
    oldest_age_s: float | None  # age of the oldest pending event; None when empty
    poisoned: int  # events set aside in outbox_poison
    refused_puts: int = 0  # puts refused as the outbox was full, in all (the file's lifetime)
    full_since: datetime | None = None  # when the full alarm went on; None while it is off


@dataclass(frozen=True, slots=True)
class PutResult:
    queued: int  # events newly stored in the outbox
    already_known: int  # events skipped: their id is pending, forwarded or poisoned


@dataclass(frozen=True, slots=True)
class PendingEvent:
    seq: int  # position in the outbox; per-stream order
    stream_id: str
    event: NewEvent
    size: int


@dataclass(frozen=True, slots=True)
class StreamBatch:
    """The oldest pending events of one stream and the far version they are to be appended at."""

    stream_id: str
    expected_version: int | None  # None: no head known yet (ask the far store, record_heads)
    events: tuple[PendingEvent, ...]


@dataclass(frozen=True, slots=True)
class LocalState:
    """A stream's last known state kept in the outbox file (see ``Outbox.local_state``)."""

    stream_id: str
    version: int  # the far-equivalent stream version the state includes
    schema_version: int
    state: Mapping[str, object]
    saved_at: datetime
    tail: tuple[NewEvent, ...]  # the stream's pending events put after the state was saved
    expected_head: int | None  # far head recorded by the forwarder + pending events; None: no head recorded

    @property
    def consistent(self) -> bool:
        """Whether state + tail is the stream as it will be once drained. Not so when events put
        after the state were forwarded already (a crash between a put and the save), or an event the
        state includes was poisoned: then the state must be folded from the far store again."""
        # No recorded head: the forwarder never appended to this stream, so nothing was forwarded
        # and every event put after the state is still in the tail.
        return self.expected_head is None or self.version + len(self.tail) == self.expected_head


@dataclass(frozen=True, slots=True)
class PoisonedEvent:
    stream_id: str
    event: NewEvent
    error_type: str
    reason: str
    queued_at: datetime
    poisoned_at: datetime


@dataclass(frozen=True, slots=True)
class Settlement:
    """What one forwarding round learned, applied by ``Outbox.settle`` in one transaction."""

    forwarded: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # stream → seqs
    heads: Mapping[str, int] = field(default_factory=dict)  # stream → far head now
    poisoned: Sequence[tuple[int, str, str]] = ()  # (seq, error type name, reason)

    def __bool__(self) -> bool:
        return bool(self.forwarded or self.heads or self.poisoned)


def _encode(event: NewEvent) -> str:
    return codec.dumps(codec.event_to_dict(event))


def _decode(envelope: str) -> NewEvent:
    return codec.new_event_from_dict(codec.loads(envelope))


def _chunks(items: Sequence[T], size: int = _SQL_VARIABLES) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, timezone.utc)


class Outbox:
    """The outbox file. Create with ``await Outbox.open(path, max_bytes)``; ``aclose()`` at the end."""

    def __init__(
        self,
        db: SqliteFile,
        max_bytes: int,
        forwarded_retention_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._db = db
        self.path = db.path
        self.max_bytes = max_bytes
        self.forwarded_retention_s = forwarded_retention_s
        self._clock = clock
        self._last_prune = 0.0
        self._changed = anyio.Event()

    @classmethod
    async def open(
        cls,
        path: str | Path,
        max_bytes: int,
        *,
        busy_timeout: float = 5.0,
        forwarded_retention_s: float = DEFAULT_FORWARDED_RETENTION_S,
        clock: Callable[[], float] = time.time,
    ) -> Outbox:
        """Open (creating if needed) the outbox at ``path``; ``clock`` gives wall-clock seconds."""
        if max_bytes < 1:
            raise ValueError(f"outbox max_bytes must be at least 1, got {max_bytes}")
        if forwarded_retention_s < 0:
            raise ValueError(f"forwarded_retention_s cannot be negative, got {forwarded_retention_s}")
        # The outbox is the only copy of an event until it is forwarded: WAL + sync every commit.
        db = await SqliteFile.open(
            path, schema=_SCHEMA, what="outbox", unavailable=StoreUnavailable,
            busy_timeout=busy_timeout,
        )
        return cls(db, max_bytes, forwarded_retention_s, clock)

    async def aclose(self) -> None:
        await self._db.aclose()

    async def __aenter__(self) -> Outbox:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _run(self, func: Callable[[sqlite3.Connection], T]) -> T:
        return await self._db.run(func)

    def changed(self) -> anyio.Event:
        """An event set at the next successful put that queued something (the forwarder waits on it)."""
        return self._changed

    # -- producer side --------------------------------------------------------------------------

    async def put(self, stream_id: str, events: Sequence[NewEvent]) -> PutResult:
        """Store ``events`` for ``stream_id`` durably, in order, in one transaction.

        Events whose id is already pending, forwarded (within the retention) or poisoned are
        skipped. Raises ``OutboxFull`` (nothing stored) when the new events would pass the bound,
        ``EventIdConflict`` when an id is known under another stream, ``ValueError``/``TypeError``
        for events the codec cannot store.
        """
        if not isinstance(stream_id, str) or not stream_id:
            raise ValueError(f"stream id must be a non-empty string, got {stream_id!r}")
        batch = list(events)
        if not batch:
            raise ValueError(f"stream {stream_id!r}: a put needs at least one event")
        for event in batch:
            if not isinstance(event, NewEvent):
                raise TypeError(f"stream {stream_id!r}: expected NewEvent, got {type(event).__name__}")
        ids = [event.event_id for event in batch]
        if len(set(ids)) != len(ids):
            raise ValueError(f"stream {stream_id!r}: the same event id appears twice in one put")
        # Encoding refuses bad data (naive datetimes, values JSON cannot hold) before any I/O.
        rows = []
        for event in batch:
            envelope = _encode(event)
            size = len(envelope.encode()) + len(stream_id.encode()) + len(event.event_id.encode())
            rows.append((stream_id, event.event_id, envelope, size))
        now = self._clock()

        def insert(conn: sqlite3.Connection) -> tuple[int, int, int, int, bool]:
            """(queued, bytes pending after, bytes needed, bytes pending before, alarm changed);
            0 queued + needed > 0 means refused."""
            conn.execute("BEGIN IMMEDIATE")
            try:
                known: dict[str, str] = {}
                for chunk in _chunks(ids):
                    marks = ",".join("?" * len(chunk))
                    for table in ("outbox_pending", "outbox_forwarded", "outbox_poison"):
                        known.update(
                            conn.execute(
                                f"SELECT event_id, stream_id FROM {table} WHERE event_id IN ({marks})",
                                tuple(chunk),
                            ).fetchall()
                        )
                for event_id in ids:
                    other = known.get(event_id)
                    if other is not None and other != stream_id:
                        raise EventIdConflict(stream_id, event_id)
                new_rows = [row for row in rows if row[1] not in known]
                used = conn.execute("SELECT bytes FROM outbox_totals WHERE id = 1").fetchone()[0]
                needed = sum(row[3] for row in new_rows)
                if new_rows and used + needed > self.max_bytes:
                    # Refused: nothing is stored but the refusal itself (counted, and the alarm
                    # switched on by the first one), so every process sees the outbox is full.
                    was_full = _alarm_on(conn)
                    conn.execute(
                        "UPDATE outbox_alarm SET full = 1, full_since = coalesce(full_since, ?),"
                        " refused_puts = refused_puts + 1 WHERE id = 1",
                        (now,),
                    )
                    conn.execute("COMMIT")
                    return 0, used, needed, used, not was_full
                conn.executemany(
                    "INSERT INTO outbox_pending (stream_id, event_id, envelope, size, queued_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [(*row, now) for row in new_rows],
                )
                cleared = self._clear_alarm_if_drained(conn, used + needed)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return len(new_rows), used + needed, needed, used, cleared

        queued, used_after, needed, used_before, alarm_changed = await self._run(insert)
        if queued == 0 and needed > 0:
            if alarm_changed:
                log.error(
                    "outbox %s is FULL: %d of %d bytes pending; new events are refused until the "
                    "forwarder drains it (is the far store reachable?)",
                    self.path, used_before, self.max_bytes,
                )
            raise OutboxFull(stream_id, needed, used_before, self.max_bytes)
        if queued:
            self._changed.set()
            self._changed = anyio.Event()
        if alarm_changed:
            self._log_accepting(used_after)
        return PutResult(queued=queued, already_known=len(batch) - queued)

    def _clear_alarm_if_drained(self, conn: sqlite3.Connection, used: int) -> bool:
        """Switch the alarm off (in the caller's transaction) if it is on and ``used`` bytes are
        pending at most ``RESUME_FRACTION`` of the bound; whether it was switched off."""
        if used > self.max_bytes * RESUME_FRACTION or not _alarm_on(conn):
            return False
        conn.execute("UPDATE outbox_alarm SET full = 0, full_since = NULL WHERE id = 1")
        return True

    def _log_accepting(self, used: int) -> None:
        log.warning(
            "outbox %s accepts events again: %d of %d bytes pending", self.path, used, self.max_bytes
        )

    # -- reading --------------------------------------------------------------------------------

    async def state(self) -> OutboxState:
        def read(conn: sqlite3.Connection) -> tuple[int, int, float | None, int, tuple[int, float | None, int]]:
            conn.execute("BEGIN")  # one snapshot
            try:
                depth, used = conn.execute(
                    "SELECT depth, bytes FROM outbox_totals WHERE id = 1"
                ).fetchone()
                oldest = conn.execute(
                    "SELECT queued_at FROM outbox_pending ORDER BY seq LIMIT 1"
                ).fetchone()
                poisoned = conn.execute("SELECT count(*) FROM outbox_poison").fetchone()[0]
                alarm = conn.execute(
                    "SELECT full, full_since, refused_puts FROM outbox_alarm WHERE id = 1"
                ).fetchone()
            finally:
                conn.execute("COMMIT")
            return depth, used, None if oldest is None else oldest[0], poisoned, tuple(alarm)

        depth, used, oldest, poisoned, (alarm, since, refused) = await self._run(read)
        # The alarm as the file records it (raised by whichever process was refused); a bound
        # reached shows as full even before a put is refused.
        full = bool(alarm) or used >= self.max_bytes
        return OutboxState(
            depth=depth,
            bytes=used,
            max_bytes=self.max_bytes,
            full=full,
            oldest_age_s=None if oldest is None else max(0.0, self._clock() - oldest),
            poisoned=poisoned,
            refused_puts=int(refused),
            full_since=_utc(float(since)) if full and since is not None else None,
        )

    async def pending(self, stream_id: str) -> list[NewEvent]:
        """Events of ``stream_id`` not yet forwarded, in order (to read one's own writes)."""

        def select(conn: sqlite3.Connection) -> list[str]:
            return [
                row[0]
                for row in conn.execute(
                    "SELECT envelope FROM outbox_pending WHERE stream_id = ? ORDER BY seq",
                    (stream_id,),
                )
            ]

        return [_decode(envelope) for envelope in await self._run(select)]

    async def save_local_state(
        self, stream_id: str, version: int, schema_version: int, state: Mapping[str, object]
    ) -> None:
        """Keep ``state`` (JSON-ready, at far-equivalent ``version``) as the stream's last known
        state, replacing the previous one; events put from now on are its tail."""
        if version < 1:
            raise ValueError(f"stream {stream_id!r}: a local state needs a version of at least 1, got {version}")
        text = codec.dumps(dict(state))
        now = self._clock()

        def upsert(conn: sqlite3.Connection) -> None:
            # The newest seq ever given (AUTOINCREMENT never reuses one), forwarded or not.
            conn.execute(
                "INSERT INTO outbox_local_states (stream_id, version, schema_version, state, after_seq, saved_at)"
                " VALUES (?, ?, ?, ?, coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox_pending'), 0), ?)"
                " ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version,"
                " schema_version = excluded.schema_version, state = excluded.state,"
                " after_seq = excluded.after_seq, saved_at = excluded.saved_at",
                (stream_id, version, schema_version, text, now),
            )

        await self._run(upsert)

    async def drop_local_state(self, stream_id: str) -> None:
        """Forget the stream's local state (it is known not to be the stream's)."""
        await self._run(lambda conn: conn.execute(
            "DELETE FROM outbox_local_states WHERE stream_id = ?", (stream_id,)
        ))

    async def local_state(self, stream_id: str) -> LocalState | None:
        """The stream's last known state, its tail and what the forwarder's records say its head
        will be (one read snapshot); None when none was saved."""

        def select(conn: sqlite3.Connection) -> tuple[tuple[object, ...], list[str], int | None, int] | None:
            conn.execute("BEGIN")
            try:
                row = conn.execute(
                    "SELECT version, schema_version, state, after_seq, saved_at FROM outbox_local_states"
                    " WHERE stream_id = ?", (stream_id,),
                ).fetchone()
                if row is None:
                    return None
                tail = [r[0] for r in conn.execute(
                    "SELECT envelope FROM outbox_pending WHERE stream_id = ? AND seq > ? ORDER BY seq",
                    (stream_id, row["after_seq"]),
                )]
                head = conn.execute("SELECT head FROM outbox_heads WHERE stream_id = ?", (stream_id,)).fetchone()
                pending = conn.execute(
                    "SELECT count(*) FROM outbox_pending WHERE stream_id = ?", (stream_id,)
                ).fetchone()[0]
            finally:
                conn.execute("COMMIT")
            return tuple(row), tail, None if head is None else int(head[0]), int(pending)

        found = await self._run(select)
        if found is None:
            return None
        (version, schema_version, state, _after, saved_at), tail, head, pending = found
        return LocalState(
            stream_id=stream_id, version=int(version), schema_version=int(schema_version),  # type: ignore[call-overload]
            state=codec.loads(str(state)), saved_at=_utc(float(saved_at)),  # type: ignore[arg-type]
            tail=tuple(_decode(envelope) for envelope in tail),
            expected_head=None if head is None else head + pending,
        )

    async def written_streams(self, prefix: str = "") -> dict[str, int | None]:
        """Every stream starting with ``prefix`` that this outbox was ever given events for (pending,
        forwarded, poisoned or with a local state), with the head the stream will have once drained
        as far as the forwarder's records tell (recorded far head + pending; None when the forwarder
        never appended to it). A stream not listed was never written through this file."""

        def select(conn: sqlite3.Connection) -> dict[str, int | None]:
            # A range on the key, not LIKE: stream ids may hold '%' or '_'.
            where = "stream_id >= ? AND stream_id < ?" if prefix else "1"
            bounds = (prefix, prefix + "\U0010ffff") if prefix else ()
            rows = conn.execute(
                f"SELECT s.stream_id, h.head, (SELECT count(*) FROM outbox_pending p"
                f"  WHERE p.stream_id = s.stream_id)"
                f" FROM (SELECT stream_id FROM outbox_pending WHERE {where}"
                f"  UNION SELECT stream_id FROM outbox_heads WHERE {where}"
                f"  UNION SELECT stream_id FROM outbox_local_states WHERE {where}"
                f"  UNION SELECT stream_id FROM outbox_poison WHERE {where}) AS s"
                f" LEFT JOIN outbox_heads AS h ON h.stream_id = s.stream_id",
                bounds * 4,
            ).fetchall()
            return {row[0]: None if row[1] is None else int(row[1]) + int(row[2]) for row in rows}

        return await self._run(select)

    async def poisoned(self) -> list[PoisonedEvent]:
        """Events set aside because the far store refused them for good, oldest first."""

        def select(conn: sqlite3.Connection) -> list[tuple[str, str, str, str, float, float]]:
            return conn.execute(
                "SELECT stream_id, envelope, error_type, reason, queued_at, poisoned_at"
                " FROM outbox_poison ORDER BY seq"
            ).fetchall()

        return [
            PoisonedEvent(
                stream_id=stream_id,
                event=_decode(envelope),
                error_type=error_type,
                reason=reason,
                queued_at=_utc(queued_at),
                poisoned_at=_utc(poisoned_at),
            )
            for stream_id, envelope, error_type, reason, queued_at, poisoned_at in await self._run(select)
        ]

    # -- forwarder side -------------------------------------------------------------------------

    async def last_seq(self) -> int:
        """The newest pending seq (0 when empty): ``next_batches(up_to=...)`` bounds a drain."""
        row = await self._run(lambda conn: conn.execute("SELECT max(seq) FROM outbox_pending").fetchone())
        return int(row[0] or 0)

    async def next_batches(
        self,
        *,
        max_streams: int,
        max_events: int,
        max_bytes: int,
        event_limits: Mapping[str, int] | None = None,
        up_to: int | None = None,
    ) -> list[StreamBatch]:
        """The oldest pending events of up to ``max_streams`` streams (longest-waiting first).

        Per stream at most ``max_events`` (or its ``event_limits`` entry) events and ``max_bytes``
        payload bytes, but always at least one event; only events with ``seq <= up_to`` if given.
        """
        limits = dict(event_limits or {})
        bound = up_to if up_to is not None else -1

        def select(conn: sqlite3.Connection) -> list[StreamBatch]:
            conn.execute("BEGIN")  # one snapshot for the stream list, the events and the heads
            try:
                streams = conn.execute(
                    "SELECT stream_id, min(seq) AS first FROM outbox_pending"
                    " WHERE (? < 0 OR seq <= ?) GROUP BY stream_id ORDER BY first LIMIT ?",
                    (bound, bound, max_streams),
                ).fetchall()
                batches = []
                for stream_id, _first in streams:
                    limit = max(1, min(max_events, limits.get(stream_id, max_events)))
                    rows = conn.execute(
                        "SELECT seq, envelope, size FROM outbox_pending"
                        " WHERE stream_id = ? AND (? < 0 OR seq <= ?) ORDER BY seq LIMIT ?",
                        (stream_id, bound, bound, limit),
                    ).fetchall()
                    picked: list[PendingEvent] = []
                    total = 0
                    for seq, envelope, size in rows:
                        if picked and total + size > max_bytes:
                            break
                        total += size
                        picked.append(PendingEvent(seq, stream_id, _decode(envelope), size))
                    head = conn.execute(
                        "SELECT head FROM outbox_heads WHERE stream_id = ?", (stream_id,)
                    ).fetchone()
                    batches.append(
                        StreamBatch(stream_id, None if head is None else int(head[0]), tuple(picked))
                    )
            finally:
                conn.execute("COMMIT")
            return batches

        return await self._run(select)

    async def record_heads(self, heads: Mapping[str, int]) -> None:
        """Remember far heads durably, before appending at them (see the module docstring)."""
        if not heads:
            return

        def upsert(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                _upsert_heads(conn, heads)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        await self._run(upsert)

    async def settle(self, settlement: Settlement) -> None:
        """Apply a round's outcome in one transaction: delete forwarded events (remembering their
        ids), move the far heads, move poisoned events aside."""
        if not settlement:
            return
        now = self._clock()
        prune_before = None
        if now - self._last_prune >= _PRUNE_EVERY_S:
            prune_before = now - self.forwarded_retention_s

        def apply(conn: sqlite3.Connection) -> tuple[int, bool]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for stream_id, seqs in settlement.forwarded.items():
                    for chunk in _chunks(list(seqs)):
                        marks = ",".join("?" * len(chunk))
                        conn.execute(
                            "INSERT OR REPLACE INTO outbox_forwarded (event_id, stream_id, forwarded_at)"
                            f" SELECT event_id, stream_id, ? FROM outbox_pending WHERE seq IN ({marks})",
                            (now, *chunk),
                        )
                        conn.execute(f"DELETE FROM outbox_pending WHERE seq IN ({marks})", tuple(chunk))
                _upsert_heads(conn, settlement.heads)
                for seq, error_type, reason in settlement.poisoned:
                    conn.execute(
                        "INSERT OR REPLACE INTO outbox_poison (seq, stream_id, event_id, envelope,"
                        " error_type, reason, queued_at, poisoned_at)"
                        " SELECT seq, stream_id, event_id, envelope, ?, ?, queued_at, ?"
                        " FROM outbox_pending WHERE seq = ?",
                        (error_type, reason, now, seq),
                    )
                    conn.execute("DELETE FROM outbox_pending WHERE seq = ?", (seq,))
                if prune_before is not None:
                    conn.execute(
                        "DELETE FROM outbox_forwarded WHERE forwarded_at < ?", (prune_before,)
                    )
                used = int(conn.execute("SELECT bytes FROM outbox_totals WHERE id = 1").fetchone()[0])
                cleared = self._clear_alarm_if_drained(conn, used)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return used, cleared

        used, cleared = await self._run(apply)
        if prune_before is not None:
            self._last_prune = now
        if cleared:
            self._log_accepting(used)


def _alarm_on(conn: sqlite3.Connection) -> bool:
    return bool(conn.execute("SELECT full FROM outbox_alarm WHERE id = 1").fetchone()[0])


def _upsert_heads(conn: sqlite3.Connection, heads: Mapping[str, int]) -> None:
    conn.executemany(
        "INSERT INTO outbox_heads (stream_id, head) VALUES (?, ?)"
        " ON CONFLICT (stream_id) DO UPDATE SET head = excluded.head",
        list(heads.items()),
    )
