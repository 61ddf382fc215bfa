"""One SQLite file used from async code: the pattern shared by every local database of the box.

The event store, the outbox, the key store, the unique index, the views and the health table each
keep one connection to their own file. sqlite3 connections must not be used by two threads at once
and a transaction must not interleave with another task's statements, so an ``anyio.Lock`` serialises
the connection and every blocking call runs in a worker thread: the event loop never waits on the disk.
A call is not abandoned on cancellation: the worker finishes (and commits or rolls back) first, so the
connection is never left inside a transaction.

Failures of the database itself (locked past the busy timeout, disk I/O, closed) become the caller's
own "unavailable" error type, built by ``unavailable(message)``.
"""
from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Literal, TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")
ErrorFactory = Callable[[str], Exception]


class SqliteFile:
    """A SQLite connection owned by async code. Create with ``await SqliteFile.open(...)``."""

    def __init__(self, conn: sqlite3.Connection, path: Path, what: str, unavailable: ErrorFactory) -> None:
        self._conn = conn
        self.path = path
        self._what = what
        self._unavailable = unavailable
        self._lock = anyio.Lock()  # guards the one connection
        self._closed = False

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        schema: str,
        what: str,
        unavailable: ErrorFactory,
        journal: Literal["wal", "delete"] = "wal",
        secure_delete: bool = False,
        synchronous: Literal["full", "normal"] = "full",
        busy_timeout: float = 5.0,
    ) -> SqliteFile:
        """Open (creating if needed) ``path`` and run ``schema``.

        ``synchronous="full"`` (the default) for files that hold the only copy of something;
        ``"normal"`` only for files rebuilt from others (views), where losing the last commits in a
        power cut costs a replay, not data.

        ``journal="wal"`` suits append-heavy files read while written; ``"delete"`` (a rollback
        journal) with ``secure_delete`` suits files whose deleted rows must leave no copy behind (a
        WAL keeps old pages until a checkpoint).
        """
        db_path = Path(path)

        def connect() -> sqlite3.Connection:
            # isolation_level=None: callers issue BEGIN/COMMIT themselves (the module's implicit
            # transactions would otherwise start a DEFERRED one before their writes).
            conn = sqlite3.connect(
                db_path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            try:
                conn.row_factory = sqlite3.Row
                conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
                mode = conn.execute(f"PRAGMA journal_mode = {journal.upper()}").fetchone()[0]
                if str(mode).lower() != journal:
                    raise sqlite3.OperationalError(f"cannot use journal mode {journal} (got {mode})")
                if secure_delete:
                    conn.execute("PRAGMA secure_delete = ON")
                    # VACUUM's scratch copy stays in memory, not in a temp file that outlives it.
                    conn.execute("PRAGMA temp_store = MEMORY")
                # An edge box loses power: FULL syncs at every commit, so what was acknowledged
                # is on disk.
                conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
                conn.executescript(schema)
            except BaseException:
                conn.close()
                raise
            return conn

        try:
            conn = await anyio.to_thread.run_sync(connect)
        except sqlite3.Error as exc:
            raise unavailable(f"cannot open {what} {db_path}: {exc}") from exc
        return cls(conn, db_path, what, unavailable)

    async def run(self, func: Callable[[sqlite3.Connection], T], *, unavailable: ErrorFactory | None = None) -> T:
        """Run ``func`` with the connection in a worker thread, one caller at a time."""
        error = unavailable or self._unavailable
        async with self._lock:
            if self._closed:
                raise error(f"the {self._what} {self.path} is closed")
            try:
                return await anyio.to_thread.run_sync(func, self._conn)
            except sqlite3.OperationalError as exc:
                raise error(f"{self._what} {self.path}: {exc}") from exc

    async def aclose(self) -> None:
        async with self._lock:
            if not self._closed:
                self._closed = True
                await anyio.to_thread.run_sync(self._conn.close)


@contextmanager
def immediate_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error.

    IMMEDIATE takes the write lock up front, so a read inside cannot be overtaken by another
    writer before this transaction's own write.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the original error is the one worth reporting
        raise
    conn.execute("COMMIT")
