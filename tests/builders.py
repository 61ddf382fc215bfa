"""Builders of test events: the one place where tests write ``NewEvent`` and ``EventMetadata``.

* ``new_event``: any event; a fresh id unless one is given, gateway ``gw-test``, recorded at ``T0``.
* ``event`` / ``events``: events with fresh ids (an optional id prefix) numbered by ``{"n": n}`` in
  their data: the store contract and the backend tests.
* ``reading`` / ``readings``: register-read events with ids the caller chooses (``stream/n`` for
  ``readings``) and ``{"obis", "value", ...}`` data: outbox, writer, pipeline and CLI tests.
* ``new_stream`` / ``ids``: a stream id of its own per test, the ids of a list of events.
* ``register_read`` / ``fold``: simple domain events of meter ``M1`` and folding them into a state.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from gateway.domain.events import DomainEvent, RegisterRead
from gateway.domain.meter import MeterState
from gateway.store.model import EventMetadata, NewEvent, RecordedEvent

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
GATEWAY_ID = "gw-test"
IMPORT = "1.0.1.8.0.255"  # active energy import register
EXPORT = "1.0.2.8.0.255"  # active energy export register
PROFILE = "1.0.99.1.0.255"  # load profile


def metadata(recorded_at: datetime = T0, gateway_id: str = GATEWAY_ID) -> EventMetadata:
    return EventMetadata(gateway_id=gateway_id, recorded_at=recorded_at)


def new_event(event_id: str | None = None, *, type: str = "RegisterRead",
              data: Mapping[str, Any] | None = None, recorded_at: datetime = T0,
              gateway_id: str = GATEWAY_ID, schema_version: int = 1) -> NewEvent:
    return NewEvent(
        event_id=uuid.uuid4().hex if event_id is None else event_id,
        type=type,
        schema_version=schema_version,
        data=dict(data or {}),
        metadata=metadata(recorded_at, gateway_id),
    )


def event(n: int = 0, *, id_prefix: str = "", recorded_at: datetime = T0, **data: Any) -> NewEvent:
    """A ``RegisterRead`` with a fresh id (after ``id_prefix``) and data ``{"n": n, **data}``."""
    return new_event(f"{id_prefix}{uuid.uuid4().hex}", data={"n": n, **data}, recorded_at=recorded_at)


def events(count: int, *, id_prefix: str = "") -> list[NewEvent]:
    """``count`` events with fresh ids, numbered 0 to count - 1."""
    return [event(n, id_prefix=id_prefix) for n in range(count)]


def reading(event_id: str, *, value: str = "1.5", type_: str = "RegisterRead", pad: int = 0,
            obis: str = IMPORT, recorded_at: datetime = T0, **data: Any) -> NewEvent:
    """An event with the given id and data ``{"obis", "value", **data}`` (plus ``pad`` x's)."""
    payload: dict[str, Any] = {"obis": obis, "value": value, **data}
    if pad:
        payload["pad"] = "x" * pad
    return new_event(event_id, type=type_, data=payload, recorded_at=recorded_at)


def readings(stream: str, first: int, count: int, *, pad: int = 0) -> list[NewEvent]:
    """Events ``stream/first`` .. ``stream/first+count-1``, event n carrying the value 1000 + n Wh."""
    return [reading(f"{stream}/{n}", value=str(1000 + n), unit="Wh", pad=pad)
            for n in range(first, first + count)]


def new_stream(kind: str = "meter") -> str:
    """A stream id no other test uses (stores shared between tests, such as a Cosmos container)."""
    return f"{kind}-{uuid.uuid4().hex}"


def ids(items: Iterable[RecordedEvent | NewEvent]) -> list[str]:
    return [e.event_id for e in items]


def register_read(value: str, at: datetime, obis: str = IMPORT, meter: str = "M1") -> RegisterRead:
    """The import (or ``obis``) register of ``meter`` read at ``at``, in Wh."""
    return RegisterRead(meter, obis, "active_energy_import", Decimal(value), "Wh", at, at)


def fold(domain_events: Sequence[DomainEvent], state: MeterState | None = None) -> MeterState:
    """Apply the events in order to ``state`` (by default the empty state of meter M1 in 2025)."""
    state = state or MeterState.empty("M1", 2025)
    for domain_event in domain_events:
        state = state.apply(domain_event)
    return state
