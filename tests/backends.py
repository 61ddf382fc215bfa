"""Event stores for tests, one helper per backend, and the fixtures built on them.

* ``opened_sqlite(path)`` / ``opened_cosmos(config)``: async context managers that open a store and
  close it at the end (a Cosmos container is created when missing).
* ``open_backend(name, request)``: the store of one backend for a test: SQLite in the test's
  ``tmp_path``, or a fresh container of the session's Cosmos test server. ``BACKENDS`` names them
  all: a contract suite parametrised over it runs once per backend.
* Fixtures (made available to every test by tests/conftest.py): ``sqlite_store`` (``events.db`` in
  ``tmp_path``) and ``cosmos_store`` (a fresh container of the session server).
* ``read_everything(store)``: every event of ``read_all``, page by page, and the final checkpoint;
  ``sqlite_events(path)``: every event of the SQLite store in that file.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from gateway.store import EventStore, RecordedEvent
from gateway.store.cosmos import CosmosEventStore
from gateway.store.cosmos_client import CosmosConfig
from gateway.store.sqlite import SqliteEventStore

BACKENDS = ("sqlite", "cosmos")


@asynccontextmanager
async def opened_sqlite(path: Path) -> AsyncIterator[SqliteEventStore]:
    store = await SqliteEventStore.open(path)
    try:
        yield store
    finally:
        await store.aclose()


@asynccontextmanager
async def opened_cosmos(config: CosmosConfig) -> AsyncIterator[CosmosEventStore]:
    store = await CosmosEventStore.open(config, create_if_missing=True)
    try:
        yield store
    finally:
        await store.aclose()


@asynccontextmanager
async def open_backend(name: str, request: pytest.FixtureRequest) -> AsyncIterator[EventStore]:
    """The event store of backend ``name`` for the requesting test."""
    if name == "sqlite":
        async with opened_sqlite(request.getfixturevalue("tmp_path") / "events.db") as store:
            yield store
    elif name == "cosmos":
        async with opened_cosmos(request.getfixturevalue("cosmos_server").config()) as store:
            yield store
    else:
        raise ValueError(f"unknown event store backend {name!r}; known: {BACKENDS}")


@pytest.fixture
async def sqlite_store(tmp_path: Path, anyio_backend: str) -> AsyncIterator[SqliteEventStore]:
    async with opened_sqlite(tmp_path / "events.db") as store:
        yield store


@pytest.fixture
async def cosmos_store(cosmos_config: CosmosConfig, anyio_backend: str
                       ) -> AsyncIterator[CosmosEventStore]:
    async with opened_cosmos(cosmos_config) as store:
        yield store


async def read_everything(store: EventStore, checkpoint: str | None = None, limit: int = 1000
                          ) -> tuple[list[RecordedEvent], str | None]:
    """Page through read_all until done; returns the events and the final checkpoint."""
    out: list[RecordedEvent] = []
    for _ in range(10_000):
        page = await store.read_all(checkpoint, limit=limit)
        out.extend(page.events)
        checkpoint = page.checkpoint
        if page.done:
            return out, checkpoint
    raise AssertionError("read_all never reported done")


async def sqlite_events(path: Path) -> list[RecordedEvent]:
    """Every event of the SQLite store in ``path``, in read_all order."""
    async with opened_sqlite(path) as store:
        recorded, _ = await read_everything(store)
        return recorded
