"""`gateway project`, `gateway views show|lag` and `gateway report`, run as real subprocesses."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import anyio
import pytest

from gateway.projections import SqliteViewStore
from gateway.store.cosmos import CosmosEventStore
from gateway.store.sqlite import SqliteEventStore
from tests.cli import REPO_ROOT, run_gateway
from tests.cosmos_fixture import CosmosServer
from tests.projections import PERIOD, append_polls, meter_polls

START = datetime(2026, 3, 27, 22, 0, tzinfo=timezone.utc)  # 23:00 local, 27 March
GAP = frozenset(datetime(2026, 3, 29, 6, 0, tzinfo=timezone.utc) + i * PERIOD for i in range(4))

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

[[meters]]
id = "kam-1"
make = "kamstrup"
profile = "omnipower"
connection = "dc-1"
wport = 1
security = { level = "none" }
max_power_w = 55200
"""


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    config = tmp_path / "fleet.toml"
    config.write_text(FLEET)

    async def fill() -> None:
        store = await SqliteEventStore.open(tmp_path / "events.db")
        try:
            await append_polls(store, meter_polls("kam-1", START, 1 + 24 + 23 + 1, missing=GAP))
        finally:
            await store.aclose()

    anyio.run(fill)
    return config


@pytest.mark.slow
def test_project_once_then_views_show_and_report(fleet: Path, tmp_path: Path) -> None:
    done = run_gateway("project", "--config", str(fleet), "--once", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert {lag["projection"]: lag["eventsBehind"] for lag in json.loads(done.stdout)} == {
        "latest_reading": 0, "daily_consumption": 0, "fleet_overview": 0}

    shown = run_gateway("views", "show", "daily_consumption", "--meter", "kam-1", "--from", "2026-03-28",
                        "--to", "2026-03-29", "--json", "--db", str(tmp_path / "events.db"), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    days = {d["date"]: (d["importWh"], d["intervalsExpected"], d["intervalsMissing"])
            for d in json.loads(shown.stdout)}
    assert days == {"2026-03-28": ("960", 96, 0), "2026-03-29": ("920", 92, 4)}

    table = run_gateway("views", "show", "latest_reading", "--config", str(fleet), cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "meter kam-1" in table.stdout and "active_energy_import" in table.stdout

    png = tmp_path / "kam-1.png"
    report = run_gateway("report", "--meter", "kam-1", "--from", "2026-03-27", "--to", "2026-03-30",
                         "--out", str(png), "--config", str(fleet), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and png.stat().st_size > 10_000


@pytest.mark.slow
def test_project_rebuild_leaves_the_same_view(fleet: Path, tmp_path: Path) -> None:
    assert run_gateway("project", "--config", str(fleet), "--once", cwd=tmp_path).returncode == 0
    before = anyio.run(_fleet_docs, tmp_path)
    rebuilt = run_gateway("project", "--config", str(fleet), "--once", "--rebuild", "fleet_overview",
                          cwd=tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert anyio.run(_fleet_docs, tmp_path) == before and before


async def _fleet_docs(directory: Path) -> list:
    views = await SqliteViewStore.open(directory / "events.views.db")
    try:
        return [(doc.key, doc.body, doc.applied) for doc in await views.query("fleet_overview")]
    finally:
        await views.aclose()


@pytest.mark.slow
def test_views_without_a_projection_run_are_reported_not_created(fleet: Path, tmp_path: Path) -> None:
    done = run_gateway("views", "show", "latest_reading", "--config", str(fleet), cwd=tmp_path)
    assert done.returncode == 1
    assert "run `gateway project` first" in done.stderr
    assert not (tmp_path / "events.views.db").exists()


@pytest.mark.slow
@pytest.mark.cosmos
def test_project_and_views_show_on_cosmos(cosmos_server: CosmosServer, tmp_path: Path) -> None:
    cosmos = cosmos_server.config()
    store_section = (
        '[store]\nkind = "cosmos"\n'
        f'endpoint = "{cosmos.endpoint}"\ndatabase = "{cosmos.database}"\ncontainer = "{cosmos.container}"\n'
        f'key = {{ env = "{cosmos.key_env}" }}\n'
        'verify_tls = false  # the local test server\'s self-signed certificate\n'
        'outbox_path = "outbox.sqlite3"\n'
    )
    config = tmp_path / "fleet.toml"
    config.write_text(FLEET.replace('[store]\nkind = "sqlite"\npath = "events.db"\n', store_section))

    async def fill() -> None:
        store = await CosmosEventStore.open(cosmos, create_if_missing=True)
        try:
            await append_polls(store, meter_polls("kam-1", START, 1 + 24 + 23 + 1, missing=GAP))
        finally:
            await store.aclose()

    anyio.run(fill)
    done = run_gateway("project", "--config", str(config), "--once", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # The change feed cannot count what is left; it says how old the oldest unread event is.
    assert [(lag["eventsBehind"], lag["secondsBehind"]) for lag in json.loads(done.stdout)] == [
        (None, 0.0)] * 3

    shown = run_gateway("views", "show", "daily_consumption", "--meter", "kam-1", "--from", "2026-03-28",
                        "--to", "2026-03-29", "--json", "--config", str(config), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    days = {d["date"]: (d["importWh"], d["intervalsExpected"], d["intervalsMissing"])
            for d in json.loads(shown.stdout)}
    assert days == {"2026-03-28": ("960", 96, 0), "2026-03-29": ("920", 92, 4)}


@pytest.mark.slow
def test_project_follows_new_events_until_sigterm(fleet: Path, tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if k != "GATEWAY_STORE"}
    environ["PYTHONPATH"] = str(REPO_ROOT)
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "project", "--config", str(fleet), "--interval", "0.1"],
        cwd=tmp_path, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = anyio.run(_event_count, tmp_path)
        anyio.run(_wait_for_checkpoints, tmp_path, first)

        async def more() -> None:
            store = await SqliteEventStore.open(tmp_path / "events.db")
            try:
                await append_polls(store, meter_polls("kam-1", START + timedelta(days=3), 8))
            finally:
                await store.aclose()

        anyio.run(more)
        total = anyio.run(_event_count, tmp_path)
        assert total > first
        anyio.run(_wait_for_checkpoints, tmp_path, total)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def _event_count(directory: Path) -> int:
    store = await SqliteEventStore.open(directory / "events.db")
    try:
        return len((await store.read_all(None, limit=100_000)).events)
    finally:
        await store.aclose()


async def _wait_for_checkpoints(directory: Path, position: int) -> None:
    """Until every projection's checkpoint reaches ``position`` (a generous deadline: the machine
    may be busy; this is about behaviour, not speed)."""
    with anyio.fail_after(60):
        while True:
            if (directory / "events.views.db").exists():
                views = await SqliteViewStore.open(directory / "events.views.db")
                try:
                    checkpoints = [await views.load_checkpoint(n) for n in
                                   ("latest_reading", "daily_consumption", "fleet_overview")]
                finally:
                    await views.aclose()
                if all(c.position is not None and int(c.position) >= position for c in checkpoints):
                    return
            await anyio.sleep(0.1)


@pytest.mark.slow
def test_one_projection_runner_per_store(fleet: Path, tmp_path: Path) -> None:
    lock = tmp_path / "events.views.db.lock"
    environ = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    follower = subprocess.Popen([sys.executable, "-m", "gateway", "project", "--config", str(fleet)],
                                cwd=tmp_path, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = datetime.now(timezone.utc) + timedelta(seconds=30)  # against a hang only
        while not (lock.exists() and lock.read_text().strip() == str(follower.pid)):
            assert follower.poll() is None, follower.communicate()
            assert datetime.now(timezone.utc) < deadline, "the follower never took the runner lock"
            anyio.run(anyio.sleep, 0.05)
        refused = run_gateway("project", "--config", str(fleet), "--once", "--rebuild", "fleet_overview",
                              cwd=tmp_path)
        assert refused.returncode == 1
        assert f"another projection runner (pid {follower.pid})" in refused.stderr
    finally:
        follower.send_signal(signal.SIGTERM)
        assert follower.wait(timeout=30) == 0
    rebuilt = run_gateway("project", "--config", str(fleet), "--once", "--rebuild", "fleet_overview",
                          cwd=tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr


@pytest.mark.anyio
async def test_views_opened_by_a_cancelled_task_are_closed(tmp_path: Path) -> None:
    # gateway run cancels its projections task on a config reload: its connections must not leak.
    from gateway.wiring import open_views
    from gateway.config.model import SqliteStoreConfig
    from gateway.projections import ViewStoreError
    from gateway.store.errors import StoreUnavailable

    with anyio.CancelScope() as scope:
        async with open_views(SqliteStoreConfig(tmp_path / "events.db"), create=True) as (store, views):
            scope.cancel()
            await anyio.sleep_forever()
    assert store is not None
    with pytest.raises(ViewStoreError, match="closed"):
        await views.query("fleet_overview")
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.head("Meter:m-1:2026")
