"""The ``store`` fixture: every contract test runs once per event store backend.

To add a backend, teach ``tests.backends.open_backend`` to open it and add its name to
``tests.backends.BACKENDS``.
"""
from __future__ import annotations

from typing import AsyncIterator

import pytest

from gateway.store import EventStore
from tests.backends import BACKENDS, open_backend


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, anyio_backend: str) -> AsyncIterator[EventStore]:
    async with open_backend(request.param, request) as opened:
        yield opened
