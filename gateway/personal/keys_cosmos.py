"""``KeyStore`` on an Azure Cosmos DB container, for fleets whose event store is Cosmos DB.

One item per assignment in its own container (default ``keys``, partition key ``/assignmentId``,
item id = assignment id): ``create`` is a single create that a concurrent or retried command turns
into a 409 and then reads the existing key, so an assignment never gets two keys. ``destroy``
replaces the item, under its etag, with a tombstone that has no key material (so later reads say
"destroyed", not "unknown"). Key material is base64 in the item; the account key is taken from the
environment variable the config names, as for the event store.

What "destroyed" means on Cosmos DB: the replaced item version is gone from the container and no
query or read returns it, but the account's backups keep it until they expire (periodic backup:
hours; continuous backup: 7 or 30 days), and an "all versions and deletes" change feed would show
it while retained. Put the keys container in an account (or database) whose backup retention is
what you promise customers, with no such change feed. Azure Key Vault with purge would be stronger.
"""
from __future__ import annotations

import base64
import os
import uuid
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Final

from azure.core import MatchConditions
from azure.core.exceptions import AzureError
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient
from azure.cosmos.exceptions import CosmosHttpResponseError, CosmosResourceExistsError

from gateway.personal.events import validate_assignment_id
from gateway.personal.keys import KEY_BYTES, DataKey, KeyDestroyed, KeyNotFound, KeyStoreUnavailable
from gateway.store.codec import iso_utc, parse_utc
from gateway.store.cosmos_client import CosmosConfig, CosmosStoreStats, build_client

KEYS_CONTAINER: Final[str] = "keys"
KEYS_PARTITION_KEY_PATH: Final[str] = "/assignmentId"


class CosmosKeyStore:
    """Open with ``await CosmosKeyStore.open(config)``; ``config.container`` is ignored in favour of
    ``container`` (the keys live apart from the events)."""

    def __init__(self, client: CosmosClient, container: ContainerProxy) -> None:
        self._client = client
        self._container = container

    @classmethod
    async def open(cls, config: CosmosConfig, container: str = KEYS_CONTAINER, *,
                   create_if_missing: bool = False) -> CosmosKeyStore:
        client = build_client(replace(config, container=container), CosmosStoreStats())
        try:
            if create_if_missing:
                try:
                    database = await client.create_database_if_not_exists(config.database)
                    proxy = await database.create_container_if_not_exists(
                        container, partition_key=PartitionKey(path=KEYS_PARTITION_KEY_PATH)
                    )
                except (CosmosHttpResponseError, AzureError) as exc:
                    raise _unavailable("create the keys container", exc) from None
            else:
                proxy = client.get_database_client(config.database).get_container_client(container)
        except BaseException:
            await client.close()
            raise
        return cls(client, proxy)

    async def aclose(self) -> None:
        await self._client.close()

    async def _item(self, assignment_id: str) -> dict[str, Any] | None:
        # A query within the item's partition rather than a point read: an absent item is simply an
        # empty result.
        try:
            items = [
                item async for item in self._container.query_items(
                    "SELECT * FROM c WHERE c.assignmentId = @id",
                    parameters=[{"name": "@id", "value": assignment_id}],
                    partition_key=assignment_id,
                )
            ]
        except (CosmosHttpResponseError, AzureError) as exc:
            raise _unavailable(f"read the key of assignment {assignment_id!r}", exc) from None
        return items[0] if items else None

    async def create(self, assignment_id: str) -> DataKey:
        validate_assignment_id(assignment_id)
        key = DataKey(str(uuid.uuid4()), assignment_id, os.urandom(KEY_BYTES))
        body = {
            "id": assignment_id,
            "assignmentId": assignment_id,
            "keyId": key.key_id,
            "material": base64.b64encode(key.material).decode("ascii"),
            "createdAt": iso_utc(datetime.now(timezone.utc)),
            "destroyedAt": None,
        }
        try:
            await self._container.create_item(body)
            return key
        except CosmosResourceExistsError:
            pass  # a retried or concurrent create: the key that exists is the key
        except (CosmosHttpResponseError, AzureError) as exc:
            raise _unavailable(f"create the key of assignment {assignment_id!r}", exc) from None
        item = await self._item(assignment_id)
        if item is None:
            raise KeyStoreUnavailable(f"key of assignment {assignment_id!r}: exists but cannot be read")
        return _key_of(item)

    async def get(self, key_id: str) -> DataKey:
        try:
            items = [
                item async for item in self._container.query_items(
                    "SELECT * FROM c WHERE c.keyId = @key",
                    parameters=[{"name": "@key", "value": key_id}],
                )
            ]
        except (CosmosHttpResponseError, AzureError) as exc:
            raise _unavailable(f"read key {key_id!r}", exc) from None
        if not items:
            raise KeyNotFound(key_id=key_id)
        return _key_of(items[0])

    async def destroy(self, assignment_id: str) -> bool:
        item = await self._item(assignment_id)
        if item is None:
            raise KeyNotFound(assignment_id=assignment_id)
        if item.get("material") is None:
            return False
        tombstone = {
            "id": assignment_id,
            "assignmentId": assignment_id,
            "keyId": item["keyId"],
            "material": None,
            "createdAt": item["createdAt"],
            "destroyedAt": iso_utc(datetime.now(timezone.utc)),
        }
        try:
            await self._container.replace_item(
                assignment_id, tombstone, etag=item["_etag"], match_condition=MatchConditions.IfNotModified
            )
        except CosmosHttpResponseError as exc:
            if exc.status_code == 412:  # destroyed by a concurrent forget meanwhile
                return await self.destroy(assignment_id)
            raise _unavailable(f"destroy the key of assignment {assignment_id!r}", exc) from None
        except AzureError as exc:
            raise _unavailable(f"destroy the key of assignment {assignment_id!r}", exc) from None
        return True


def _key_of(item: dict[str, Any]) -> DataKey:
    if item.get("material") is None:
        raise KeyDestroyed(item["keyId"], item["assignmentId"], parse_utc(item["destroyedAt"]))
    return DataKey(item["keyId"], item["assignmentId"], base64.b64decode(item["material"]))


def _unavailable(action: str, exc: Exception) -> KeyStoreUnavailable:
    status = getattr(exc, "status_code", None)
    # The SDK's message may quote the request; keep only the status and the exception type.
    return KeyStoreUnavailable(f"cannot {action} (Cosmos DB {status or type(exc).__name__})")


__all__ = ["KEYS_CONTAINER", "KEYS_PARTITION_KEY_PATH", "CosmosKeyStore"]
