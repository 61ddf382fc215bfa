"""Where projections keep their views and checkpoints: the ``ViewStore`` contract and its SQLite backend.

A view is a set of small JSON documents, each under a key and a partition (the meter id: Cosmos's
partition key, and what ``views show --meter`` filters on). Each document carries what it has already
applied (``applied``: stream id -> last applied stream version) and an opaque ``version`` for
optimistic concurrency (SQLite: a counter column; Cosmos: the item's etag): ``save_many`` writes a
document only if its stored version is still the one it was read at, and reports the keys where it was not (another engine got there first), so the caller can
re-read and re-apply. Checkpoints (one per projection, an opaque read-all position of the event
store) live beside the views and are saved after them, never in the same transaction, because on
Cosmos they cannot be: the ``applied`` marks make a re-delivered batch harmless instead.

The SQLite views live in their own file next to the event store (``views_path``), so projection
writes never hold the event store's write lock while the poller appends.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, TypeVar

from gateway.store.sqlite_file import SqliteFile, immediate_transaction
from gateway.store import codec

T = TypeVar("T")


class ViewStoreError(Exception):
    """Base class of the errors of a view store."""


class ViewStoreUnavailable(ViewStoreError):
    """The view store cannot be reached or is locked past its timeout; the call may be retried."""


class ViewsUnavailable(Exception):
    """The views (or the event store they belong to) cannot be found or used as asked."""


@dataclass(frozen=True, slots=True)
class ViewDoc:
    """One document of a view. ``version`` None means "not stored yet" (create it)."""

    view: str
    key: str
    partition: str
    body: Mapping[str, Any]
    applied: Mapping[str, int] = field(default_factory=dict)
    version: str | None = None  # opaque concurrency token of the stored document


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where a projection stands in the event store's read-all feed."""

    projection: str
    position: str | None  # opaque read_all checkpoint; None: from the beginning
    events_seen: int = 0  # events read from the feed since the last rebuild
    updated_at: datetime | None = None
    store_id: str | None = None  # the event store the position is of (None: not known)
    last_event_id: str | None = None  # the event at the position (None: not known)


class ViewStore(Protocol):
    async def get_many(self, view: str, keys: Mapping[str, str]) -> dict[str, ViewDoc]:
        """The stored documents among ``keys`` (key -> partition); missing ones are left out."""
        ...

    async def save_many(self, docs: Sequence[ViewDoc]) -> set[str]:
        """Store each document if its stored version is still ``doc.version`` (or, for None, if
        it does not exist); returns the keys that conflicted (those were not written)."""
        ...

    async def query(
        self, view: str, partition: str | None = None, key_from: str | None = None,
        key_to: str | None = None,
    ) -> list[ViewDoc]:
        """Documents of ``view`` (of one partition if given), keys in [key_from, key_to], by key."""
        ...

    async def load_checkpoint(self, projection: str) -> Checkpoint: ...

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None: ...

    async def drop(self, projection: str, view: str) -> None:
        """Delete every document of ``view`` and the checkpoint of ``projection`` (a rebuild)."""
        ...

    async def aclose(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS view_docs (
    view       TEXT    NOT NULL,
    doc_key    TEXT    NOT NULL,
    partition  TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    applied    TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    updated_at TEXT    NOT NULL,
    PRIMARY KEY (view, doc_key)
);
CREATE INDEX IF NOT EXISTS view_docs_partition ON view_docs (view, partition, doc_key);
CREATE TABLE IF NOT EXISTS checkpoints (
    projection  TEXT    PRIMARY KEY,
    position    TEXT,
    events_seen INTEGER NOT NULL,
    updated_at  TEXT    NOT NULL,
    store_id    TEXT,
    last_event_id TEXT
);
"""


def _add_store_id(conn: sqlite3.Connection) -> None:
    # Views files from before checkpoints named their event store: add the columns (NULL: unknown).
    columns = {row["name"] for row in conn.execute("PRAGMA table_info(checkpoints)")}
    for column in ("store_id", "last_event_id"):
        if column not in columns:
            conn.execute(f"ALTER TABLE checkpoints ADD COLUMN {column} TEXT")


def views_path(store_path: Path) -> Path:
    """The views file that belongs to the SQLite event store at ``store_path``."""
    return store_path.with_name(store_path.stem + ".views" + (store_path.suffix or ".db"))


def _row_to_doc(row: sqlite3.Row) -> ViewDoc:
    return ViewDoc(
        view=row["view"],
        key=row["doc_key"],
        partition=row["partition"],
        body=codec.loads(row["body"]),
        applied=codec.loads(row["applied"]),
        version=str(row["version"]),
    )


class SqliteViewStore:
    """``ViewStore`` on one SQLite file (WAL). Create with ``await SqliteViewStore.open(path)``."""

    def __init__(self, db: SqliteFile) -> None:
        self._db = db
        self.path = db.path

    @classmethod
    async def open(cls, path: str | Path, *, busy_timeout: float = 10.0) -> SqliteViewStore:
        # Views can always be rebuilt from the events: NORMAL is durable enough in WAL mode (a
        # power cut loses at most the last commits, and their checkpoint with them, so they replay).
        db = await SqliteFile.open(
            path, schema=_SCHEMA, what="view store", unavailable=ViewStoreUnavailable,
            synchronous="normal", busy_timeout=busy_timeout,
        )
        try:
            await db.run(_add_store_id)
        except BaseException:
            await db.aclose()
            raise
        return cls(db)

    async def aclose(self) -> None:
        await self._db.aclose()

    async def _run(self, func: Callable[[sqlite3.Connection], T]) -> T:
        return await self._db.run(func)

    async def get_many(self, view: str, keys: Mapping[str, str]) -> dict[str, ViewDoc]:
        wanted = list(keys)

        def select(conn: sqlite3.Connection) -> dict[str, ViewDoc]:
            found: dict[str, ViewDoc] = {}
            # 500 keys per statement stays below SQLite's bound-parameter limit.
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                rows = conn.execute(
                    "SELECT * FROM view_docs WHERE view = ? AND doc_key IN"
                    f" ({','.join('?' * len(chunk))})",
                    (view, *chunk),
                ).fetchall()
                found.update((row["doc_key"], _row_to_doc(row)) for row in rows)
            return found

        return await self._run(select)

    async def save_many(self, docs: Sequence[ViewDoc]) -> set[str]:
        now = codec.iso_utc(datetime.now(timezone.utc))
        encoded = [
            (doc, codec.dumps(doc.body), codec.dumps(dict(doc.applied))) for doc in docs
        ]

        def write(conn: sqlite3.Connection) -> set[str]:
            conflicts: set[str] = set()
            with immediate_transaction(conn):
                for doc, body, applied in encoded:
                    if doc.version is None:
                        cursor = conn.execute(
                            "INSERT INTO view_docs (view, doc_key, partition, body, applied, version,"
                            " updated_at) VALUES (?, ?, ?, ?, ?, 1, ?)"
                            " ON CONFLICT (view, doc_key) DO NOTHING",
                            (doc.view, doc.key, doc.partition, body, applied, now),
                        )
                    else:
                        cursor = conn.execute(
                            "UPDATE view_docs SET body = ?, applied = ?, version = version + 1,"
                            " updated_at = ? WHERE view = ? AND doc_key = ? AND version = ?",
                            (body, applied, now, doc.view, doc.key, int(doc.version)),
                        )
                    if cursor.rowcount == 0:
                        conflicts.add(doc.key)
            return conflicts

        return await self._run(write)

    async def query(
        self, view: str, partition: str | None = None, key_from: str | None = None,
        key_to: str | None = None,
    ) -> list[ViewDoc]:
        sql = "SELECT * FROM view_docs WHERE view = ?"
        params: list[Any] = [view]
        if partition is not None:
            sql += " AND partition = ?"
            params.append(partition)
        if key_from is not None:
            sql += " AND doc_key >= ?"
            params.append(key_from)
        if key_to is not None:
            sql += " AND doc_key <= ?"
            params.append(key_to)
        sql += " ORDER BY doc_key"

        def select(conn: sqlite3.Connection) -> list[ViewDoc]:
            return [_row_to_doc(row) for row in conn.execute(sql, params).fetchall()]

        return await self._run(select)

    async def load_checkpoint(self, projection: str) -> Checkpoint:
        def select(conn: sqlite3.Connection) -> sqlite3.Row | None:
            return conn.execute(
                "SELECT * FROM checkpoints WHERE projection = ?", (projection,)
            ).fetchone()

        row = await self._run(select)
        if row is None:
            return Checkpoint(projection=projection, position=None)
        return Checkpoint(
            projection=projection,
            position=row["position"],
            events_seen=row["events_seen"],
            updated_at=codec.parse_utc(row["updated_at"]),
            store_id=row["store_id"],
            last_event_id=row["last_event_id"],
        )

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        updated = codec.iso_utc(checkpoint.updated_at or datetime.now(timezone.utc))

        def upsert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO checkpoints (projection, position, events_seen, updated_at, store_id,"
                " last_event_id) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (projection) DO UPDATE SET"
                " position = excluded.position, events_seen = excluded.events_seen,"
                " updated_at = excluded.updated_at, store_id = excluded.store_id,"
                " last_event_id = excluded.last_event_id",
                (checkpoint.projection, checkpoint.position, checkpoint.events_seen, updated,
                 checkpoint.store_id, checkpoint.last_event_id),
            )

        await self._run(upsert)

    async def drop(self, projection: str, view: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            with immediate_transaction(conn):
                conn.execute("DELETE FROM view_docs WHERE view = ?", (view,))
                conn.execute("DELETE FROM checkpoints WHERE projection = ?", (projection,))

        await self._run(delete)
