"""A gateway restarted during a Cosmos DB outage polls on from the meter states kept in its outbox file.

The store is the local Cosmos DB-compatible test server, started by the test (it freezes it: the
session's shared server must stay up); the outage is a SIGSTOP of the server process, as in
``test_cosmos_end_to_end.py``. One poller polls the simulated meters and drains to Cosmos; a second
poller (a restart: nothing cached) polls them while the server is frozen; then the outbox is drained.
Checked in Cosmos: every event exactly once, versions 1..n per stream, the state the restarted poller
worked from is the state Cosmos folds to. Once in June, and once across New Year (UTC), where the
restarted poller opens the new year's streams, which the far store has never seen, from the local
states of the old year's.
"""
from __future__ import annotations

import os
import signal
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import anyio
import pytest

from drivers.simulator import Framing, MeterSimulator, SimulatorConfig
from drivers.simulator.fleet import fleet
from gateway.config import parse_config
from gateway.domain.events import RegisterRead, YearStreamOpened
from gateway.domain.mapper import decode
from gateway.history.outbox import Outbox
from gateway.history.outbox_forwarder import Forwarder
from gateway.domain.poll_result import STEP_ORDER
from gateway.history.repository import MeterRepository
from gateway.store.cosmos import CosmosEventStore
from gateway.store.sqlite import SqliteEventStore
from gateway.wiring import ForwarderSettings, open_poller
from tests.cosmos_fixture import EMULATOR_KEY, KEY_ENV, CosmosServerError, start_cosmos_server
from tests.builders import reading

from . import SECRETS, cosmos_store, fleet_toml

pytestmark = [pytest.mark.anyio, pytest.mark.cosmos]

JUNE = datetime(2026, 6, 10, 8, 0, tzinfo=timezone.utc)
NEW_YEAR_EVE = datetime(2026, 12, 31, 23, 50, tzinfo=timezone.utc)  # the restart polls at 00:05
REGISTERS = ("1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.1.7.0.255", "1.0.32.7.0.255")
GUARD_S = 60.0  # against a hang, not a performance assertion
DEADLINE_S = 8.0  # per poll; a cold state read from the frozen server would hang past it


@pytest.mark.slow
@pytest.mark.parametrize("start", [JUNE, NEW_YEAR_EVE], ids=["june", "new-year"])
async def test_a_restart_during_an_outage_polls_from_the_local_states(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start: datetime
) -> None:
    monkeypatch.setenv(KEY_ENV, EMULATOR_KEY)
    try:
        server = start_cosmos_server()
    except CosmosServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    frozen = False
    try:
        cosmos_config = server.config(database="restart")
        outbox_path = tmp_path / "outbox.sqlite3"
        async with await CosmosEventStore.open(cosmos_config, create_if_missing=True):
            pass
        sim_config = SimulatorConfig(meters=fleet(2), framing=Framing.BOTH, start=start, speed=0.0)
        async with MeterSimulator(sim_config) as simulator:
            store = cosmos_store(cosmos_config.endpoint, cosmos_config.database, cosmos_config.container,
                                 KEY_ENV, str(outbox_path))
            config = parse_config(fleet_toml(simulator, "unused", absent=False, deadline_s=DEADLINE_S,
                                             response_s=1.0, connect_s=0.5, store=store), base_dir=tmp_path)
            meters = sorted(simulator.meters)
            forwarding = ForwarderSettings(run=False)
            with anyio.fail_after(GUARD_S):
                async with open_poller(config, now=simulator.clock.now, environ=SECRETS,
                                       forwarding=forwarding) as poller:
                    for meter_id in meters:
                        summary = await poller.poll(meter_id, STEP_ORDER,
                                                    deadline=anyio.current_time() + DEADLINE_S)
                        assert summary.ok, summary.describe_error()
                    outbox_state, why = await poller.history.forward(10.0)  # type: ignore[misc]
                    assert outbox_state.depth == 0, why

                os.kill(server.pid, signal.SIGSTOP)
                frozen = True
                simulator.clock.advance(timedelta(minutes=15))
                years = sorted({start.year, simulator.clock.now().year})
                worked_from = {}
                async with open_poller(config, now=simulator.clock.now, environ=SECRETS,
                                       forwarding=forwarding) as restarted:
                    for meter_id in meters:
                        summary = await restarted.poll(meter_id, STEP_ORDER,
                                                       deadline=anyio.current_time() + DEADLINE_S)
                        assert summary.ok, summary.describe_error()
                        assert summary.stored.get(RegisterRead.TYPE) == len(REGISTERS), summary.stored
                        for year in years:
                            worked_from[meter_id, year] = await restarted.history.repository.load(meter_id, year)
                async with await Outbox.open(outbox_path, 64 * 1024 * 1024) as outbox:
                    queued = (await outbox.state()).depth
                assert queued >= len(meters) * len(REGISTERS)

                os.kill(server.pid, signal.SIGCONT)
                frozen = False
                async with (
                    await CosmosEventStore.open(cosmos_config) as cosmos,
                    await Outbox.open(outbox_path, 64 * 1024 * 1024) as outbox,
                ):
                    forwarder = Forwarder(outbox, cosmos)
                    while (await outbox.state()).depth:
                        await forwarder.drain_once()
                    assert (await outbox.state()).poisoned == 0
                    streams = {info.stream_id: await cosmos.load(info.stream_id)
                               for info in await cosmos.list_streams("Meter:")}
                    fresh = MeterRepository(cosmos)
                    for (meter_id, year), state in worked_from.items():
                        assert await fresh.load(meter_id, year) == state, (meter_id, year)
    finally:
        if frozen:
            os.kill(server.pid, signal.SIGCONT)
        server.stop()

    assert set(streams) == {f"Meter:{m}:{year}" for m in meters for year in years}
    ids = [e.event_id for events in streams.values() for e in events]
    assert len(ids) == len(set(ids))
    reads: Counter[str] = Counter()
    for stream, events in streams.items():
        assert [e.version for e in events] == list(range(1, len(events) + 1)), stream
        reads.update(f"{stream.split(':')[1]} {decode(e).obis}"  # type: ignore[attr-defined]
                     for e in events if e.type == RegisterRead.TYPE)
        if len(years) == 2 and stream.endswith(f":{years[1]}"):
            # The new year's stream opens with the old year's closing state, carried over.
            assert events[0].type == YearStreamOpened.TYPE, stream
    assert reads == {f"{m} {obis}": 2 for m in meters for obis in REGISTERS}


async def test_a_local_state_the_forwarder_contradicts_is_not_used(tmp_path: Path) -> None:
    """Events put after the state was saved and already forwarded (a crash between a put and the
    save): the local state is not what the stream will be, so it is not offered."""
    far = await SqliteEventStore.open(tmp_path / "far.db")
    try:
        async with await Outbox.open(tmp_path / "outbox.sqlite3", 1_000_000) as outbox:
            stream = "Meter:m-1:2026"
            await outbox.put(stream, [reading("a")])
            await outbox.save_local_state(stream, 1, 1, {"version": 1})
            await outbox.put(stream, [reading("b")])
            local = await outbox.local_state(stream)
            assert local is not None and local.consistent
            assert [e.event_id for e in local.tail] == ["b"]

            await Forwarder(outbox, far).drain_once()  # forwards a and b; the tail is gone
            local = await outbox.local_state(stream)
            assert local is not None and local.tail == () and not local.consistent

            await outbox.save_local_state(stream, 2, 1, {"version": 2})
            local = await outbox.local_state(stream)
            assert local is not None and local.consistent and local.expected_head == 2
            await outbox.drop_local_state(stream)
            assert await outbox.local_state(stream) is None
    finally:
        await far.aclose()
