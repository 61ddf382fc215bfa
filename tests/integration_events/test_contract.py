"""The mapping from stored domain events to integration events (``gateway.integration.contract``).

One domain event of every published type (with values that ``str()`` would write in exponent
notation) is stored in a real SQLite store and read back through ``read_all``, as the publisher
reads it; every document must validate against the envelope schema and its type's schema, carry
plain decimals and ``Z`` times, and be the same bytes on every mapping.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.events import (
    ClockChecked,
    ClockDriftDetected,
    ClockSynchronised,
    ClockSyncRefused,
    DomainEvent,
    IntervalRow,
    IntervalsRecorded,
    MalformedEventData,
    MeterEventLogged,
    MeterRegistered,
    ReadingGapDetected,
    RegisterRead,
    SuspectReadingFlagged,
    UnknownEventType,
    YearStreamOpened,
    CarryOver,
)
from gateway.domain.mapper import EVENT_TYPES, to_new_event
from gateway.integration import (
    CONTENT_TYPE,
    CONTRACT_TYPES,
    NOT_PUBLISHED,
    PUBLISHED,
    IntegrationEvent,
    InvalidIntegrationEvent,
    integration_events,
)
from gateway.integration.contract import integration_id
from gateway.store.model import RecordedEvent
from tests.builders import EXPORT, IMPORT, PROFILE, T0, metadata

from . import check_document, plain_decimal_text, stored

pytestmark = pytest.mark.anyio

GATEWAY = "gw-north-01"
METER = "M1"
CHANNEL = "1.0.1.29.0.255"
LOG = "0.0.99.98.0.255"


def one_of_each() -> list[DomainEvent]:
    """One domain event of every published type; decimals that str() writes as 4.236513E+7 or 1E-7."""
    later = T0 + timedelta(minutes=15)
    return [
        MeterRegistered(METER, "kamstrup", "omnipower", "57000001", "1.2.3", T0),
        RegisterRead(METER, IMPORT, "active_energy_import", Decimal("4.236513E+7"), "Wh", T0, T0 + timedelta(seconds=3)),
        RegisterRead(METER, "1.0.32.7.0.255", "voltage_l1", Decimal("230.1"), "V", T0, T0),
        IntervalsRecorded(METER, PROFILE, 900, (
            IntervalRow(later, {CHANNEL: Decimal("1E-7"), EXPORT: Decimal("12E+3")}, {CHANNEL: "Wh", EXPORT: "Wh"}, 0),
            IntervalRow(T0, {CHANNEL: Decimal("0.25")}, {CHANNEL: "Wh"}, 0x80),
        )),
        ClockChecked(METER, T0 + timedelta(seconds=7.5), T0, Decimal("7.5")),
        ClockDriftDetected(METER, T0 + timedelta(seconds=7.5), T0, Decimal("7.5"), Decimal("5")),
        ClockChecked(METER, T0 - timedelta(seconds=1), later, Decimal("-1E+0")),
        ClockSynchronised(METER, "set", T0, T0 + timedelta(seconds=90), Decimal("90"), later, later + timedelta(seconds=1),
                          Decimal("1.0E+0"), True, deviation_min=-60, status_flags=("daylight_saving_active",)),
        ClockSyncRefused(METER, "set", later, later + timedelta(hours=2), Decimal("7.2E+3"), Decimal("300"),
                         "drift 7200 s exceeds max_step_s 300"),
        MeterEventLogged(METER, LOG, T0 - timedelta(hours=1), 1, "power down"),
        SuspectReadingFlagged(METER, IMPORT, "counter went backwards", Decimal("1.5E+2"), T0),
        ReadingGapDetected(METER, PROFILE, T0 - timedelta(hours=2), T0 - timedelta(hours=1), "meter has no rows"),
    ]


@pytest.fixture
async def recorded(tmp_path: Path) -> list[RecordedEvent]:
    return await stored(tmp_path / "events.db", {f"Meter:{METER}:2026": one_of_each()})


async def test_every_published_type_maps_to_one_valid_document(recorded: list[RecordedEvent]) -> None:
    assert {r.type for r in recorded} == set(PUBLISHED)  # the fixture covers every published type
    seen = set()
    for event in recorded:
        (published,) = integration_events(event, gateway=GATEWAY)
        document = check_document(published.to_json())
        assert document["specversion"] == "1.0" and document["datacontenttype"] == "application/json"
        assert document["source"] == f"/gateways/{GATEWAY}"
        assert document["subject"] == METER == document["data"]["meterId"]
        assert document["id"] == f"{event.event_id}:{PUBLISHED[event.type]}"
        assert document["dataschema"] == f"urn:meter-gateway:schema:{PUBLISHED[event.type]}"
        assert document["type"] == f"com.metergateway.{PUBLISHED[event.type]}"
        seen.add(published.contract_type)
    assert seen == set(CONTRACT_TYPES)


async def test_the_documents_say_what_the_domain_events_say(recorded: list[RecordedEvent]) -> None:
    docs = {}
    for event in recorded:
        for published in integration_events(event, gateway=GATEWAY):
            docs.setdefault(event.type, []).append(json.loads(published.to_json()))

    energy, voltage = docs["RegisterRead"]
    assert energy["time"] == "2026-03-01T12:00:00Z"
    assert energy["data"] == {
        "meterId": METER, "obis": IMPORT, "quantity": "active_energy_import", "value": "42365130",
        "unit": "Wh", "captureTime": "2026-03-01T12:00:00Z", "readTime": "2026-03-01T12:00:03Z",
    }
    assert (voltage["data"]["value"], voltage["data"]["unit"]) == ("230.1", "V")

    (intervals,) = docs["IntervalsRecorded"]
    assert intervals["time"] == "2026-03-01T12:15:00Z"  # the end of the batch's last interval
    assert intervals["data"]["capturePeriodS"] == 900
    assert (intervals["data"]["firstEnd"], intervals["data"]["lastEnd"]) == ("2026-03-01T12:00:00Z", "2026-03-01T12:15:00Z")
    assert intervals["data"]["intervals"] == [  # in end-time order, whatever the stored order
        {"endTime": "2026-03-01T12:00:00Z", "status": 128, "values": {CHANNEL: {"value": "0.25", "unit": "Wh"}}},
        {"endTime": "2026-03-01T12:15:00Z", "status": 0,
         "values": {CHANNEL: {"value": "0.0000001", "unit": "Wh"}, EXPORT: {"value": "12000", "unit": "Wh"}}},
    ]

    checked, later = docs["ClockChecked"]
    assert checked["data"]["offset"] == {"value": "7.5", "unit": "s"} and checked["data"]["driftDetected"] is False
    assert "driftThreshold" not in checked["data"]
    assert later["data"]["offset"] == {"value": "-1", "unit": "s"}
    (drift,) = docs["ClockDriftDetected"]
    assert drift["data"]["driftDetected"] is True and drift["data"]["driftThreshold"] == {"value": "5", "unit": "s"}
    assert drift["id"] != checked["id"] and drift["time"] == checked["time"] == "2026-03-01T12:00:00Z"

    (synced,) = docs["ClockSynchronised"]
    assert synced["time"] == "2026-03-01T12:00:00Z"
    assert synced["data"] == {
        "meterId": METER, "outcome": "synchronised", "method": "set", "gatewayTime": "2026-03-01T12:00:00Z",
        "meterTime": "2026-03-01T12:01:30Z", "offset": {"value": "90", "unit": "s"},
        "meterTimeAfter": "2026-03-01T12:15:01Z", "offsetAfter": {"value": "1.0", "unit": "s"}, "verified": True,
    }
    (refused,) = docs["ClockSyncRefused"]
    assert refused["data"] == {
        "meterId": METER, "outcome": "refused", "method": "set", "gatewayTime": "2026-03-01T12:15:00Z",
        "meterTime": "2026-03-01T14:15:00Z", "offset": {"value": "7200", "unit": "s"},
        "maxStep": {"value": "300", "unit": "s"}, "reason": "drift 7200 s exceeds max_step_s 300",
    }
    assert refused["id"] != synced["id"] and refused["type"] == synced["type"] == "com.metergateway.meter.clocksync.v1"

    (logged,) = docs["MeterEventLogged"]
    assert logged["data"] == {"meterId": METER, "kind": "meterEvent", "logObis": LOG,
                              "eventTime": "2026-03-01T11:00:00Z", "code": 1, "meaning": "power down"}
    (suspect,) = docs["SuspectReadingFlagged"]
    assert suspect["data"] == {"meterId": METER, "kind": "suspectReading", "obis": IMPORT,
                               "captureTime": "2026-03-01T12:00:00Z", "value": "150",
                               "reason": "counter went backwards"}
    (gap,) = docs["ReadingGapDetected"]
    assert gap["time"] == "2026-03-01T11:00:00Z"
    assert (gap["data"]["gapStart"], gap["data"]["gapEnd"]) == ("2026-03-01T10:00:00Z", "2026-03-01T11:00:00Z")
    (registered,) = docs["MeterRegistered"]
    assert registered["data"] == {"meterId": METER, "make": "kamstrup", "model": "omnipower", "serial": "57000001",
                                  "firmware": "1.2.3", "firstContact": "2026-03-01T12:00:00Z"}


async def test_a_republish_is_the_same_document(recorded: list[RecordedEvent], tmp_path: Path) -> None:
    """Mapping twice, or mapping the same facts stored again in another store, gives the same ids
    and the same bytes: subscribers can deduplicate on ``id``."""
    first = [e.to_json() for r in recorded for e in integration_events(r, gateway=GATEWAY)]
    second = [e.to_json() for r in recorded for e in integration_events(r, gateway=GATEWAY)]
    elsewhere = await stored(tmp_path / "other.db", {f"Meter:{METER}:2026": one_of_each()})
    third = [e.to_json() for r in elsewhere for e in integration_events(r, gateway=GATEWAY)]
    assert first == second == third
    ids = [json.loads(doc)["id"] for doc in first]
    assert len(set(ids)) == len(ids)
    # The id is the domain event's (deterministic, uuid5 of the fact) and the contract type.
    assert ids == [integration_id(domain.event_id(), PUBLISHED[domain.TYPE]) for domain in one_of_each()]


def test_every_registered_domain_type_is_published_or_deliberately_not() -> None:
    assert set(PUBLISHED).isdisjoint(NOT_PUBLISHED)
    assert set(PUBLISHED) | set(NOT_PUBLISHED) == set(EVENT_TYPES)
    assert set(PUBLISHED.values()) == set(CONTRACT_TYPES)


async def test_year_stream_bookkeeping_maps_to_nothing(tmp_path: Path) -> None:
    opened = YearStreamOpened(METER, 2027, 12, CarryOver(None, {}, {}, None, None))
    (event,) = await stored(tmp_path / "events.db", {f"Meter:{METER}:2027": [opened]})
    assert integration_events(event, gateway=GATEWAY) == []


def _recorded(domain: DomainEvent, **changes: object) -> RecordedEvent:
    new = to_new_event(domain, metadata())
    fields = dict(stream_id=f"Meter:{METER}:2026", version=1, position=1, event_id=new.event_id, type=new.type,
                  schema_version=new.schema_version, data=new.data, metadata=new.metadata)
    fields.update(changes)
    return RecordedEvent(**fields)  # type: ignore[arg-type]


def test_an_event_this_code_cannot_read_is_a_typed_error() -> None:
    read = one_of_each()[1]
    with pytest.raises(UnknownEventType) as unknown:
        integration_events(_recorded(read, type="MeterExploded"), gateway=GATEWAY)
    assert unknown.value.stream_id == f"Meter:{METER}:2026"
    with pytest.raises(MalformedEventData):
        integration_events(_recorded(read, data={"meterId": METER, "obis": "nonsense"}), gateway=GATEWAY)


def test_a_gateway_id_outside_the_id_alphabet_is_refused() -> None:
    """``source`` and the topic levels are built from it: '/', '+', '#' or spaces must not get in."""
    read = _recorded(one_of_each()[1])
    for bad in ("gw/1", "gw+", "#", "", "gw 1"):
        with pytest.raises(InvalidIntegrationEvent):
            integration_events(read, gateway=bad)


def test_the_envelope_and_its_topic_fields() -> None:
    (event,) = integration_events(_recorded(one_of_each()[1]), gateway=GATEWAY)
    assert isinstance(event, IntegrationEvent)
    assert (event.specversion, event.type, event.source, event.subject, event.datacontenttype, event.dataschema) == (
        "1.0", "com.metergateway.meter.reading.v1", f"/gateways/{GATEWAY}", METER, "application/json",
        "urn:meter-gateway:schema:meter.reading.v1")
    assert event.topic_fields() == {"gateway": GATEWAY, "meter": METER, "type": "reading", "version": "v1",
                                    "contract_type": "meter.reading.v1"}
    assert "meters/{gateway}/{meter}/{type}".format(**event.topic_fields()) == f"meters/{GATEWAY}/{METER}/reading"
    assert CONTENT_TYPE == "application/cloudevents+json; charset=utf-8"
    with pytest.raises(InvalidIntegrationEvent):
        IntegrationEvent("meter.reading.v1", "x", GATEWAY, METER, datetime(2026, 1, 1), {})  # naive time
    with pytest.raises(InvalidIntegrationEvent):
        IntegrationEvent("reading", "x", GATEWAY, METER, T0, {})


_decimals = st.decimals(allow_nan=False, allow_infinity=False, places=None).filter(
    lambda d: abs(d.adjusted()) < 60)


@settings(max_examples=60, deadline=None)
@given(value=_decimals, offset=_decimals, seconds=st.integers(0, 10**9), micros=st.integers(0, 999_999))
def test_any_value_and_time_is_published_plain_and_in_utc(
        value: Decimal, offset: Decimal, seconds: int, micros: int) -> None:
    at = datetime(1990, 1, 1, tzinfo=timezone(timedelta(hours=2))) + timedelta(seconds=seconds, microseconds=micros)
    for domain in (RegisterRead(METER, IMPORT, "active_energy_import", value, "Wh", at, at),
                   ClockDriftDetected(METER, at, at, offset, abs(offset)),
                   SuspectReadingFlagged(METER, IMPORT, "why", value, at)):
        (event,) = integration_events(_recorded(domain), gateway=GATEWAY)
        document = check_document(event.to_json())
        data = document["data"]
        text = data["value"] if "value" in data else data["offset"]["value"]
        assert plain_decimal_text(text) and Decimal(text) == (value if "value" in data else offset)
        assert datetime.fromisoformat(document["time"]) == at
