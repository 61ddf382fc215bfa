"""Data keys of customer assignments: one AES-256 key per assignment, destroyed to forget a customer.

``KeyStore`` is the port; ``SqliteKeyStore`` keeps keys in a small SQLite file of its own beside the
event store (not inside it: the event store is backed up and replicated for ever, a key must be able
to vanish). Azure Key Vault could implement the same protocol later with one secret per key (create =
set secret, get = get secret, destroy = delete + purge, with purge protection off for that vault).

Destroying is irreversible at the level of the file: the row is deleted under ``secure_delete``
(SQLite overwrites the freed space with zeros), a tombstone without key bytes is left so a later read
can say "destroyed" rather than "unknown", and the file is VACUUMed so no free page keeps an old copy.
The journal is a rollback journal (``journal_mode=DELETE``), not a WAL: a WAL would keep the key's
old frames until a truncating checkpoint that any concurrent reader can block. What no file-level
step can reach (SSD wear levelling, filesystem snapshots, backups of this file) is outside this
module: keep the key store out of backups that outlive the retention you promise.

A ``DataKey`` never shows its bytes in ``repr``; errors name key and assignment ids, never key bytes.
"""
from __future__ import annotations

import os
import sqlite3
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Final, Protocol, TypeVar, runtime_checkable

from gateway.personal.events import validate_assignment_id
from gateway.store.sqlite_file import SqliteFile, immediate_transaction
from gateway.store.codec import iso_utc, parse_utc

KEY_BYTES: Final[int] = 32  # AES-256

T = TypeVar("T")


class KeyStoreError(Exception):
    """Base of the errors of a key store."""


class KeyNotFound(KeyStoreError):
    """No key was ever created under this id (or for this assignment): a wrong key store?"""

    def __init__(self, key_id: str | None = None, assignment_id: str | None = None) -> None:
        self.key_id = key_id
        self.assignment_id = assignment_id
        what = f"key {key_id!r}" if key_id is not None else f"assignment {assignment_id!r}"
        super().__init__(f"no data key for {what} in this key store")


class KeyDestroyed(KeyStoreError):
    """The key was destroyed (the assignment was forgotten); what it encrypted is gone."""

    def __init__(self, key_id: str, assignment_id: str, destroyed_at: datetime) -> None:
        self.key_id = key_id
        self.assignment_id = assignment_id
        self.destroyed_at = destroyed_at
        super().__init__(
            f"data key {key_id!r} of assignment {assignment_id!r} was destroyed at {iso_utc(destroyed_at)}"
        )


class KeyStoreUnavailable(KeyStoreError):
    def __init__(self, message: str) -> None:
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class DataKey:
    key_id: str
    assignment_id: str
    material: bytes = field(repr=False)  # never in a log line or an error message

    def __post_init__(self) -> None:
        if len(self.material) != KEY_BYTES:
            raise ValueError(f"data key {self.key_id!r} must be {KEY_BYTES} bytes")


@runtime_checkable
class KeyStore(Protocol):
    async def create(self, assignment_id: str) -> DataKey:
        """The assignment's key, made now if it has none (so a retried command reuses it).
        KeyDestroyed if the assignment was forgotten: its key is never made again."""
        ...

    async def get(self, key_id: str) -> DataKey:
        """KeyNotFound if never created, KeyDestroyed if destroyed."""
        ...

    async def destroy(self, assignment_id: str) -> bool:
        """Destroy the assignment's key irreversibly. True if destroyed now, False if it already
        was; KeyNotFound if the assignment never had one."""
        ...

    async def aclose(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS data_keys (
    key_id        TEXT PRIMARY KEY,
    assignment_id TEXT NOT NULL UNIQUE,
    material      BLOB,             -- NULL once destroyed (the row is then a tombstone)
    created_at    TEXT NOT NULL,
    destroyed_at  TEXT,
    CHECK ((material IS NULL) = (destroyed_at IS NOT NULL))
);
"""


def key_store_path_for(store_path: Path) -> Path:
    """Where the key store of the SQLite event store at ``store_path`` lives: beside it."""
    return store_path.with_name(f"{store_path.stem}.keys{store_path.suffix or '.db'}")


class SqliteKeyStore:
    """``KeyStore`` on its own SQLite file. Create with ``await SqliteKeyStore.open(path)``."""

    def __init__(self, db: SqliteFile) -> None:
        self._db = db
        self.path = db.path

    @classmethod
    async def open(cls, path: str | Path, *, busy_timeout: float = 5.0) -> SqliteKeyStore:
        # A rollback journal with secure_delete: a destroyed key leaves no copy in the file (a WAL
        # would keep old frames until a checkpoint).
        db = await SqliteFile.open(
            path, schema=_SCHEMA, what="key store", unavailable=KeyStoreUnavailable,
            journal="delete", secure_delete=True, busy_timeout=busy_timeout,
        )
        try:
            os.chmod(db.path, 0o600)  # keys: readable by the gateway's user only
        except OSError:
            pass  # e.g. a file owned by another user that we may still read; not worth failing
        return cls(db)

    async def aclose(self) -> None:
        await self._db.aclose()

    async def _run(self, func: Callable[[sqlite3.Connection], T]) -> T:
        return await self._db.run(func)

    async def create(self, assignment_id: str) -> DataKey:
        validate_assignment_id(assignment_id)

        def create(conn: sqlite3.Connection) -> DataKey:
            with immediate_transaction(conn):
                row = conn.execute(
                    "SELECT key_id, material, destroyed_at FROM data_keys WHERE assignment_id = ?",
                    (assignment_id,),
                ).fetchone()
                if row is not None:
                    return _key_of(row, assignment_id)
                key = DataKey(str(uuid.uuid4()), assignment_id, os.urandom(KEY_BYTES))
                conn.execute(
                    "INSERT INTO data_keys (key_id, assignment_id, material, created_at)"
                    " VALUES (?, ?, ?, ?)",
                    (key.key_id, assignment_id, key.material, iso_utc(datetime.now(timezone.utc))),
                )
                return key

        return await self._run(create)

    async def get(self, key_id: str) -> DataKey:
        def select(conn: sqlite3.Connection) -> DataKey:
            row = conn.execute(
                "SELECT key_id, assignment_id, material, destroyed_at FROM data_keys WHERE key_id = ?",
                (key_id,),
            ).fetchone()
            if row is None:
                raise KeyNotFound(key_id=key_id)
            return _key_of(row, row["assignment_id"])

        return await self._run(select)

    async def destroy(self, assignment_id: str) -> bool:
        def destroy(conn: sqlite3.Connection) -> bool:
            with immediate_transaction(conn):
                row = conn.execute(
                    "SELECT key_id, created_at, material FROM data_keys WHERE assignment_id = ?",
                    (assignment_id,),
                ).fetchone()
                if row is None:
                    raise KeyNotFound(assignment_id=assignment_id)
                if row["material"] is None:
                    return False
                # DELETE, not UPDATE: a deleted cell is zeroed by secure_delete for certain, an
                # updated one may be rewritten elsewhere in the page leaving the old bytes behind.
                conn.execute("DELETE FROM data_keys WHERE assignment_id = ?", (assignment_id,))
                conn.execute(
                    "INSERT INTO data_keys (key_id, assignment_id, material, created_at, destroyed_at)"
                    " VALUES (?, ?, NULL, ?, ?)",
                    (row["key_id"], assignment_id, row["created_at"],
                     iso_utc(datetime.now(timezone.utc))),
                )
            # Rebuilds the file from live rows only: no free page or freeblock keeps an old copy.
            conn.execute("VACUUM")
            return True

        return await self._run(destroy)


def _key_of(row: sqlite3.Row, assignment_id: str) -> DataKey:
    if row["material"] is None:
        raise KeyDestroyed(row["key_id"], assignment_id, parse_utc(row["destroyed_at"]))
    return DataKey(row["key_id"], assignment_id, bytes(row["material"]))


__all__ = [
    "KEY_BYTES", "DataKey", "KeyDestroyed", "KeyNotFound", "KeyStore", "KeyStoreError",
    "KeyStoreUnavailable", "SqliteKeyStore", "key_store_path_for",
]
