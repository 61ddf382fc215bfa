"""Views know their store: `gateway project` after the store under the views was replaced (a new
`gateway demo`), after an older backup of it was restored (README: backup/restore), and with
`--rebuild all`. Real SQLite files, the command as a subprocess."""
from __future__ import annotations

import json
import logging
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import anyio
import pytest

from gateway.config import parse_config
from gateway.projections import SqliteViewStore
from gateway.projections.run_projections import run_projections
from gateway.projections.view_store import views_path
from gateway.store.sqlite import SqliteEventStore
from tests.cli import run_gateway
from tests.projections import append_polls, engine_for, meter_polls, snapshot

START = datetime(2026, 3, 27, 23, 0, tzinfo=timezone.utc)

FLEET = """\
gateway_id = "gw-test"
default_timezone = "Europe/Copenhagen"

[store]
kind = "sqlite"
path = "events.db"

[[concentrators]]
id = "dc-1"
host = "127.0.0.1"
port = 4060
framing = "wrapper"
{meters}"""

METER = """
[[meters]]
id = "{id}"
make = "kamstrup"
profile = "omnipower"
connection = "dc-1"
wport = {wport}
security = {{ level = "none" }}
max_power_w = 55200
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(FLEET.format(meters=METER.format(id="kam-1", wport=1) + METER.format(id="kam-2", wport=2)))
    return path


def _append(db: Path, meter: str, start: datetime, hours: int, *, first: bool = True) -> None:
    async def fill() -> None:
        store = await SqliteEventStore.open(db)
        try:
            polls = meter_polls(meter, start, hours)
            await append_polls(store, polls if first else polls[1:])  # [0]: MeterRegistered
        finally:
            await store.aclose()

    anyio.run(fill)


def _views(db: Path) -> dict:
    async def read() -> dict:
        views = await SqliteViewStore.open(views_path(db))
        try:
            return await snapshot(views)
        finally:
            await views.aclose()

    return anyio.run(read)


def _reference(db: Path, scratch: Path) -> dict:
    """The views of the store at ``db`` projected from the start into a views file of their own."""

    async def project() -> dict:
        store = await SqliteEventStore.open(db)
        views = await SqliteViewStore.open(scratch)
        try:
            await engine_for(store, views, ("kam-1", "kam-2")).drain_all()
            return await snapshot(views)
        finally:
            await views.aclose()
            await store.aclose()

    return anyio.run(project)


def _project(config: Path, *extra: str) -> tuple[dict[str, int], list[str]]:
    done = run_gateway("project", "--config", str(config), "--once", "--json", *extra, cwd=config.parent)
    assert done.returncode == 0, done.stderr
    lag = {row["projection"]: row["eventsBehind"] for row in json.loads(done.stdout)}
    return lag, [line for line in done.stderr.splitlines() if "WARNING" in line]


def _remove_store(db: Path) -> None:
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        path.unlink(missing_ok=True)


@pytest.mark.slow
def test_a_replaced_store_rebuilds_the_views_from_its_events(config: Path, tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    _append(db, "kam-1", START, 24)
    _project(config)
    assert any("kam-1" in str(key) for key in _views(db))

    # `gateway demo` again: a new store file with other (and more) events; the views file stays.
    _remove_store(db)
    _append(db, "kam-2", START + timedelta(days=3), 48)
    lag, warnings = _project(config)

    assert _views(db) == _reference(db, tmp_path / "reference.db")
    assert not any("kam-1" in str(key) for key in _views(db))
    assert set(lag.values()) == {0}
    assert len(warnings) == 1 and "another event store" in warnings[0], warnings


@pytest.mark.slow
def test_a_restored_older_backup_of_the_store_rebuilds_the_views(config: Path, tmp_path: Path) -> None:
    db, backup = tmp_path / "events.db", tmp_path / "backup.db"
    _append(db, "kam-1", START, 24)
    done = run_gateway("backup", "--to", str(backup), "--db", str(db), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    _append(db, "kam-1", START + timedelta(hours=24), 24, first=False)
    _project(config)

    # README: stop the gateway, put the copy at the store path without the old -wal/-shm, start it.
    _remove_store(db)
    db.write_bytes(backup.read_bytes())
    lag, warnings = _project(config)

    assert _views(db) == _reference(db, tmp_path / "reference.db")
    assert set(lag.values()) == {0}
    assert len(warnings) == 1 and "beyond the event store's last position" in warnings[0], warnings

    # The views now follow the restored store: its new events come in, with no other warning.
    _append(db, "kam-2", START, 8)
    lag, warnings = _project(config)
    assert _views(db) == _reference(db, tmp_path / "reference-2.db")
    assert warnings == []


@pytest.mark.slow
def test_rebuild_all_projects_every_view_from_the_start(config: Path, tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    _append(db, "kam-1", START, 24)
    _project(config)
    expected = _views(db)
    with sqlite3.connect(views_path(db)) as conn:  # views damaged, checkpoints kept
        conn.execute("DELETE FROM view_docs")
    conn.close()
    assert _views(db) == {}

    lag, warnings = _project(config, "--rebuild", "all")

    assert _views(db) == expected
    assert set(lag.values()) == {0}
    assert warnings == []


def test_views_from_before_checkpoints_named_their_store_are_kept_and_labelled(tmp_path: Path) -> None:
    db, views_file = tmp_path / "events.db", tmp_path / "views.db"
    _append(db, "kam-1", START, 24)
    expected = _reference(db, views_file)
    with sqlite3.connect(views_file) as conn:  # the checkpoints table as it was, without store_id
        conn.executescript(
            "CREATE TABLE old (projection TEXT PRIMARY KEY, position TEXT, events_seen INTEGER NOT NULL,"
            " updated_at TEXT NOT NULL);"
            " INSERT INTO old SELECT projection, position, events_seen, updated_at FROM checkpoints;"
            " DROP TABLE checkpoints; ALTER TABLE old RENAME TO checkpoints;")
    conn.close()

    async def start() -> tuple[list[str], set[str | None], dict]:
        store = await SqliteEventStore.open(db)
        views = await SqliteViewStore.open(views_file)
        try:
            engine = engine_for(store, views, ("kam-1",))
            rebuilt = await engine.check_store()
            ids = {(await views.load_checkpoint(name)).store_id for name in engine.projections}
            assert ids == {store.store_id}
            return rebuilt, ids, await snapshot(views)
        finally:
            await views.aclose()
            await store.aclose()

    rebuilt, _ids, kept = anyio.run(start)
    assert rebuilt == []
    assert kept == expected


@pytest.mark.slow
def test_gateway_run_rebuilds_the_views_of_a_replaced_store(
        config: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "events.db"
    _append(db, "kam-1", START, 24)
    _project(config)
    _remove_store(db)
    _append(db, "kam-2", START + timedelta(days=3), 48)
    expected = _reference(db, tmp_path / "reference.db")
    fleet = parse_config(config.read_text() + "\n[projections]\nenabled = true\ninterval_s = 0.05\n",
                         base_dir=tmp_path)

    async def run_until_rebuilt() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_projections, fleet)
            with anyio.fail_after(30):
                while True:
                    await anyio.sleep(0.1)
                    views = await SqliteViewStore.open(views_path(db))
                    try:
                        if await snapshot(views) == expected:
                            break
                    finally:
                        await views.aclose()
            tg.cancel_scope.cancel()

    with caplog.at_level(logging.WARNING, logger="gateway"):
        anyio.run(run_until_rebuilt)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "another event store" in warnings[0], warnings


@pytest.mark.slow
def test_a_restored_older_backup_written_to_before_projecting_rebuilds_the_views(
        config: Path, tmp_path: Path) -> None:
    db, backup = tmp_path / "events.db", tmp_path / "backup.db"
    _append(db, "kam-1", START, 24)
    done = run_gateway("backup", "--to", str(backup), "--db", str(db), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    _append(db, "kam-1", START + timedelta(hours=24), 24, first=False)
    _project(config)

    # Restored, then the gateway polls on before the views run: the head passes the old checkpoint.
    _remove_store(db)
    db.write_bytes(backup.read_bytes())
    _append(db, "kam-2", START, 72)
    lag, warnings = _project(config)

    assert _views(db) == _reference(db, tmp_path / "reference.db")
    assert set(lag.values()) == {0}
    assert len(warnings) == 1 and "other events at their checkpoints" in warnings[0], warnings
