"""`gateway streams delete STREAM`: the stream, its events and its snapshot go, and no copy of them
stays in the SQLite files. The command is attached to a real argparse ``streams`` parser exactly as
``gateway/commands/streams.py`` attaches it (``register_delete(commands)``)."""
from __future__ import annotations

import argparse
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import anyio
import pytest

from gateway.commands._streams_delete import compact_sqlite_store, register_delete
from gateway.store import NewEvent, Snapshot, StreamNotFound
from gateway.store.sqlite import SqliteEventStore
from tests.builders import new_event

from tests.personal import encodings, files_containing

T0 = datetime(2026, 5, 4, 10, 0, tzinfo=timezone.utc)
DOOMED = "Assignment:doomed-1"
KEPT = "Meter:kam-0001:2026"
MARKER = "ZEBRA-DOOMED-PAYLOAD-7731"  # distinctive bytes carried only by the doomed stream


def streams_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway streams")
    register_delete(parser.add_subparsers(dest="streams_command", required=True))
    return parser


def delete(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    parsed = streams_parser().parse_args(["delete", *args])
    code = parsed.func(parsed)
    out, err = capsys.readouterr()
    return code, out, err


def event(stream: str, n: int, payload: str) -> NewEvent:
    return new_event(f"{stream}/{n}", type="Note", data={"n": n, "text": payload},
                     recorded_at=T0 + timedelta(minutes=n))


async def populate(db: Path) -> None:
    store = await SqliteEventStore.open(db)
    try:
        await store.append(DOOMED, [event(DOOMED, n, f"{MARKER}-{n}") for n in range(50)], 0)
        await store.append(KEPT, [event(KEPT, n, "reading") for n in range(20)], 0)
        for stream in (DOOMED, KEPT):
            await store.save_snapshot(Snapshot(stream, 3, 1, {"note": f"{stream} {MARKER if stream == DOOMED else ''}"}, T0))
    finally:
        await store.aclose()


async def contents(db: Path) -> tuple[list[str], int, bool, bool]:
    store = await SqliteEventStore.open(db)
    try:
        try:
            await store.load(DOOMED)
            doomed_loads = True
        except StreamNotFound:
            doomed_loads = False
        return ([i.stream_id for i in await store.list_streams()], len(await store.load(KEPT)),
                doomed_loads, await store.load_snapshot(DOOMED) is not None)
    finally:
        await store.aclose()


def test_delete_removes_the_stream_and_every_copy_of_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "gateway.db"
    anyio.run(populate, db)
    needles = encodings(MARKER.encode())
    assert files_containing(tmp_path, needles)  # the check can fail: the marker is there now

    code, _, err = delete(capsys, DOOMED, "--db", str(db))
    assert code == 2 and "--yes" in err  # nothing happens without confirmation
    assert anyio.run(contents, db)[2] is True

    code, out, err = delete(capsys, DOOMED, "--db", str(db), "--yes")
    assert code == 0, err
    assert DOOMED in out
    streams, kept_events, doomed_loads, doomed_snapshot = anyio.run(contents, db)
    assert streams == [KEPT] and kept_events == 20
    assert not doomed_loads and not doomed_snapshot
    assert files_containing(tmp_path, needles) == []

    code, _, err = delete(capsys, DOOMED, "--db", str(db), "--yes")
    assert code == 1 and "no stream" in err
    code, _, err = delete(capsys, DOOMED, "--db", str(tmp_path / "missing.db"), "--yes")
    assert code == 1 and "no event store" in err
    assert not (tmp_path / "missing.db").exists()


def test_compaction_clears_what_a_plain_delete_leaves_in_the_file(tmp_path: Path) -> None:
    """Why compaction is the default: an SQLite built without SECURE_DELETE (Debian's has it; others
    do not) leaves deleted rows in free pages. Simulated with secure_delete off on the deleting
    connection."""
    db = tmp_path / "gateway.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA secure_delete = OFF")
    conn.execute("CREATE TABLE events (data TEXT)")
    conn.executemany("INSERT INTO events VALUES (?)", [(f"{MARKER}-{n}",) for n in range(200)])
    conn.execute("INSERT INTO events VALUES ('kept')")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("DELETE FROM events WHERE data != 'kept'")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    needles = encodings(MARKER.encode())
    assert files_containing(tmp_path, needles)  # still in the file after DELETE

    assert compact_sqlite_store(db).wal_truncated
    assert files_containing(tmp_path, needles) == []
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT data FROM events").fetchall() == [("kept",)]
    conn.close()
