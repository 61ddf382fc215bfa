"""Wiring of personal-data handling to the fleet's store: the one place that picks backends.

SQLite: the key store and the unique index are files beside the store file. Cosmos DB: keys in the
``keys`` container of the store's database (created if missing), the unique index beside the outbox
file (one fleet = one gateway's config).
"""
from __future__ import annotations

from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

from gateway.config.model import FleetConfig, SqliteStoreConfig
from gateway.personal.assignments import AssignmentError, Assignments
from gateway.personal.crypto import PersonalDataError
from gateway.personal.keys import KeyStore, KeyStoreError, SqliteKeyStore, key_store_path_for
from gateway.personal.unique_index import UniqueIndex, UniqueIndexError, unique_index_path_for
from gateway.store import EventStore
from gateway.store.errors import StoreError
from gateway.store.sqlite import SqliteEventStore

PERSONAL_DATA_FAILURES = (AssignmentError, PersonalDataError, KeyStoreError, UniqueIndexError, StoreError)
"""What an operation on assignments may fail with (a command reports it and exits 1)."""


@dataclass(frozen=True, slots=True)
class PersonalDataPaths:
    """The files of personal-data handling beside a SQLite event store."""

    store: Path
    keys: Path
    unique_index: Path

    @classmethod
    def next_to(cls, store_path: Path) -> PersonalDataPaths:
        return cls(store_path, key_store_path_for(store_path), unique_index_path_for(store_path))


@asynccontextmanager
async def open_assignments(fleet: FleetConfig) -> AsyncIterator[Assignments]:
    """``Assignments`` on the fleet's store. SQLite: key store and unique index are files beside the
    store file. Cosmos DB: keys in the ``keys`` container of the store's database (created if
    missing), the unique index beside the outbox file (one fleet = one gateway's config)."""
    async with AsyncExitStack() as stack:
        store: EventStore
        keys: KeyStore
        if isinstance(fleet.store, SqliteStoreConfig):
            paths = PersonalDataPaths.next_to(fleet.store.path)
            paths.store.parent.mkdir(parents=True, exist_ok=True)
            sqlite_store = await SqliteEventStore.open(paths.store)
            stack.push_async_callback(sqlite_store.aclose)
            sqlite_keys = await SqliteKeyStore.open(paths.keys)
            stack.push_async_callback(sqlite_keys.aclose)
            store, keys, index_path = sqlite_store, sqlite_keys, paths.unique_index
        else:
            # Imported here: the SQLite-only box never loads the Cosmos SDK.
            from gateway.personal.keys_cosmos import CosmosKeyStore
            from gateway.store.cosmos import CosmosEventStore
            from gateway.wiring import cosmos_config_for

            config = cosmos_config_for(fleet.store)
            cosmos_store = await CosmosEventStore.open(config)
            stack.push_async_callback(cosmos_store.aclose)
            cosmos_keys = await CosmosKeyStore.open(config, create_if_missing=True)
            stack.push_async_callback(cosmos_keys.aclose)
            fleet.store.outbox_path.parent.mkdir(parents=True, exist_ok=True)
            store, keys, index_path = cosmos_store, cosmos_keys, unique_index_path_for(fleet.store.outbox_path)
        index = await UniqueIndex.open(index_path)
        stack.push_async_callback(index.aclose)
        yield Assignments(store, keys, index, fleet.gateway_id)
