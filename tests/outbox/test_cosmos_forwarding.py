"""Forwarding to Cosmos DB (the local Cosmos-compatible test server) through an outage.

The test starts its own server (it freezes it; the session's shared one must stay up) and fails
loudly if it cannot. The outage is a SIGSTOP of the server: requests time out, and a request caught
in flight may be applied when the server wakes up with its answer long gone (a lost
acknowledgement). Stopping the process instead would lose the stand-in's in-memory data, which a
real Cosmos account never does, so nothing about exactly-once could be checked across the restart.
"""
from __future__ import annotations

import os
import signal
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from gateway.history.outbox import Outbox
from gateway.history.outbox_forwarder import Forwarder
from gateway.store.cosmos import CosmosEventStore
from tests.cosmos_fixture import CosmosServerError, start_cosmos_server
from tests.builders import ids, reading

pytestmark = [pytest.mark.anyio, pytest.mark.cosmos]

STREAMS = [f"Meter:outbox-{m}:2026" for m in range(3)]
COUNT = 90
GUARD_S = 60.0  # a guard against a hang, not a performance assertion


@pytest.mark.slow
async def test_forwarding_to_cosmos_survives_the_server_being_frozen(tmp_path: Path) -> None:
    try:
        server = start_cosmos_server()
    except CosmosServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    frozen = False
    try:
        config = replace(server.config(), read_timeout_s=0.5, connect_retries=0)
        async with (
            await CosmosEventStore.open(config, create_if_missing=True) as cosmos,
            await Outbox.open(tmp_path / "outbox.sqlite3", 10_000_000) as outbox,
        ):
            forwarder = Forwarder(outbox, cosmos, max_events_per_append=5, store_timeout_s=2.0,
                                  backoff_initial_s=0.05, backoff_max_s=0.2, idle_wait_s=0.05)
            with anyio.fail_after(GUARD_S):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(forwarder.run)
                    for i in range(COUNT):
                        if i == COUNT // 3:
                            os.kill(server.pid, signal.SIGSTOP)
                            frozen = True
                        await outbox.put(STREAMS[i % len(STREAMS)], [reading(f"e{i}", value=str(i))])
                        await anyio.sleep(0.005)
                    while forwarder.metrics.unavailable < 2:  # the outage was felt, twice
                        await anyio.sleep(0.05)
                    assert (await outbox.state()).depth > 0
                    os.kill(server.pid, signal.SIGCONT)
                    frozen = False
                    while (await outbox.state()).depth:
                        await anyio.sleep(0.05)
                    tg.cancel_scope.cancel()
            for s, stream in enumerate(STREAMS):
                stored = await cosmos.load(stream)
                assert ids(stored) == [f"e{i}" for i in range(s, COUNT, len(STREAMS))]
                assert [e.version for e in stored] == list(range(1, len(stored) + 1))
            state = await outbox.state()
            assert (state.depth, state.poisoned) == (0, 0)
    finally:
        if frozen:
            os.kill(server.pid, signal.SIGCONT)
        server.stop()
