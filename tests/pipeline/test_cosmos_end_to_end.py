"""Simulator -> `gateway run` (a real subprocess) -> local outbox -> Cosmos DB, through an outage.

The store is the local Cosmos DB-compatible test server, started by the test (it freezes it: the
session's shared server must stay up). The outage is a SIGSTOP of the server process, as in
``tests/outbox/test_cosmos_forwarding.py``: requests hang and may be applied after SIGCONT with their
answer long gone. The gateway polls the simulated fleet every second (real time): before, during
and after the outage; while frozen, polls still succeed (the events go to the outbox), and so does a
cold `gateway poll` (no cached state): it loads the meter's state from the outbox file. Then `gateway run`
is stopped with SIGTERM and `gateway poll` does a final poll and drain.

Checked in Cosmos: every register reading and every load-profile interval the gateway read (its
own log and the simulator's oracle) is stored exactly once, in its meter-year stream, each stream
with versions 1..n in the order the readings were taken, no event id twice, and the outbox empty.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sys
from collections import Counter, defaultdict
from datetime import timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Callable

import anyio
import pytest
from anyio.abc import Process

from drivers.simulator import Framing, MeterSimulator, SimulatorConfig, expected_profile_rows, expected_register
from drivers.simulator.fleet import fleet
from gateway.domain.events import IntervalsRecorded, MeterRegistered, RegisterRead
from gateway.domain.mapper import decode
from gateway.history.outbox import Outbox
from gateway.store.cosmos import CosmosEventStore
from gateway.store.model import RecordedEvent
from gateway.history.outbox_forwarder import Forwarder
from gateway.history.sinks import OutboxView
from gateway.store.errors import StreamNotFound
from tests.cosmos_fixture import (  # noqa: F401 (cosmos_server is a fixture)
    EMULATOR_KEY,
    KEY_ENV,
    CosmosServer,
    CosmosServerError,
    cosmos_server,
    start_cosmos_server,
)
from tests.builders import reading

from . import SECRETS, cosmos_store, fleet_toml

pytestmark = [pytest.mark.anyio, pytest.mark.cosmos]

GATEWAY = [sys.executable, "-m", "gateway"]
REGISTERS = ("1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.1.7.0.255", "1.0.32.7.0.255")
UNITS = {30: "Wh", 27: "W", 35: "V"}
GUARD_S = 90.0  # against a hang, not a performance assertion
POLL_LINE = re.compile(r"meter (\S+): polled (\S+), stored (\d+) events")


def _env() -> dict[str, str]:
    return {**os.environ, **SECRETS, KEY_ENV: EMULATOR_KEY, "PYTHONUNBUFFERED": "1"}


class RunLog:
    """The JSON log lines of a running `gateway run`, and the successful polls per meter so far."""

    def __init__(self, process: Process) -> None:
        assert process.stderr is not None
        self.stderr = process.stderr
        self.lines: list[dict[str, object]] = []
        self.polls: Counter[str] = Counter()  # successful polls that read the registers
        self._buffer = b""

    def _take(self, raw: bytes) -> None:
        record = json.loads(raw)
        self.lines.append(record)
        match = POLL_LINE.match(str(record["message"]))
        if match and "registers" in match.group(2).split(","):
            self.polls[match.group(1)] += 1

    async def until(self, done: Callable[[], bool]) -> None:
        while not done():
            self._buffer += await self.stderr.receive()
            *complete, self._buffer = self._buffer.split(b"\n")
            for raw in complete:
                self._take(raw)

    async def rest(self) -> None:
        async for chunk in self.stderr:
            self._buffer += chunk
        for raw in self._buffer.split(b"\n"):
            if raw.strip():
                self._take(raw)

    @property
    def messages(self) -> list[str]:
        return [str(line["message"]) for line in self.lines]


async def _cosmos_streams(store: CosmosEventStore) -> dict[str, list[RecordedEvent]]:
    return {info.stream_id: await store.load(info.stream_id) for info in await store.list_streams("")}


@pytest.mark.slow
async def test_run_through_a_cosmos_outage_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    try:
        server = start_cosmos_server()
    except CosmosServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    frozen = False
    run: Process | None = None
    try:
        cosmos_config = server.config(database="pipeline")
        outbox_path = tmp_path / "outbox.sqlite3"
        config_path = tmp_path / "fleet.toml"
        async with await CosmosEventStore.open(cosmos_config, create_if_missing=True):
            pass  # what `gateway store init` does: the container exists before the gateway runs
        sim_config = SimulatorConfig(meters=fleet(4), framing=Framing.BOTH, speed=1.0)
        async with MeterSimulator(sim_config) as simulator:
            store = cosmos_store(cosmos_config.endpoint, cosmos_config.database, cosmos_config.container,
                                 KEY_ENV, str(outbox_path))
            config_path.write_text(fleet_toml(simulator, "unused", absent=False, interval_s=1.0, deadline_s=2.0,
                                              response_s=1.0, connect_s=0.5, store=store))
            meters = sorted(simulator.meters)
            with anyio.fail_after(GUARD_S):
                run = await anyio.open_process(
                    [*GATEWAY, "run", "--config", str(config_path), "--log-format", "json"], env=_env())
                log = RunLog(run)
                await log.until(lambda: all(log.polls[m] >= 2 for m in meters))
                # The forwarder of `gateway run` drains in the background.
                async with await CosmosEventStore.open(cosmos_config) as cosmos:
                    while {e.stream_id.split(":")[1] for e in await cosmos.list_streams("Meter:")} != set(meters):
                        await anyio.sleep(0.2)

                # The outage: polls go on into the outbox.
                os.kill(server.pid, signal.SIGSTOP)
                frozen = True
                before = dict(log.polls)
                await log.until(lambda: all(log.polls[m] >= before[m] + 2 for m in meters))
                status = await anyio.run_process([*GATEWAY, "status", "--config", str(config_path)], check=False)
                assert status.returncode == 0, status.stderr.decode()
                footer = status.stdout.decode().splitlines()[-1]
                queued = re.match(r"outbox: (\d+) events pending", footer)
                assert queued is not None and int(queued.group(1)) > 0, footer
                # A second process (nothing cached) polls on from the meter states kept in the outbox
                # file, without Cosmos; what it read waits in the outbox with the rest.
                cold = await anyio.run_process(
                    [*GATEWAY, "poll", "--config", str(config_path), "--meter", meters[0], "--forward-wait", "1"],
                    env=_env(), check=False)
                cold_out = cold.stdout.decode()
                assert cold.returncode == 0, cold_out + cold.stderr.decode()
                assert "FAILED" not in cold_out, cold_out
                assert re.search(r"^queued: \d+ events pending .*`gateway run` forwards them$", cold_out, re.M)

                os.kill(server.pid, signal.SIGCONT)
                frozen = False
                before = dict(log.polls)
                await log.until(lambda: all(log.polls[m] >= before[m] + 2 for m in meters))
                run.send_signal(signal.SIGTERM)
                await log.rest()
                assert await run.wait() == 0
                messages = log.messages
                assert messages[-1] == "stopped: events in the outbox, forwarder stopped, store closed"
                assert any(m.startswith("outbox forwarder stopped: ") for m in messages)
                # After the cold poll by another process, `gateway run` did not trust its cached
                # state of that meter: it was loaded again (Cosmos plus the meter's pending events).
                reloaded = f"meter {meters[0]}: polled by another process since our last poll; reloading its state"
                assert reloaded in messages

                # The final drain, with one more poll (it still has to load its state from Cosmos).
                final = await anyio.run_process(
                    [*GATEWAY, "poll", "--config", str(config_path), "--meter", meters[1]], env=_env(), check=False)
                final_out = final.stdout.decode()
                assert final.returncode == 0, final_out + final.stderr.decode()
                assert "forwarded: the outbox is empty, everything is in Cosmos DB" in final_out
                report = await anyio.run_process([*GATEWAY, "status", "--config", str(config_path), "--json"])
                rows = json.loads(report.stdout)
                assert {r["meter_id"]: (r["outbox_depth"], r["outbox_total_depth"], r["outbox_full"],
                                        r["outbox_poisoned"], r["consecutive_failures"]) for r in rows} == {
                    m: (0, 0, False, 0, 0) for m in meters}
            polls = Counter(log.polls)
            polls[meters[0]] += 1  # the cold poll during the outage
            polls[meters[1]] += 1
            everything = "\n".join([*messages, cold_out, final_out, cold.stderr.decode(), final.stderr.decode()])
            assert all(secret not in everything for secret in (*SECRETS.values(), EMULATOR_KEY))

            async with await CosmosEventStore.open(cosmos_config) as cosmos:
                streams = await _cosmos_streams(cosmos)
            async with await Outbox.open(outbox_path, 64 * 1024 * 1024) as outbox:
                state = await outbox.state()
            assert (state.depth, state.poisoned) == (0, 0)

            # Per stream: versions 1..n without a gap; no event id anywhere twice.
            all_ids = [e.event_id for events in streams.values() for e in events]
            assert len(all_ids) == len(set(all_ids))
            by_meter: dict[str, list[tuple[str, int, object]]] = defaultdict(list)
            for stream, events in streams.items():
                assert [e.version for e in events] == list(range(1, len(events) + 1)), stream
                for recorded in events:
                    event = decode(recorded)
                    by_meter[event.meter_id].append((stream, recorded.version, event))
            assert set(by_meter) == set(meters)

            for meter_id in meters:
                meter = simulator.meters[meter_id]
                mine = by_meter[meter_id]
                registered = [e for _, _, e in mine if isinstance(e, MeterRegistered)]
                assert len(registered) == 1 and registered[0].serial == meter.config.serial

                # Registers: one RegisterRead per register per successful poll, each once, in the
                # stream of its year, in the order read, with the meter's value and unit.
                reads = [(s, v, e) for s, v, e in mine if isinstance(e, RegisterRead)]
                per_obis = Counter(e.obis for _, _, e in reads)
                assert per_obis == {obis: polls[meter_id] for obis in REGISTERS}, (meter_id, per_obis, polls)
                assert len({(e.obis, e.capture_time) for _, _, e in reads}) == len(reads)
                for stream, _, event in reads:
                    assert stream == f"Meter:{meter_id}:{event.capture_time.year}"
                    # Real time: the value is the meter's at the moment it answered, which the
                    # capture time (whole seconds, drifting meter clock) pins down to a few seconds.
                    around = [expected_register(meter, event.obis, event.capture_time + timedelta(seconds=k / 10))
                              for k in range(-50, 51)]
                    assert event.unit == UNITS[around[0].unit]
                    assert min(w.value for w in around) <= event.value <= max(w.value for w in around), event
                for obis in REGISTERS:
                    in_order = [(s, v, e.capture_time) for s, v, e in reads if e.obis == obis]
                    assert sorted(in_order) == sorted(in_order, key=lambda r: (r[0], r[2]))

                # Load profile: every interval the meter held from a day before the first poll to
                # the last poll, once, in its year's stream, in time order.
                rows = [(s, v, row) for s, v, e in mine if isinstance(e, IntervalsRecorded) for row in e.rows]
                ends = [row.end_time for _, _, row in rows]
                assert len(ends) == len(set(ends))
                assert ends == sorted(ends)  # streams sort by year, versions follow the reads
                read_times = sorted(e.metadata.recorded_at for e in streams_events(streams, meter_id))
                first, last = read_times[0], read_times[-1]
                expected_rows = {
                    r.clock.astimezone(timezone.utc): r
                    for r in expected_profile_rows(meter, first - timedelta(days=1), last, now=last)
                }
                assert set(ends) == set(expected_rows), meter_id
                scaler = meter.config.profile.energy_scaler
                for stream, _, row in rows:
                    assert stream == f"Meter:{meter_id}:{row.end_time.year}"
                    want_wh = Decimal(expected_rows[row.end_time].energy_import).scaleb(scaler)
                    assert row.values["1.0.1.8.0.255"] == want_wh
    finally:
        if frozen:
            os.kill(server.pid, signal.SIGCONT)
        if run is not None and run.returncode is None:
            run.kill()
            await run.wait()
        server.stop()


def streams_events(streams: dict[str, list[RecordedEvent]], meter_id: str) -> list[RecordedEvent]:
    return [e for stream, events in streams.items() if stream.startswith(f"Meter:{meter_id}:") for e in events]


async def test_the_outbox_view_shows_streams_as_they_will_be_once_drained(
    cosmos_server: CosmosServer, tmp_path: Path  # noqa: F811 (the fixture imported above)
) -> None:
    """What a cold meter state is folded from: Cosmos's stream, then its pending outbox events with
    versions continuing after the far head; an event both pending and already in Cosmos (a lost
    acknowledgement) counts once; draining changes nothing a reader sees."""
    stream, only_pending = "Meter:view-1:2026", "Meter:view-2:2026"
    async with (
        await CosmosEventStore.open(cosmos_server.config(), create_if_missing=True) as far,
        await Outbox.open(tmp_path / "outbox.sqlite3", 10_000_000) as outbox,
    ):
        view = OutboxView(far, outbox)
        await far.append(stream, [reading("a")], 0)
        await outbox.put(stream, [reading("b"), reading("c"), reading("d")])
        # A forwarder appended "b" at the head it had recorded, and its acknowledgement was lost.
        await outbox.record_heads({stream: 1})
        await far.append(stream, [reading("b")], 1)
        await outbox.put(only_pending, [reading("x"), reading("y")])
        view.note_put(only_pending)

        async def seen() -> tuple[object, ...]:
            return (
                await view.head(stream), [(e.event_id, e.version) for e in await view.load(stream)],
                [(e.event_id, e.version) for e in await view.load(stream, 3)],
                await view.head(only_pending), [(e.event_id, e.version) for e in await view.load(only_pending)],
                [(i.stream_id, i.head) for i in await view.list_streams("Meter:view-")],
            )

        want = (
            4, [("a", 1), ("b", 2), ("c", 3), ("d", 4)], [("c", 3), ("d", 4)],
            2, [("x", 1), ("y", 2)], [(stream, 4), (only_pending, 2)],
        )
        assert await seen() == want
        with pytest.raises(StreamNotFound):
            await view.load("Meter:view-3:2026")
        assert await view.head("Meter:view-3:2026") == 0

        await Forwarder(outbox, far).drain_once()
        assert (await outbox.state()).depth == 0
        assert await seen() == want
        assert [e.event_id for e in await far.load(stream)] == ["a", "b", "c", "d"]
