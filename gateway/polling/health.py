"""Per-meter health: last success, last error, intervals missing, suspect readings; read by `status`.

Kept in a sidecar table ``meter_health`` of the SQLite store file itself (or of the local outbox file
when the store is Cosmos), so the box has one file to back up and `gateway status` needs nothing but
the config. It is operational state, not history: the events are the truth, and losing this table
loses nothing but the status view and the event-log read cursors (the poller then re-reads a window
of the log and drops what is already stored).

The gateway writes it through its own connection (WAL lets it sit beside the store's connection),
owned through ``gateway.store.sqlite_file``.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from gateway.store.sqlite_file import SqliteFile, immediate_transaction

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meter_health (
    meter_id             TEXT    PRIMARY KEY,
    last_attempt_at      TEXT,
    last_success_at      TEXT,
    last_error_at        TEXT,
    last_error           TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    polls_ok             INTEGER NOT NULL DEFAULT 0,
    polls_failed         INTEGER NOT NULL DEFAULT 0,
    last_interval_end    TEXT,
    intervals_behind     INTEGER NOT NULL DEFAULT 0,
    gap_intervals        INTEGER NOT NULL DEFAULT 0,
    suspect_readings     INTEGER NOT NULL DEFAULT 0,
    last_suspect         TEXT,
    event_log_cursors    TEXT    NOT NULL DEFAULT '{}'
);
"""


class HealthError(Exception):
    """The health table cannot be opened or written (names the file)."""


@dataclass(frozen=True, slots=True)
class PollOutcome:
    """What one poll of one meter changes in its health row."""

    meter_id: str
    at: datetime  # gateway time of the poll (aware)
    ok: bool  # every due step succeeded
    error: str | None = None  # "Kind: message" of the first failure; never contains secrets
    last_interval_end: datetime | None = None  # newest stored load-profile interval end
    intervals_behind: int | None = None  # capture periods between that end and the poll; None: unknown
    new_gap_intervals: int = 0  # intervals the meter could not supply (ReadingGapDetected) in this poll
    new_suspects: int = 0
    last_suspect: str | None = None
    event_log_cursors: Mapping[str, datetime] = field(default_factory=dict)  # log OBIS -> newest stored


@dataclass(frozen=True, slots=True)
class MeterHealth:
    meter_id: str
    last_attempt_at: datetime | None = None
    last_success_at: datetime | None = None
    last_error_at: datetime | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    polls_ok: int = 0
    polls_failed: int = 0
    last_interval_end: datetime | None = None
    intervals_behind: int = 0
    gap_intervals: int = 0
    suspect_readings: int = 0
    last_suspect: str | None = None
    event_log_cursors: Mapping[str, datetime] = field(default_factory=dict)

    @property
    def intervals_missing(self) -> int:
        """Intervals not stored: not read yet (behind) plus those the meter could not supply (gaps)."""
        return self.intervals_behind + self.gap_intervals


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _when(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _row_to_health(row: sqlite3.Row) -> MeterHealth:
    cursors = {k: datetime.fromisoformat(v) for k, v in json.loads(row["event_log_cursors"]).items()}
    return MeterHealth(
        meter_id=row["meter_id"],
        last_attempt_at=_when(row["last_attempt_at"]),
        last_success_at=_when(row["last_success_at"]),
        last_error_at=_when(row["last_error_at"]),
        last_error=row["last_error"],
        consecutive_failures=row["consecutive_failures"],
        polls_ok=row["polls_ok"],
        polls_failed=row["polls_failed"],
        last_interval_end=_when(row["last_interval_end"]),
        intervals_behind=row["intervals_behind"],
        gap_intervals=row["gap_intervals"],
        suspect_readings=row["suspect_readings"],
        last_suspect=row["last_suspect"],
        event_log_cursors=cursors,
    )


class HealthStore:
    """The ``meter_health`` table of one SQLite file. Create with ``await HealthStore.open(path)``."""

    def __init__(self, db: SqliteFile) -> None:
        self._db = db
        self.path = db.path

    @classmethod
    async def open(cls, path: str | Path, *, create: bool = True) -> HealthStore:
        """Open the table in ``path``; with ``create=False`` a missing file is a HealthError."""
        db_path = Path(path)
        if not create and not db_path.exists():
            raise HealthError(f"{db_path} does not exist: the gateway has not run with this store yet")
        # Operational state, not history: after a power cut the last few updates may be lost (the
        # next poll rewrites them), and no poll waits for an fsync of its status line.
        db = await SqliteFile.open(
            db_path, schema=_SCHEMA, what="health table in", unavailable=HealthError,
            synchronous="normal",
        )
        return cls(db)

    async def aclose(self) -> None:
        await self._db.aclose()

    async def _run(self, func: Callable[[sqlite3.Connection], T]) -> T:
        return await self._db.run(func)

    async def record(self, outcome: PollOutcome) -> tuple[MeterHealth | None, MeterHealth]:
        """Fold one poll's outcome into the meter's row; returns (the row before, the row after)."""

        def write(conn: sqlite3.Connection) -> tuple[MeterHealth | None, MeterHealth]:
            with immediate_transaction(conn):
                row = conn.execute(
                    "SELECT * FROM meter_health WHERE meter_id = ?", (outcome.meter_id,)
                ).fetchone()
                before = _row_to_health(row) if row is not None else None
                new = _fold(before or MeterHealth(outcome.meter_id), outcome)
                conn.execute(
                    "INSERT OR REPLACE INTO meter_health VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    _to_row(new),
                )
            return before, new

        return await self._run(write)

    async def get(self, meter_id: str) -> MeterHealth | None:
        def read(conn: sqlite3.Connection) -> MeterHealth | None:
            row = conn.execute("SELECT * FROM meter_health WHERE meter_id = ?", (meter_id,)).fetchone()
            return None if row is None else _row_to_health(row)

        return await self._run(read)

    async def all(self) -> dict[str, MeterHealth]:
        def read(conn: sqlite3.Connection) -> dict[str, MeterHealth]:
            rows = conn.execute("SELECT * FROM meter_health ORDER BY meter_id").fetchall()
            return {row["meter_id"]: _row_to_health(row) for row in rows}

        return await self._run(read)


def _fold(old: MeterHealth, outcome: PollOutcome) -> MeterHealth:
    cursors = dict(old.event_log_cursors)
    for log_obis, end in outcome.event_log_cursors.items():
        if log_obis not in cursors or end > cursors[log_obis]:
            cursors[log_obis] = end
    changes: dict[str, Any] = {
        "last_attempt_at": outcome.at,
        "gap_intervals": old.gap_intervals + outcome.new_gap_intervals,
        "suspect_readings": old.suspect_readings + outcome.new_suspects,
        "last_suspect": outcome.last_suspect or old.last_suspect,
        "event_log_cursors": cursors,
        "last_interval_end": outcome.last_interval_end or old.last_interval_end,
        "intervals_behind": old.intervals_behind if outcome.intervals_behind is None else outcome.intervals_behind,
    }
    if outcome.ok:
        changes.update(last_success_at=outcome.at, consecutive_failures=0, polls_ok=old.polls_ok + 1)
    else:
        changes.update(
            last_error_at=outcome.at,
            last_error=outcome.error or "failed",
            consecutive_failures=old.consecutive_failures + 1,
            polls_failed=old.polls_failed + 1,
        )
    fields = {name: getattr(old, name) for name in MeterHealth.__dataclass_fields__}
    fields.update(changes)
    return MeterHealth(**fields)


def _to_row(health: MeterHealth) -> tuple[Any, ...]:
    return (
        health.meter_id,
        _iso(health.last_attempt_at),
        _iso(health.last_success_at),
        _iso(health.last_error_at),
        health.last_error,
        health.consecutive_failures,
        health.polls_ok,
        health.polls_failed,
        _iso(health.last_interval_end),
        health.intervals_behind,
        health.gap_intervals,
        health.suspect_readings,
        health.last_suspect,
        json.dumps({k: v.isoformat() for k, v in health.event_log_cursors.items()}),
    )
