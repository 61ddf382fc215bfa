"""The public contract: which domain events become which integration events, and their data.

``integration_events(recorded, gateway=...)`` maps one stored event to the integration events it
publishes (none, usually one). It is pure: a publisher reads the store's feed, maps each event and
sends ``event.to_json()``; the same stored event always maps to the same documents, byte for byte.

The contract types (README "Integration events"; one JSON Schema file each, ``schemas/``):

====================  =========================================  =================================
contract type         from                                        ``time``
====================  =========================================  =================================
meter.registered.v1   MeterRegistered (make, model, serial, fw)   first contact
meter.reading.v1      RegisterRead                                capture time
meter.intervals.v1    IntervalsRecorded (a batch of rows)         end of the batch's last interval
meter.clock.v1        ClockChecked, ClockDriftDetected            gateway time of the check
meter.clocksync.v1    ClockSynchronised, ClockSyncRefused         gateway time of the drifted read
meter.alarm.v1        MeterEventLogged, SuspectReadingFlagged     event time / capture time
meter.gap.v1          ReadingGapDetected                          end of the gap
====================  =========================================  =================================

Not published (``NOT_PUBLISHED`` says why): ``YearStreamOpened`` (stream bookkeeping: the state it
carries repeats facts already published) and the events of assignment streams, ``MeterAssigned``
and ``PersonalDataErased``: personal data never leaves the gateway, and their types are never even
decoded here. A type in neither table raises ``UnknownEventType`` (a test keeps every registered
type in one of them, so a new domain event needs a decision).

Ids: ``<domain event id>:<contract type>``. The domain id is deterministic (uuid5 of the fact), so a
re-publish of the same fact (after a crash, ``--from-start``, from the edge or from the cloud) has
the same id: subscribers deduplicate on it. The contract type keeps the ids of two documents of one
fact apart (a future ``meter.reading.v2`` published beside v1).

Values: every measured value is a plain decimal string (``"42365130"``, ``"0.0000001"``, never
exponent notation) beside its unit; every time is ISO-8601 UTC with ``Z``.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final, Mapping

from gateway.domain.events import (
    ClockChecked,
    ClockDriftDetected,
    ClockSynchronised,
    ClockSyncRefused,
    DomainEvent,
    IntervalsRecorded,
    MeterEventLogged,
    MeterRegistered,
    ReadingGapDetected,
    RegisterRead,
    SuspectReadingFlagged,
    UnknownEventType,
)
from gateway.domain.mapper import decode
from gateway.integration.envelope import IntegrationEvent
from gateway.store.codec import decimal_text, iso_utc, plain_decimal
from gateway.store.model import RecordedEvent

REGISTERED: Final[str] = "meter.registered.v1"
READING: Final[str] = "meter.reading.v1"
INTERVALS: Final[str] = "meter.intervals.v1"
CLOCK: Final[str] = "meter.clock.v1"
CLOCK_SYNC: Final[str] = "meter.clocksync.v1"
ALARM: Final[str] = "meter.alarm.v1"
GAP: Final[str] = "meter.gap.v1"

CONTRACT_TYPES: Final[tuple[str, ...]] = (REGISTERED, READING, INTERVALS, CLOCK, CLOCK_SYNC, ALARM, GAP)
"""Every contract type published today; each has a schema file of the same name."""

PUBLISHED: Final[Mapping[str, str]] = MappingProxyType({
    MeterRegistered.TYPE: REGISTERED,
    RegisterRead.TYPE: READING,
    IntervalsRecorded.TYPE: INTERVALS,
    ClockChecked.TYPE: CLOCK,
    ClockDriftDetected.TYPE: CLOCK,
    ClockSynchronised.TYPE: CLOCK_SYNC,
    ClockSyncRefused.TYPE: CLOCK_SYNC,
    MeterEventLogged.TYPE: ALARM,
    SuspectReadingFlagged.TYPE: ALARM,
    ReadingGapDetected.TYPE: GAP,
})
"""Domain event type -> the contract type it is published as."""

# Names, not classes: the personal event types are recognised by name and never decoded here.
NOT_PUBLISHED: Final[Mapping[str, str]] = MappingProxyType({
    "YearStreamOpened": "stream bookkeeping: its carry-over repeats facts already published",
    "MeterAssigned": "personal data (a customer's assignment) never leaves the gateway",
    "PersonalDataErased": "personal data: the erasure of an assignment is not published either",
})
"""Domain event types that map to no integration event, and why."""


def integration_events(recorded: RecordedEvent, *, gateway: str) -> list[IntegrationEvent]:
    """The integration events ``recorded`` publishes as gateway ``gateway`` (``source``), in order.

    Raises ``gateway.domain.events.EventError`` (``UnknownEventType``, ``UnsupportedSchemaVersion``,
    ``MalformedEventData``) for a stored event this code cannot read: the publisher decides whether
    to skip it, as the projection engine does. Types in ``NOT_PUBLISHED`` are not decoded at all.
    ``InvalidIntegrationEvent``: ``gateway`` is not an id (letters, digits, '.', '_', '-'; checked by
    the fleet config already).
    """
    contract_type = PUBLISHED.get(recorded.type)
    if contract_type is None:
        if recorded.type in NOT_PUBLISHED:
            return []
        raise UnknownEventType(recorded.type, recorded.stream_id, recorded.version)
    event = decode(recorded)
    time, data = _DATA[type(event)](event)
    return [IntegrationEvent(
        contract_type=contract_type,
        id=integration_id(recorded.event_id, contract_type),
        gateway=gateway,
        meter=event.meter_id,
        time=time,
        data={"meterId": event.meter_id, **data},
    )]


def integration_id(domain_event_id: str, contract_type: str) -> str:
    """The id of the ``contract_type`` document of the stored event ``domain_event_id``."""
    return f"{domain_event_id}:{contract_type}"


# -- data of each contract type: (CloudEvents time, data without meterId) --

Data = tuple[datetime, dict[str, Any]]


def _number(value: Decimal) -> str:
    return decimal_text(plain_decimal(value))


def _measure(value: Decimal, unit: str) -> dict[str, str]:
    return {"value": _number(value), "unit": unit}


def _registered(event: MeterRegistered) -> Data:
    return event.first_contact, {
        "make": event.make, "model": event.model, "serial": event.serial, "firmware": event.firmware,
        "firstContact": iso_utc(event.first_contact),
    }


def _reading(event: RegisterRead) -> Data:
    return event.capture_time, {
        "obis": event.obis, "quantity": event.quantity, "value": _number(event.value), "unit": event.unit,
        "captureTime": iso_utc(event.capture_time), "readTime": iso_utc(event.read_time),
    }


def _intervals(event: IntervalsRecorded) -> Data:
    rows = sorted(event.rows, key=lambda row: row.end_time)
    return event.last_end, {
        "profileObis": event.profile_obis,
        "capturePeriodS": event.capture_period_s,
        "firstEnd": iso_utc(event.first_end),
        "lastEnd": iso_utc(event.last_end),
        "intervals": [
            {"endTime": iso_utc(row.end_time), "status": row.status,
             "values": {obis: _measure(value, row.units[obis]) for obis, value in row.values.items()}}
            for row in rows
        ],
    }


def _clock_checked(event: ClockChecked) -> Data:
    return event.gateway_time, {
        "meterTime": iso_utc(event.meter_time), "gatewayTime": iso_utc(event.gateway_time),
        "offset": _measure(event.offset_s, "s"), "driftDetected": False,
    }


def _clock_drift(event: ClockDriftDetected) -> Data:
    return event.gateway_time, {
        "meterTime": iso_utc(event.meter_time), "gatewayTime": iso_utc(event.gateway_time),
        "offset": _measure(event.offset_s, "s"), "driftDetected": True,
        "driftThreshold": _measure(event.threshold_s, "s"),
    }


def _clock_synchronised(event: ClockSynchronised) -> Data:
    return event.gateway_time, {
        "outcome": "synchronised", "method": event.method,
        "gatewayTime": iso_utc(event.gateway_time), "meterTime": iso_utc(event.meter_time_before),
        "offset": _measure(event.offset_before_s, "s"),
        "meterTimeAfter": iso_utc(event.meter_time_after), "offsetAfter": _measure(event.offset_after_s, "s"),
        "verified": event.verified,
    }


def _clock_sync_refused(event: ClockSyncRefused) -> Data:
    return event.gateway_time, {
        "outcome": "refused", "method": event.method,
        "gatewayTime": iso_utc(event.gateway_time), "meterTime": iso_utc(event.meter_time),
        "offset": _measure(event.offset_s, "s"), "maxStep": _measure(event.max_step_s, "s"), "reason": event.reason,
    }


def _meter_event(event: MeterEventLogged) -> Data:
    return event.event_time, {
        "kind": "meterEvent", "logObis": event.log_obis, "eventTime": iso_utc(event.event_time),
        "code": event.code, "meaning": event.meaning,
    }


def _suspect(event: SuspectReadingFlagged) -> Data:
    # The domain event keeps the value as the meter sent it but not its unit (a unit mismatch is
    # one of the reasons a reading is suspect), so the alarm carries the value and the reason only.
    return event.capture_time, {
        "kind": "suspectReading", "obis": event.obis, "captureTime": iso_utc(event.capture_time),
        "value": _number(event.value), "reason": event.reason,
    }


def _gap(event: ReadingGapDetected) -> Data:
    return event.gap_end, {
        "profileObis": event.profile_obis, "gapStart": iso_utc(event.gap_start),
        "gapEnd": iso_utc(event.gap_end), "reason": event.reason,
    }


_DATA: Final[Mapping[type[DomainEvent], Callable[[Any], Data]]] = {
    MeterRegistered: _registered,
    RegisterRead: _reading,
    IntervalsRecorded: _intervals,
    ClockChecked: _clock_checked,
    ClockDriftDetected: _clock_drift,
    ClockSynchronised: _clock_synchronised,
    ClockSyncRefused: _clock_sync_refused,
    MeterEventLogged: _meter_event,
    SuspectReadingFlagged: _suspect,
    ReadingGapDetected: _gap,
}

__all__ = [
    "ALARM", "CLOCK", "CLOCK_SYNC", "CONTRACT_TYPES", "GAP", "INTERVALS", "NOT_PUBLISHED", "PUBLISHED", "READING", "REGISTERED",
    "integration_events", "integration_id",
]
