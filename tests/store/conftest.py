"""The ``store`` fixture: every contract test runs once per event store backend.

To add a backend, write a factory (an async context manager taking the pytest request and yielding
an opened store) and add its name to ``BACKENDS`` and to the ``params`` list of ``store``.
"""
from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Callable, AsyncContextManager

import pytest

from tests.cosmos_fixture import cosmos_server  # noqa: F401  (session fixture of the Cosmos test server)
from gateway.store import EventStore

BackendFactory = Callable[[pytest.FixtureRequest], AsyncContextManager[EventStore]]


@asynccontextmanager
async def sqlite_backend(request: pytest.FixtureRequest) -> AsyncIterator[EventStore]:
    from gateway.store.sqlite import SqliteEventStore

    tmp_path: Path = request.getfixturevalue("tmp_path")
    store = await SqliteEventStore.open(tmp_path / "events.db")
    try:
        yield store
    finally:
        await store.aclose()


@asynccontextmanager
async def cosmos_backend(request: pytest.FixtureRequest) -> AsyncIterator[EventStore]:
    from gateway.store.cosmos import CosmosEventStore

    server = request.getfixturevalue("cosmos_server")
    store = await CosmosEventStore.open(server.config(), create_if_missing=True)
    try:
        yield store
    finally:
        await store.aclose()


BACKENDS: dict[str, BackendFactory] = {
    "sqlite": sqlite_backend,
    "cosmos": cosmos_backend,
}


@pytest.fixture(params=["sqlite", "cosmos"])
async def store(request: pytest.FixtureRequest, anyio_backend: str) -> AsyncIterator[EventStore]:
    async with BACKENDS[request.param](request) as opened:
        yield opened
