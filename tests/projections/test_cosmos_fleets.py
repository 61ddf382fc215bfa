"""`gateway project` on Cosmos DB, as real subprocesses against the local test server: fleets that
share one database keep their views apart, a checkpoint that is not this store's is a clear error
(never a traceback), and the SDK's per-request logging stays out of an INFO log."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import anyio
import pytest

from gateway.projections.view_store import Checkpoint
from gateway.projections.view_store_cosmos import CosmosViewStore
from gateway.store.cosmos import CosmosEventStore
from gateway.store.cosmos_client import CosmosConfig
from tests.cli import run_gateway
from tests.cli.test_projections_cli import FLEET, START
from tests.cosmos_fixture import CosmosServer
from tests.projections import append_polls, meter_polls

pytestmark = pytest.mark.cosmos


def _fleet(directory: Path, cosmos: CosmosConfig, meter: str, *, level: str = "INFO",
           views_container: str | None = None) -> Path:
    """A fleet of one meter in ``directory`` whose store is ``cosmos`` (JSON logs at ``level``)."""
    directory.mkdir()
    store = (
        '[store]\nkind = "cosmos"\n'
        f'endpoint = "{cosmos.endpoint}"\ndatabase = "{cosmos.database}"\ncontainer = "{cosmos.container}"\n'
        + (f'views_container = "{views_container}"\n' if views_container else "")
        + f'key = {{ env = "{cosmos.key_env}" }}\n'
        'verify_tls = false  # the local test server\'s self-signed certificate\n'
        'outbox_path = "outbox.sqlite3"\n'
    )
    text = FLEET.replace('[store]\nkind = "sqlite"\npath = "events.db"\n', store).replace('"kam-1"', f'"{meter}"')
    config = directory / "fleet.toml"
    config.write_text(text + f'\n[logging]\nlevel = "{level}"\nformat = "json"\n')
    return config


def _fill(cosmos: CosmosConfig, meter: str, hours: int) -> None:
    async def fill() -> None:
        store = await CosmosEventStore.open(cosmos, create_if_missing=True)
        try:
            await append_polls(store, meter_polls(meter, START, hours))
        finally:
            await store.aclose()

    anyio.run(fill)


def _latest(config: Path) -> dict[str, object]:
    shown = run_gateway("views", "show", "latest_reading", "--json", "--config", str(config), cwd=config.parent)
    assert shown.returncode == 0, shown.stderr
    return {row["meterId"]: row for row in json.loads(shown.stdout)}


def _log(stderr: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


@pytest.mark.slow
def test_two_fleets_in_one_database_project_into_views_of_their_own(
    cosmos_server: CosmosServer, tmp_path: Path,  # noqa: F811
) -> None:
    database = f"fleets-{uuid.uuid4().hex[:8]}"
    north, south = cosmos_server.config(database=database), cosmos_server.config(database=database)
    _fill(north, "kam-n", 8)
    _fill(south, "kam-s", 12)
    north_config = _fleet(tmp_path / "north", north, "kam-n")
    south_config = _fleet(tmp_path / "south", south, "kam-s")
    # Views not projected yet (a new fleet, or one upgraded from the shared `views` container):
    # said so, not a bare 404.
    missing = run_gateway("views", "show", "latest_reading", "--config", str(north_config), cwd=tmp_path)
    assert missing.returncode == 1
    assert f"no Cosmos DB views container '{north.container}-views' (run `gateway project` first)" in missing.stderr

    for config in (north_config, south_config, north_config):  # each after the other has projected
        done = run_gateway("project", "--config", str(config), "--once", "--json", cwd=config.parent)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        assert [lag["secondsBehind"] for lag in json.loads(done.stdout)] == [0.0] * 3

    assert set(_latest(north_config)) == {"kam-n"}
    assert set(_latest(south_config)) == {"kam-s"}


@pytest.mark.slow
def test_a_views_container_named_in_the_config_is_used_and_not_shared_by_mistake(
    cosmos_server: CosmosServer, tmp_path: Path,  # noqa: F811
) -> None:
    # A deployment that keeps its views where they were (the old shared `views` container) names it;
    # a second fleet pointed at the same container gets a clear error, not the first fleet's views.
    database = f"fleets-{uuid.uuid4().hex[:8]}"
    first, second = cosmos_server.config(database=database), cosmos_server.config(database=database)
    _fill(first, "kam-1", 8)
    _fill(second, "kam-2", 8)

    async def old_checkpoints() -> None:  # as written before checkpoints named their events container
        views = await CosmosViewStore.open(first, container="views", create_if_missing=True)
        try:
            await views.save_checkpoint(Checkpoint(projection="latest_reading", position=None))
            container = views._container  # the item as an older gateway wrote it
            item = await container.read_item("checkpoint:latest_reading", "~checkpoints")
            del item["eventsContainer"]
            await container.replace_item(item["id"], item)
        finally:
            await views.aclose()

    anyio.run(old_checkpoints)
    first_config = _fleet(tmp_path / "first", first, "kam-1", views_container="views")
    done = run_gateway("project", "--config", str(first_config), "--once", cwd=first_config.parent)
    assert done.returncode == 0, done.stderr
    assert set(_latest(first_config)) == {"kam-1"}

    second_config = _fleet(tmp_path / "second", second, "kam-2", views_container="views")
    refused = run_gateway("project", "--config", str(second_config), "--once", cwd=second_config.parent)
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr, refused.stderr
    assert f"events container {first.container!r}" in refused.stderr and "views_container" in refused.stderr
    assert set(_latest(first_config)) == {"kam-1"}


@pytest.mark.slow
def test_a_checkpoint_of_another_change_feed_is_a_clear_error(
    cosmos_server: CosmosServer, tmp_path: Path,  # noqa: F811
) -> None:
    # The events container was deleted and created again under its name (its change feed is a new
    # one): the saved positions mean nothing there.
    cosmos = cosmos_server.config()
    _fill(cosmos, "kam-1", 8)
    config = _fleet(tmp_path / "fleet", cosmos, "kam-1")
    assert run_gateway("project", "--config", str(config), "--once", cwd=config.parent).returncode == 0

    async def recreate() -> None:
        store = await CosmosEventStore.open(cosmos)
        try:
            await store._client.get_database_client(cosmos.database).delete_container(cosmos.container)
        finally:
            await store.aclose()

    anyio.run(recreate)
    _fill(cosmos, "kam-1", 4)
    failed = run_gateway("project", "--config", str(config), "--once", cwd=config.parent)
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr, failed.stderr
    names = ["latest_reading", "daily_consumption", "fleet_overview"]
    # The first projection to fail stops the others (they drain together): at least it says so.
    assert {n for n in names if f"gateway project --rebuild {n}" in failed.stderr}, failed.stderr
    # Each view rebuilt from the new feed; until the last, one not yet rebuilt says what to do.
    for done, name in enumerate(names, start=1):
        rebuilt = run_gateway("project", "--config", str(config), "--once", "--rebuild", name, cwd=config.parent)
        assert "Traceback" not in rebuilt.stderr, rebuilt.stderr
        assert rebuilt.returncode == (0 if done == len(names) else 1), rebuilt.stderr
        assert {n for n in names if f"--rebuild {n}" in rebuilt.stderr} <= set(names[done:])
    assert set(_latest(config)) == {"kam-1"}


@pytest.mark.slow
def test_the_sdk_logs_its_requests_at_debug_only(
    cosmos_server: CosmosServer, tmp_path: Path,  # noqa: F811
) -> None:
    cosmos = cosmos_server.config()
    _fill(cosmos, "kam-1", 8)
    at_info = _fleet(tmp_path / "info", cosmos, "kam-1")
    done = run_gateway("project", "--config", str(at_info), "--once", cwd=at_info.parent)
    assert done.returncode == 0, done.stderr
    assert [r for r in _log(done.stderr) if str(r["logger"]).startswith("azure")] == []

    # At DEBUG they are there, as DEBUG lines: the filter above is not what hides them.
    at_debug = _fleet(tmp_path / "debug", cosmos, "kam-1", level="DEBUG")
    done = run_gateway("project", "--config", str(at_debug), "--once", "--rebuild", "latest_reading",
                       cwd=at_debug.parent)
    assert done.returncode == 0, done.stderr
    sdk = [r for r in _log(done.stderr) if str(r["logger"]).startswith("azure")]
    assert sdk and {r["level"] for r in sdk} == {"DEBUG"}
    assert any("Request URL" in str(r["message"]) for r in sdk)
