"""`gateway store init` and `gateway events query` against the local Cosmos test server."""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import anyio
import pytest

from tests.builders import new_event
from tests.cosmos_fixture import KEY_ENV, CosmosServer
from gateway.cli import main
from gateway.store import NO_STREAM, NewEvent
from gateway.store.cosmos import CosmosEventStore
from gateway.store.cosmos_client import (
    INDEXING_POLICY,
    CosmosConfig,
    CosmosStoreStats,
    build_client,
)

T0 = datetime(2026, 12, 31, 23, 0, tzinfo=timezone.utc)


def cli_args(config: CosmosConfig) -> list[str]:
    return ["--endpoint", config.endpoint, "--database", config.database, "--container",
            config.container, "--key-env", KEY_ENV, "--insecure-skip-tls-verify"]


def reading(kind: str, at: datetime, value: str) -> NewEvent:
    return new_event(type=kind, data={"value": value}, recorded_at=at, gateway_id="gw-cli")


def test_store_init_creates_the_container_and_is_repeatable(
        cosmos_server: CosmosServer, capsys: pytest.CaptureFixture[str]) -> None:
    config = cosmos_server.config()
    assert main(["store", "init", *cli_args(config), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["partitionKey"] == ["/streamId"] and report["container"] == config.container
    assert "/events/[]/type/?" in report["indexedPaths"]
    assert main(["store", "init", *cli_args(config)]) == 0
    assert "ready" in capsys.readouterr().out

    async def stored_policy() -> dict[str, object]:
        client = build_client(config, CosmosStoreStats())
        try:
            container = client.get_database_client(config.database).get_container_client(
                config.container)
            return dict((await container.read())["indexingPolicy"])
        finally:
            await client.close()

    policy = anyio.run(stored_policy)
    # Event payloads are not indexed: everything is excluded but the paths the store queries.
    assert {"path": "/*"} in policy["excludedPaths"]  # type: ignore[operator]
    assert policy["includedPaths"] == INDEXING_POLICY["includedPaths"]


def test_store_init_without_endpoint_or_key_says_what_is_missing(
        cosmos_server: CosmosServer, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_COSMOS_ENDPOINT", raising=False)
    assert main(["store", "init"]) == 1
    assert "--endpoint" in capsys.readouterr().err
    config = cosmos_server.config()
    args = cli_args(config)
    args[args.index(KEY_ENV)] = "GW_UNSET_KEY_VAR"
    monkeypatch.delenv("GW_UNSET_KEY_VAR", raising=False)
    assert main(["store", "init", *args]) == 1
    assert "GW_UNSET_KEY_VAR" in capsys.readouterr().err


def test_events_query_by_type_meter_and_time_range_across_streams(
        cosmos_server: CosmosServer, capsys: pytest.CaptureFixture[str]) -> None:
    config = cosmos_server.config()
    meter, other = f"M{uuid.uuid4().hex[:6]}", f"M{uuid.uuid4().hex[:6]}"
    old_year = [reading("RegisterRead", T0 + timedelta(minutes=15 * i), f"{i}.5") for i in range(3)]
    new_year = [reading("RegisterRead", T0 + timedelta(hours=1, minutes=15 * i), f"{10 + i}.5")
                for i in range(2)]
    clock = reading("ClockDriftDetected", T0 + timedelta(minutes=20), "3")
    elsewhere = reading("RegisterRead", T0 + timedelta(minutes=20), "99")

    async def fill() -> None:
        async with await CosmosEventStore.open(config, create_if_missing=True) as store:
            await store.append(f"Meter:{meter}:2026", [*old_year, clock], NO_STREAM)
            await store.append(f"Meter:{meter}:2027", new_year, NO_STREAM)
            await store.append(f"Meter:{other}:2026", [elsewhere], NO_STREAM)

    anyio.run(fill)
    # 23:15 inclusive to 00:15 exclusive, across the year boundary.
    assert main(["events", "query", "--type", "RegisterRead", "--meter", meter,
                 "--from", "2026-12-31T23:15:00Z", "--to", "2027-01-01T00:15:00Z", "--json",
                 *cli_args(config)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["streamId"], r["version"], r["id"]) for r in rows] == [
        (f"Meter:{meter}:2026", 2, old_year[1].event_id),
        (f"Meter:{meter}:2026", 3, old_year[2].event_id),
        (f"Meter:{meter}:2027", 1, new_year[0].event_id),
    ]
    assert rows[0]["data"] == {"value": "1.5"} and rows[0]["type"] == "RegisterRead"

    # Without a meter: every stream; by type only.
    assert main(["events", "query", "--type", "ClockDriftDetected", *cli_args(config)]) == 0
    out = capsys.readouterr()
    assert f"Meter:{meter}:2026  v4  ClockDriftDetected" in out.out
    assert "1 event(s)" in out.err
