"""Test-wide fixtures. Async tests run on anyio's asyncio backend.

The session's Cosmos test server (``cosmos_server``, ``cosmos_config``: tests/cosmos_fixture.py)
and one event store per backend (``sqlite_store``, ``cosmos_store``: tests/backends.py) are
available to every test.
"""
import pytest

from tests.backends import cosmos_store, sqlite_store  # noqa: F401  (fixtures)
from tests.cosmos_fixture import cosmos_config, cosmos_server  # noqa: F401  (fixtures)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
