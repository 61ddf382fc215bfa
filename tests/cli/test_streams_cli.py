"""`gateway streams list|show` run as a real subprocess against a store populated by the test."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from gateway.store import NewEvent
from gateway.store.sqlite import SqliteEventStore
from tests.builders import new_event
from tests.cli import run_gateway

T0 = datetime(2026, 5, 4, 10, 0, tzinfo=timezone.utc)


def reading(stream_id: str, n: int) -> NewEvent:
    return new_event(f"{stream_id}/{n}", type="RegisterRead" if n % 2 == 0 else "ClockChecked",
                     data={"n": n, "value": f"{n}.5", "unit": "Wh"},
                     recorded_at=T0 + timedelta(minutes=15 * n))


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.db"
    store = await SqliteEventStore.open(path)
    try:
        await store.append("Meter:A1:2026", [reading("Meter:A1:2026", n) for n in range(3)], 0)
        await store.append("Meter:B2:2026", [reading("Meter:B2:2026", n) for n in range(2)], 0)
        await store.append("Site:north", [reading("Site:north", 0)], 0)
    finally:
        await store.aclose()
    return path


@pytest.mark.slow
@pytest.mark.anyio
async def test_list_prints_every_stream_with_head_and_times(db: Path) -> None:
    done = run_gateway("streams", "list", "--db", str(db))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["STREAM", "HEAD", "FIRST", "RECORDED", "LAST", "RECORDED"]
    assert lines[1].split() == [
        "Meter:A1:2026", "3", "2026-05-04T10:00:00Z", "2026-05-04T10:30:00Z",
    ]
    assert lines[2].split()[:2] == ["Meter:B2:2026", "2"]
    assert lines[3].split()[:2] == ["Site:north", "1"]
    assert lines[-1] == "(3 streams)"


@pytest.mark.slow
@pytest.mark.anyio
async def test_list_json_with_prefix(db: Path) -> None:
    done = run_gateway("streams", "list", "--db", str(db), "--prefix", "Meter:", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        {
            "streamId": "Meter:A1:2026",
            "head": 3,
            "firstRecordedAt": "2026-05-04T10:00:00Z",
            "lastRecordedAt": "2026-05-04T10:30:00Z",
        },
        {
            "streamId": "Meter:B2:2026",
            "head": 2,
            "firstRecordedAt": "2026-05-04T10:00:00Z",
            "lastRecordedAt": "2026-05-04T10:15:00Z",
        },
    ]


@pytest.mark.slow
@pytest.mark.anyio
async def test_show_json_prints_the_envelopes_in_order(db: Path) -> None:
    done = run_gateway("streams", "show", "Meter:A1:2026", "--db", str(db), "--json")
    assert done.returncode == 0, done.stderr
    envelopes = json.loads(done.stdout)
    assert [(e["version"], e["id"], e["type"]) for e in envelopes] == [
        (1, "Meter:A1:2026/0", "RegisterRead"),
        (2, "Meter:A1:2026/1", "ClockChecked"),
        (3, "Meter:A1:2026/2", "RegisterRead"),
    ]
    assert envelopes[1]["data"] == {"n": 1, "value": "1.5", "unit": "Wh"}
    assert envelopes[1]["metadata"]["recordedAt"] == "2026-05-04T10:15:00Z"
    assert all(e["streamId"] == "Meter:A1:2026" and e["schemaVersion"] == 1 for e in envelopes)


@pytest.mark.slow
@pytest.mark.anyio
async def test_show_table_uses_the_store_from_the_environment(db: Path) -> None:
    done = run_gateway("streams", "show", "Meter:B2:2026", env={"GATEWAY_STORE": str(db)})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["VERSION", "TYPE", "ID", "RECORDED", "AT", "DATA"]
    assert lines[1].split(maxsplit=4) == [
        "1", "RegisterRead", "Meter:B2:2026/0", "2026-05-04T10:00:00Z",
        '{"n":0,"unit":"Wh","value":"0.5"}',
    ]
    assert lines[2].split()[:3] == ["2", "ClockChecked", "Meter:B2:2026/1"]
    assert len(lines) == 3


@pytest.mark.slow
@pytest.mark.anyio
async def test_show_missing_stream_fails_with_a_message(db: Path) -> None:
    done = run_gateway("streams", "show", "Meter:nope:2026", "--db", str(db))
    assert done.returncode == 1
    assert "no stream 'Meter:nope:2026'" in done.stderr
    assert done.stdout == ""


@pytest.mark.slow
def test_missing_store_file_is_reported_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "absent.db"
    done = run_gateway("streams", "list", "--db", str(missing))
    assert done.returncode == 1
    assert f"no event store at {missing}" in done.stderr
    assert not missing.exists()


@pytest.mark.slow
def test_without_db_or_environment_the_store_is_var_gateway_db(tmp_path: Path) -> None:
    done = run_gateway("streams", "list", cwd=tmp_path)
    assert done.returncode == 1
    assert f"no event store at {Path('var') / 'gateway.db'}" in done.stderr
    assert not (tmp_path / "var").exists()
