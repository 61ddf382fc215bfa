"""`gateway backup` as an operator runs it (a real subprocess) on a real store, also while events are
appended to it."""
from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import gateway
from gateway.store.model import NO_STREAM
from gateway.store.sqlite import SqliteEventStore
from tests.builders import readings

REPO_ROOT = Path(gateway.__file__).resolve().parent.parent
GATEWAY = [sys.executable, "-m", "gateway"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def _store_with_one_stream(db: Path) -> None:
    async def fill() -> None:
        store = await SqliteEventStore.open(db)
        try:
            await store.append("Meter:m1:2026", readings("m1", 0, 3, pad=300), NO_STREAM)
        finally:
            await store.aclose()

    anyio.run(fill)


@pytest.mark.slow
@pytest.mark.anyio
async def test_backup_while_appending_is_one_consistent_checked_copy(tmp_path: Path) -> None:
    db, backup = tmp_path / "events.db", tmp_path / "backups" / "events-1.db"
    store = await SqliteEventStore.open(db)
    appended = 0
    try:
        for m in range(20):
            await store.append(f"Meter:m{m}:2026", readings(f"m{m}", 0, 50, pad=300), NO_STREAM)
        done = anyio.Event()

        async def keep_appending() -> None:
            nonlocal appended
            heads = dict.fromkeys(range(20), 50)
            while not done.is_set():
                m = appended % 20
                await store.append(f"Meter:m{m}:2026", readings(f"m{m}", heads[m], 5, pad=300), heads[m])
                heads[m] += 5
                appended += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(keep_appending)
            result = await anyio.run_process(
                [*GATEWAY, "backup", "--db", str(db), "--to", str(backup), "--json"], env=_env(), check=False)
            done.set()
    finally:
        await store.aclose()
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    assert appended > 0  # the writer really ran beside the backup

    copy = sqlite3.connect(backup)
    try:
        assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        heads = dict(copy.execute("SELECT stream_id, head FROM streams"))
        versions: dict[str, list[int]] = {}
        for stream, version in copy.execute("SELECT stream_id, version FROM events ORDER BY stream_id, version"):
            versions.setdefault(stream, []).append(version)
        events = copy.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        copy.close()
    # One moment of the store: whole appends only, every head matching its stream's events.
    assert len(heads) == 20 and all(versions[s] == list(range(1, h + 1)) for s, h in heads.items())
    assert all(h % 5 == 0 for h in heads.values())
    assert (report["events"], report["streams"]) == (events, 20) and events >= 1000
    assert not Path(f"{backup}-wal").exists()
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert report["keyStore"] is None


@pytest.mark.slow
def test_backup_never_overwrites_and_leaves_nothing_when_it_fails(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    _store_with_one_stream(db)
    existing = tmp_path / "old-backup.db"
    existing.write_bytes(b"keep me")
    refused = subprocess.run([*GATEWAY, "backup", "--db", str(db), "--to", str(existing)],
                             capture_output=True, text=True, env=_env(), check=False)
    assert refused.returncode == 1 and "exists already" in refused.stderr
    assert existing.read_bytes() == b"keep me"

    other = tmp_path / "not-a-store.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    wrong = subprocess.run([*GATEWAY, "backup", "--db", str(other), "--to", str(tmp_path / "b.db")],
                           capture_output=True, text=True, env=_env(), check=False)
    assert wrong.returncode == 1 and "is not an event store" in wrong.stderr
    missing = subprocess.run([*GATEWAY, "backup", "--db", str(tmp_path / "nope.db"), "--to", str(tmp_path / "c.db")],
                             capture_output=True, text=True, env=_env(), check=False)
    assert missing.returncode == 1 and "no database at" in missing.stderr
    # Nothing under a target name, no partial copy left behind.
    assert not (tmp_path / "b.db").exists() and not (tmp_path / "c.db").exists()
    assert not [p.name for p in tmp_path.iterdir() if "partial" in p.name]


@pytest.mark.slow
def test_key_store_is_copied_only_when_asked(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    _store_with_one_stream(db)
    keys = tmp_path / "events.keys.db"
    sqlite3.connect(keys).execute("CREATE TABLE keys (id)").connection.close()
    plain = subprocess.run([*GATEWAY, "backup", "--db", str(db), "--to", str(tmp_path / "b1.db")],
                           capture_output=True, text=True, env=_env(), check=False)
    assert plain.returncode == 0, plain.stderr
    assert "key store not copied" in plain.stdout and not (tmp_path / "b1.keys.db").exists()
    with_keys = subprocess.run([*GATEWAY, "backup", "--db", str(db), "--to", str(tmp_path / "b2.db"), "--with-keys"],
                               capture_output=True, text=True, env=_env(), check=False)
    assert with_keys.returncode == 0, with_keys.stderr
    assert (tmp_path / "b2.keys.db").is_file() and "erasures made from now on" in with_keys.stdout


@pytest.mark.slow
def test_with_keys_is_all_or_nothing(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    _store_with_one_stream(db)
    sqlite3.connect(tmp_path / "events.keys.db").execute("CREATE TABLE keys (id)").connection.close()
    (tmp_path / "b.keys.db").write_bytes(b"an older key backup")
    refused = subprocess.run([*GATEWAY, "backup", "--db", str(db), "--to", str(tmp_path / "b.db"), "--with-keys"],
                             capture_output=True, text=True, env=_env(), check=False)
    assert refused.returncode == 1 and "b.keys.db exists already" in refused.stderr
    assert not (tmp_path / "b.db").exists() and (tmp_path / "b.keys.db").read_bytes() == b"an older key backup"


def test_a_file_system_without_hard_links_gets_a_byte_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # FAT/exFAT media refuse hard links (EPERM); none can be mounted here, so link() is made to
    # refuse as such a file system does.
    import errno

    from gateway.store import sqlite_backup

    db = tmp_path / "events.db"
    _store_with_one_stream(db)

    def no_links(src: object, dst: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(sqlite_backup.os, "link", no_links)
    copy = sqlite_backup.backup_file(db, tmp_path / "usb" / "b.db")
    assert copy.bytes == (tmp_path / "usb" / "b.db").stat().st_size > 0
    assert stat.S_IMODE((tmp_path / "usb" / "b.db").stat().st_mode) == 0o600
    conn = sqlite3.connect(tmp_path / "usb" / "b.db")
    try:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 3
    finally:
        conn.close()
    assert [p.name for p in (tmp_path / "usb").iterdir()] == ["b.db"]  # no partial left
