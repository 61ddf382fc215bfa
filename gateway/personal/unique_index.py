"""Command-side unique index: activation codes and meter ids unique per fleet, reserved before append.

An event store has no unique constraint across streams, so ``assign`` works in three steps (as in the
talk): **reserve** the values here, **append** the event, **confirm** the reservation; a failed
append **releases** it. A reservation is a row ``(kind, digest) -> owner, status, stream_id,
event_id, reserved_at, expires_at``; the primary key refuses a second owner.

A crash between reserve and confirm must not hold a value for ever, and must not free a value whose
event did get appended. So a reservation carries the id of the event that will confirm it (event ids
are deterministic, known before the append) and the stream it goes to, and expires after a TTL. The
**sweeper** (``sweep``, run before every reservation and callable on its own) looks at each expired
reservation's stream: if the event is there, the crash came after the append and the reservation is
confirmed; if not, the append never happened and the value is released. A writer slower than the
TTL cannot sneak in after its reservation was swept: it checks ``hold`` right before appending
(refusing when less than a tenth of the TTL is left), and ``confirm`` re-takes a swept value only if
nobody else holds it, raising ``ReservationLost`` otherwise. Keep the TTL far above the store's
timeouts (default 10 minutes).

Values are stored as SHA-256 digests, not as text, and forgetting an assignment deletes its rows
under ``secure_delete``: an activation code is personal data, and a digest of a short code can be
brute-forced, so it must go too. The index is one SQLite file beside the event store.
"""
from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Final, Literal, Sequence, TypeVar

from gateway.store.sqlite_file import SqliteFile, immediate_transaction
from gateway.store import EventStore, StoreError, StreamNotFound

Kind = Literal["meter_id", "activation_code"]
KINDS: Final[tuple[Kind, ...]] = ("meter_id", "activation_code")
DEFAULT_TTL_S: Final[float] = 600.0

T = TypeVar("T")


class UniqueIndexError(Exception):
    """Base of the errors of the unique index."""


class ValueTaken(UniqueIndexError):
    """The value is reserved or confirmed by another owner. The value itself is not repeated here
    (an activation code is personal data); the kind and the other owner are."""

    def __init__(self, kind: Kind, owner: str, pending: bool) -> None:
        self.kind = kind
        self.owner = owner
        self.pending = pending
        state = "reserved (append in progress)" if pending else "in use"
        super().__init__(f"this {kind.replace('_', ' ')} is already {state} by assignment {owner!r}")


class ReservationLost(UniqueIndexError):
    """A reservation expired and was swept, or another owner holds the value now."""

    def __init__(self, kind: Kind, owner: str, reason: str) -> None:
        self.kind = kind
        self.owner = owner
        super().__init__(f"reservation of a {kind.replace('_', ' ')} by {owner!r} lost: {reason}")


class UniqueIndexUnavailable(UniqueIndexError):
    pass


@dataclass(frozen=True, slots=True)
class UniqueValue:
    kind: Kind
    value: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown unique kind {self.kind!r}; one of {KINDS}")

    def __repr__(self) -> str:  # the value may be personal data: keep it out of logs
        return f"UniqueValue({self.kind!r}, <{len(self.value)} chars>)"

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"{self.kind}\x00{self.value}".encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Reservation:
    values: tuple[UniqueValue, ...]
    owner: str
    stream_id: str
    event_id: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class IndexEntry:
    kind: Kind
    digest: str
    status: Literal["reserved", "confirmed"]
    owner: str
    stream_id: str
    event_id: str
    reserved_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class SweepResult:
    confirmed: int  # reservations whose event was found in the store
    released: int  # reservations whose event was not there
    undecided: int  # the store could not be asked; left for the next sweep


_SCHEMA = """
CREATE TABLE IF NOT EXISTS unique_values (
    kind        TEXT NOT NULL,
    digest      TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('reserved', 'confirmed')),
    owner       TEXT NOT NULL,
    stream_id   TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    reserved_at REAL NOT NULL,   -- Unix seconds, UTC
    expires_at  REAL NOT NULL,
    PRIMARY KEY (kind, digest)
);
CREATE INDEX IF NOT EXISTS unique_values_expiry ON unique_values (status, expires_at);
CREATE INDEX IF NOT EXISTS unique_values_owner ON unique_values (owner);
"""


def unique_index_path_for(store_path: Path) -> Path:
    """Where the unique index of the SQLite event store at ``store_path`` lives: beside it."""
    return store_path.with_name(f"{store_path.stem}.unique{store_path.suffix or '.db'}")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _ts(value: datetime) -> float:
    return value.timestamp()


def _dt(value: float) -> datetime:
    return datetime.fromtimestamp(value, timezone.utc)


class UniqueIndex:
    """The index on one SQLite file. Create with ``await UniqueIndex.open(path)``."""

    def __init__(self, db: SqliteFile, ttl_s: float) -> None:
        self._db = db
        self.path = db.path
        self.ttl = timedelta(seconds=ttl_s)

    @classmethod
    async def open(cls, path: str | Path, *, ttl_s: float = DEFAULT_TTL_S,
                   busy_timeout: float = 5.0) -> UniqueIndex:
        if ttl_s <= 0:
            raise ValueError(f"the reservation TTL must be positive, not {ttl_s}")
        # Rollback journal + secure_delete: a released digest leaves no copy in the file (a WAL
        # would keep old frames; see gateway.personal.keys).
        db = await SqliteFile.open(
            path, schema=_SCHEMA, what="unique index", unavailable=UniqueIndexUnavailable,
            journal="delete", secure_delete=True, busy_timeout=busy_timeout,
        )
        return cls(db, ttl_s)

    async def aclose(self) -> None:
        await self._db.aclose()

    async def _run(self, func: Callable[[sqlite3.Connection], T]) -> T:
        return await self._db.run(func)

    # -- reserve / confirm / release --------------------------------------------------------------

    async def reserve(self, values: Sequence[UniqueValue], *, owner: str, stream_id: str,
                      event_id: str, now: datetime | None = None) -> Reservation:
        """Reserve every value for ``owner``, all or none. ValueTaken if another owner holds one
        (run ``sweep`` first so expired reservations are resolved). Reserving again for the same
        owner (a retried command) refreshes the reservation."""
        if not values:
            raise ValueError("nothing to reserve")
        at = now or _now()
        expires = at + self.ttl

        def reserve(conn: sqlite3.Connection) -> None:
            with immediate_transaction(conn):
                for value in values:
                    row = conn.execute(
                        "SELECT owner, status FROM unique_values WHERE kind = ? AND digest = ?",
                        (value.kind, value.digest),
                    ).fetchone()
                    if row is None:
                        conn.execute(
                            "INSERT INTO unique_values (kind, digest, status, owner, stream_id,"
                            " event_id, reserved_at, expires_at) VALUES (?, ?, 'reserved', ?, ?, ?, ?, ?)",
                            (value.kind, value.digest, owner, stream_id, event_id, _ts(at), _ts(expires)),
                        )
                    elif row["owner"] != owner:
                        raise ValueTaken(value.kind, row["owner"], pending=row["status"] == "reserved")
                    elif row["status"] == "reserved":
                        conn.execute(
                            "UPDATE unique_values SET stream_id = ?, event_id = ?, expires_at = ?"
                            " WHERE kind = ? AND digest = ?",
                            (stream_id, event_id, _ts(expires), value.kind, value.digest),
                        )

        await self._run(reserve)
        return Reservation(tuple(values), owner, stream_id, event_id, expires)

    async def hold(self, reservation: Reservation, *, margin_s: float | None = None,
                   now: datetime | None = None) -> None:
        """Raise ReservationLost unless every value is still reserved (or confirmed) by the owner
        with at least ``margin_s`` (default: a tenth of the TTL) to go. Call right before the append."""
        margin = self.ttl / 10 if margin_s is None else timedelta(seconds=margin_s)
        deadline = _ts((now or _now()) + margin)

        def check(conn: sqlite3.Connection) -> None:
            for value in reservation.values:
                row = conn.execute(
                    "SELECT owner, status, expires_at FROM unique_values WHERE kind = ? AND digest = ?",
                    (value.kind, value.digest),
                ).fetchone()
                if row is None or row["owner"] != reservation.owner:
                    raise ReservationLost(value.kind, reservation.owner, "swept or taken meanwhile")
                if row["status"] == "reserved" and row["expires_at"] < deadline:
                    raise ReservationLost(value.kind, reservation.owner, "too close to its expiry")

        await self._run(check)

    async def confirm(self, reservation: Reservation, now: datetime | None = None) -> None:
        """Mark the values as owned for good (their event is in the store). Idempotent."""
        at = _ts(now or _now())

        def confirm(conn: sqlite3.Connection) -> None:
            with immediate_transaction(conn):
                for value in reservation.values:
                    updated = conn.execute(
                        "UPDATE unique_values SET status = 'confirmed', stream_id = ?, event_id = ?"
                        " WHERE kind = ? AND digest = ? AND owner = ?",
                        (reservation.stream_id, reservation.event_id, value.kind, value.digest,
                         reservation.owner),
                    ).rowcount
                    if updated:
                        continue
                    # Swept as "not appended" while our append was still on its way: take it back
                    # if it is still free; if someone else took it, the duplicate must be reported.
                    try:
                        conn.execute(
                            "INSERT INTO unique_values (kind, digest, status, owner, stream_id,"
                            " event_id, reserved_at, expires_at) VALUES (?, ?, 'confirmed', ?, ?, ?, ?, ?)",
                            (value.kind, value.digest, reservation.owner, reservation.stream_id,
                             reservation.event_id, at, at),
                        )
                    except sqlite3.IntegrityError:
                        raise ReservationLost(
                            value.kind, reservation.owner, "another owner took it after a sweep"
                        ) from None

        await self._run(confirm)

    async def release(self, reservation: Reservation) -> int:
        """Free values still only reserved by the owner (the append failed). Confirmed ones stay."""
        def release(conn: sqlite3.Connection) -> int:
            with immediate_transaction(conn):
                return sum(
                    conn.execute(
                        "DELETE FROM unique_values WHERE kind = ? AND digest = ? AND owner = ?"
                        " AND status = 'reserved'",
                        (value.kind, value.digest, reservation.owner),
                    ).rowcount
                    for value in reservation.values
                )

        return await self._run(release)

    async def release_owner(self, owner: str) -> int:
        """Free every value of ``owner``, confirmed or not (the assignment was forgotten); the
        rows are overwritten in the file (secure_delete) and the file compacted."""
        def release(conn: sqlite3.Connection) -> int:
            with immediate_transaction(conn):
                count = conn.execute("DELETE FROM unique_values WHERE owner = ?", (owner,)).rowcount
            conn.execute("VACUUM")
            return count

        return await self._run(release)

    # -- the sweeper ---------------------------------------------------------------------------

    async def sweep(self, store: EventStore, now: datetime | None = None) -> SweepResult:
        """Resolve every expired reservation by looking for its event in ``store``."""
        at = _ts(now or _now())

        def expired(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            return conn.execute(
                "SELECT DISTINCT owner, stream_id, event_id FROM unique_values"
                " WHERE status = 'reserved' AND expires_at <= ?",
                (at,),
            ).fetchall()

        confirmed = released = undecided = 0
        for row in await self._run(expired):
            owner, stream_id, event_id = row["owner"], row["stream_id"], row["event_id"]
            try:
                appended = await _event_in_store(store, stream_id, event_id)
            except StoreError:
                undecided += 1
                continue

            def resolve(conn: sqlite3.Connection) -> int:
                # Conditions repeated: a writer may have confirmed or refreshed it meanwhile.
                where = (" WHERE owner = ? AND stream_id = ? AND event_id = ? AND status = 'reserved'"
                         " AND expires_at <= ?")
                with immediate_transaction(conn):
                    if appended:
                        sql = "UPDATE unique_values SET status = 'confirmed'" + where
                    else:
                        sql = "DELETE FROM unique_values" + where
                    return conn.execute(sql, (owner, stream_id, event_id, at)).rowcount

            if await self._run(resolve):
                if appended:
                    confirmed += 1
                else:
                    released += 1
        return SweepResult(confirmed, released, undecided)

    async def entries(self, owner: str | None = None) -> list[IndexEntry]:
        def select(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            if owner is None:
                return conn.execute("SELECT * FROM unique_values ORDER BY reserved_at").fetchall()
            return conn.execute(
                "SELECT * FROM unique_values WHERE owner = ? ORDER BY reserved_at", (owner,)
            ).fetchall()

        return [
            IndexEntry(
                kind=row["kind"], digest=row["digest"], status=row["status"], owner=row["owner"],
                stream_id=row["stream_id"], event_id=row["event_id"],
                reserved_at=_dt(row["reserved_at"]), expires_at=_dt(row["expires_at"]),
            )
            for row in await self._run(select)
        ]


async def _event_in_store(store: EventStore, stream_id: str, event_id: str) -> bool:
    try:
        events = await store.load(stream_id)
    except StreamNotFound:
        return False
    return any(event.event_id == event_id for event in events)


__all__ = [
    "DEFAULT_TTL_S", "KINDS", "IndexEntry", "Kind", "Reservation",
    "ReservationLost", "SweepResult", "UniqueIndex", "UniqueIndexError", "UniqueIndexUnavailable",
    "UniqueValue", "ValueTaken", "unique_index_path_for",
]
