"""Integration events of a real poll: the simulator polled into SQLite, the feed read with
``read_all`` and mapped as the publisher maps it.

Every stored event of a published type gives one document, every document validates against its
schemas, and the fleet's polls give every contract type: registrations, register reads, load
profiles, clock checks with drift (the simulated clocks are up to 20 s off; the threshold is 5 s),
event-log entries, and a load-profile gap (rows the meter lost, a fault of the simulator).
"""
from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from drivers.simulator import Framing, MeterFaults, MeterSimulator, SimulatorConfig
from drivers.simulator.fleet import fleet
from gateway.config import parse_config
from gateway.domain.events import IntervalsRecorded, RegisterRead
from gateway.domain.mapper import decode
from gateway.domain.poll_result import POLL_STEPS
from gateway.integration import CONTRACT_TYPES, PUBLISHED, integration_events
from gateway.integration.contract import CLOCK_SYNC
from gateway.wiring import open_poller
from tests.backends import sqlite_events
from tests.pipeline import SECRETS, fleet_toml

from . import check_document

pytestmark = pytest.mark.anyio

START = datetime(2026, 3, 10, 11, 50, tzinfo=timezone.utc)
STEPS = set(POLL_STEPS)  # identity, clock, registers, load profile, event log


@pytest.mark.slow
async def test_every_event_of_a_polled_fleet_is_published_as_a_valid_document(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    async with MeterSimulator(SimulatorConfig(meters=fleet(3), framing=Framing.BOTH, start=START, speed=0.0)) as sim:
        config = parse_config(fleet_toml(sim, str(db), absent=False), base_dir=tmp_path)
        lost = "sim-0001"
        async with open_poller(config, now=sim.clock.now, environ=SECRETS) as poller:
            for meter in sorted(sim.meters):
                first = await poller.poll(meter, STEPS)
                assert first.ok, first.describe_error()
            # One meter loses an hour of rows (a power cut it did not record): a gap is detected.
            sim.set_faults(lost, MeterFaults(lost_profile=(START + timedelta(seconds=1), START + timedelta(hours=1))))
            sim.clock.advance(timedelta(hours=2))
            for meter in sorted(sim.meters):
                again = await poller.poll(meter, STEPS)
                assert again.ok, again.describe_error()

    recorded = await sqlite_events(db)
    documents = []
    for event in recorded:
        published = integration_events(event, gateway=config.gateway_id)
        assert len(published) == (1 if event.type in PUBLISHED else 0), event.type
        for integration in published:
            document = check_document(integration.to_json())
            domain = decode(event)
            assert document["subject"] == domain.meter_id and document["source"] == f"/gateways/{config.gateway_id}"
            if isinstance(domain, RegisterRead):
                assert (Decimal(document["data"]["value"]), document["data"]["unit"]) == (domain.value, domain.unit)
            if isinstance(domain, IntervalsRecorded):
                assert len(document["data"]["intervals"]) == len(domain.rows)
                assert [Decimal(v["value"]) for row in document["data"]["intervals"] for v in row["values"].values()] \
                    == [v for row in sorted(domain.rows, key=lambda r: r.end_time) for v in row.values.values()]
            documents.append(document)

    kinds = Counter(d["dataschema"].removeprefix("urn:meter-gateway:schema:") for d in documents)
    # [clock_sync] is off by default, so nothing is synchronised here (tests/pipeline/test_clock_sync*.py).
    assert set(kinds) == set(CONTRACT_TYPES) - {CLOCK_SYNC}, kinds
    assert any(d["data"].get("driftDetected") for d in documents)
    gaps = [d for d in documents if d["type"].endswith(".gap.v1")]
    assert {d["subject"] for d in gaps} == {lost}
    alarms = Counter(d["data"]["kind"] for d in documents if d["type"].endswith(".alarm.v1"))
    assert alarms["meterEvent"] > 0, alarms
    assert len({d["id"] for d in documents}) == len(documents)
    assert all(json.loads(json.dumps(d)) == d for d in documents)
