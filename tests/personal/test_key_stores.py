"""The KeyStore contract, run against every implementation: SQLite (a real file) and Cosmos DB (the
local Cosmos-compatible test server, started for the session; the test fails if it cannot start).
Plus crypto-shredding with the Cosmos DB event store and the Cosmos key store together."""
from __future__ import annotations

import json
from pathlib import Path
from typing import AsyncIterator

import anyio
import pytest

from tests.cosmos_fixture import KEY_ENV, CosmosServer, cosmos_server  # noqa: F401  (session fixture)
from gateway.cli import main
from gateway.domain.mapper import decode
from gateway.personal.assignments import Assignments
from gateway.personal.crypto import ERASED, encrypt_field, reveal
from gateway.personal.events import PersonalDataErased, assignment_stream_id
from gateway.personal.keys import KeyDestroyed, KeyNotFound, KeyStore, SqliteKeyStore
from gateway.personal.keys_cosmos import CosmosKeyStore
from gateway.personal.unique_index import UniqueIndex
from gateway.store.cosmos import CosmosEventStore
from gateway.store.cosmos_client import CosmosStoreStats, build_client


@pytest.fixture(params=["sqlite", pytest.param("cosmos", marks=pytest.mark.cosmos)])
async def keys(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KeyStore]:
    store: KeyStore
    if request.param == "sqlite":
        store = await SqliteKeyStore.open(tmp_path / "gateway.keys.db")
    else:
        server: CosmosServer = request.getfixturevalue("cosmos_server")
        store = await CosmosKeyStore.open(server.config(), container=f"keys-{tmp_path.name[-20:]}",
                                          create_if_missing=True)
    try:
        yield store
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_create_is_idempotent_and_destroy_is_final(keys: KeyStore) -> None:
    assert isinstance(keys, KeyStore)
    key = await keys.create("a-1")
    other = await keys.create("a-2")
    assert await keys.create("a-1") == key  # a retried command gets the same key
    assert other.key_id != key.key_id and other.material != key.material
    assert await keys.get(key.key_id) == key
    assert key.material.hex() not in repr(key)
    sealed = encrypt_field(key, "activation_code", "QXJ7K2M9WP")

    assert await keys.destroy("a-1") is True
    assert await keys.destroy("a-1") is False
    with pytest.raises(KeyDestroyed) as destroyed:
        await keys.get(key.key_id)
    assert key.material.hex() not in str(destroyed.value)
    with pytest.raises(KeyDestroyed):
        await keys.create("a-1")  # a forgotten assignment never gets a key again
    assert await reveal(keys, "activation_code", sealed, "a-1") is ERASED
    assert await keys.get(other.key_id) == other  # the others are untouched
    with pytest.raises(KeyNotFound):
        await keys.get("never-made")
    with pytest.raises(KeyNotFound):
        await keys.destroy("never-assigned")


@pytest.mark.cosmos
@pytest.mark.anyio
async def test_forget_on_cosmos(cosmos_server: CosmosServer, tmp_path: Path) -> None:  # noqa: F811
    config = cosmos_server.config()
    store = await CosmosEventStore.open(config, create_if_missing=True)
    keys = await CosmosKeyStore.open(config, container=f"keys-{config.container}", create_if_missing=True)
    index = await UniqueIndex.open(tmp_path / "gateway.unique.db")
    try:
        assignments = Assignments(store, keys, index, "gw-test")
        done = await assignments.assign("M1", "1234 AB", "7", "CODE0001")
        assert (await assignments.load(done.assignment_id)).postal_code == "1234 AB"
        await assignments.forget(done.assignment_id)
        loaded = await assignments.load(done.assignment_id)
        assert (loaded.postal_code, loaded.house_number, loaded.activation_code) == (ERASED,) * 3
        recorded = await store.load(assignment_stream_id(done.assignment_id))
        assert isinstance(decode(recorded[-1]), PersonalDataErased)
        # The tombstone item holds no key material, as the container returns it to any client.
        client = build_client(config, CosmosStoreStats())
        try:
            container = client.get_database_client(config.database).get_container_client(
                f"keys-{config.container}")
            items = [i async for i in container.query_items("SELECT * FROM c")]
        finally:
            await client.close()
        assert [(i["assignmentId"], i["material"]) for i in items] == [(done.assignment_id, None)]
    finally:
        for closeable in (index, keys, store):
            await closeable.aclose()


COSMOS_FLEET = """
gateway_id = "gw-test"
default_timezone = "Europe/Copenhagen"

[store]
kind = "cosmos"
endpoint = "{endpoint}"
database = "{database}"
container = "{container}"
key = {{ env = "{key_env}" }}
verify_tls = false          # the local test server's self-signed certificate
outbox_path = "{outbox}"

[[concentrators]]
id = "dc-1"
host = "127.0.0.1"
port = 4059
framing = "wrapper"

[[meters]]
id = "M1"
make = "kamstrup"
profile = "omnipower"
connection = "dc-1"
wport = 1
security = {{ level = "none" }}
max_power_w = 55200
"""


@pytest.mark.cosmos
def test_cli_assign_and_forget_with_a_cosmos_fleet(
    cosmos_server: CosmosServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    config = cosmos_server.config()  # also sets the key's environment variable

    async def create_events_container() -> None:
        await (await CosmosEventStore.open(config, create_if_missing=True)).aclose()

    anyio.run(create_events_container)
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(COSMOS_FLEET.format(
        endpoint=config.endpoint, database=config.database, container=config.container,
        key_env=KEY_ENV, outbox=tmp_path / "outbox.db"))

    def cli(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = cli("meters", "assign", "--config", str(fleet), "--meter", "M1",
                         "--postal-code", "1234 AB", "--house-number", "7", "--json")
    assert code == 0, err
    assignment_id = json.loads(out)["assignmentId"]
    code, _, err = cli("meters", "assign", "--config", str(fleet), "--meter", "M1",
                       "--postal-code", "1234 AB", "--house-number", "9")
    assert code == 1 and "meter id is already in use" in err
    code, out, err = cli("forget", "--config", str(fleet), "--assignment", assignment_id)
    assert code == 0, err
    code, out, err = cli("meters", "assignment", "--config", str(fleet), "--assignment", assignment_id, "--json")
    assert code == 0, err
    assert json.loads(out)["erased"] is True and json.loads(out)["houseNumber"] is None
    assert (tmp_path / "outbox.unique.db").is_file()
