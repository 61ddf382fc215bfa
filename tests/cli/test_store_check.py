"""Fail fast, fail clear: the checks `gateway run` makes of its store's local file at start, and the
bound on write failures while it runs (gateway.commands._store_check)."""
from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from gateway.commands._store_check import StoreUnusable, StoreWriteWatch, check_store_file
from gateway.config.model import SqliteStoreConfig
from gateway.domain.poll_result import PollSummary, StepError

NOW = datetime(2026, 12, 5, tzinfo=timezone.utc)


def _store(path: Path) -> SqliteStoreConfig:
    return SqliteStoreConfig(path=path)


def test_a_new_store_and_a_sound_one_pass(tmp_path: Path) -> None:
    check_store_file(_store(tmp_path / "new" / "events.db"))
    db = tmp_path / "events.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (x)")
    check_store_file(_store(db))


@pytest.mark.parametrize("make, cause", [
    (lambda p: p.write_bytes(b"not a database at all" * 400), "cannot open it: file is not a database"),
    (lambda p: p.mkdir(), "not a file"),
    (lambda p: None, "cannot create its directory"),
])
def test_an_unusable_store_file_is_named_with_its_cause(tmp_path: Path, make, cause: str) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "events.db"
    make(db)
    store = _store(db) if cause != "cannot create its directory" else _store(db.parent / "afile" / "x" / "events.db")
    if cause == "cannot create its directory":
        (tmp_path / "afile").write_text("")
    with pytest.raises(StoreUnusable, match=cause) as raised:
        check_store_file(store)
    assert str(store.path) in str(raised.value) and "\n" not in str(raised.value)


def test_a_damaged_page_fails_the_quick_check(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT)")
        conn.executemany("INSERT INTO t (x) VALUES (?)", [("x" * 200,)] * 2000)
        conn.execute("CREATE INDEX t_x ON t (x)")
    data = bytearray(db.read_bytes())
    for page in range(3, len(data) // 4096, 3):
        data[page * 4096 + 8:page * 4096 + 400] = bytes(range(256)) + bytes(136)
    db.write_bytes(bytes(data))
    with pytest.raises(StoreUnusable, match="damaged \\(PRAGMA quick_check: ") as raised:
        check_store_file(_store(db))
    assert "\n" not in str(raised.value)


def _summary(error: StepError | None = None, store_error: str | None = None) -> PollSummary:
    return PollSummary(meter_id="m1", started_at=NOW, steps=frozenset(), store_error=store_error,
                       errors=(error,) if error else ())


def test_the_watch_stops_after_failures_in_a_row_over_its_grace_time() -> None:
    clock = [0.0]
    watch = StoreWriteWatch(limit=3, grace_s=10.0, clock=lambda: clock[0])
    failed = _summary(StepError("identity", "HealthError", "health table in x.db: disk I/O error"))
    for _ in range(5):
        watch(failed)  # many, but within the grace time
        clock[0] += 1.0
    watch(_summary())  # a poll that wrote resets it
    watch(_summary(store_error="StoreFull: outbox full"))  # a full outbox is no write failure
    for _ in range(2):
        watch(_summary(store_error="StoreUnavailable: event store x.db: disk I/O error"))
        clock[0] += 5.0
    with pytest.raises(StoreUnusable, match="3 polls in a row over 10 s failed, last: StoreUnavailable"):
        watch(_summary(store_error="StoreUnavailable: event store x.db: disk I/O error"))
