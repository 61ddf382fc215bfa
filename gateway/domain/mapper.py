"""The event mapper: the one seam between domain events and stored events.

Like ``eventsourcing``'s ``Mapper``, it is the single place that knows how a ``DomainEvent`` becomes a
``NewEvent`` for the store and how a ``RecordedEvent`` becomes a domain event again. It owns:

- the registry of event types: type name -> class, and the schema versions of each type it reads;
- the way out (``to_new_event``): the deterministic event id, type name, current schema version and
  the JSON-ready payload (``Payload.to_data``: camelCase keys, Decimal as string, ISO-8601 UTC);
- the way back (``decode``): the class for the stored type, the stored payload upcast from its schema
  version to the current one, then ``from_data``; typed errors (``UnknownEventType``,
  ``UnsupportedSchemaVersion``, ``MalformedEventData``) naming the stream and version.

Underneath, ``gateway.store.codec`` is the transcoder (envelope <-> JSON text) that both backends and
the outbox use; the mapper never sees bytes. There is no cipher or compressor stage: personal fields
are encrypted when their event is built (``gateway.personal.crypto``, under a per-assignment key) and
erasure destroys the key, so a stored payload is exactly the domain event's payload and an erased
field still decodes (as ciphertext nobody can read; ``reveal`` gives ``ERASED``).

Event modules do not register themselves: this module imports them and builds ``MAPPER``, so the
event modules import nothing back and the registry is complete whichever module a process imports
first. A new event module is added to ``_build`` below.

Upcasting: a type whose payload changes shape bumps its ``SCHEMA_VERSION`` and registers one upcaster
per older version (``upcasters={1: v1_to_v2, ...}``), each a pure function of the stored payload dict
to the next version's; stored events are never rewritten. A field added with a default needs none
(``Payload._from_fields`` leaves it out of older payloads).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import gateway.domain.events as core_events
import gateway.personal.events as personal_events
from gateway.domain.events import (
    DomainEvent,
    MalformedEventData,
    UnknownEventType,
    UnsupportedSchemaVersion,
)
from gateway.store.model import EventMetadata, NewEvent, RecordedEvent

Upcaster = Callable[[Mapping[str, Any]], Mapping[str, Any]]
"""A stored payload of schema version n -> the same fact as a payload of version n + 1."""


@dataclass(frozen=True, slots=True)
class _Registration:
    cls: type[DomainEvent]
    upcasters: tuple[Upcaster, ...]  # [i] turns version i + 1 into i + 2


class EventMapper:
    """Registry of event types and the mapping between domain and stored events."""

    def __init__(self) -> None:
        self._types: dict[str, _Registration] = {}
        self.types: Mapping[str, type[DomainEvent]] = _ClassView(self._types)  # read-only, live

    def register(self, cls: type[DomainEvent], *, upcasters: Mapping[int, Upcaster] | None = None) -> None:
        """Add an event type; ``upcasters`` maps each schema version before the current one to the
        function lifting it by one version (all of 1 .. SCHEMA_VERSION - 1, no more, no less)."""
        upcasters = dict(upcasters or {})
        older = set(range(1, cls.SCHEMA_VERSION))
        if set(upcasters) != older:
            raise ValueError(
                f"{cls.TYPE}: schema version {cls.SCHEMA_VERSION} needs upcasters for versions"
                f" {sorted(older)}, got {sorted(upcasters)}"
            )
        known = self._types.get(cls.TYPE)
        if known is not None and known.cls is not cls:
            raise ValueError(f"event type {cls.TYPE!r} is already registered by another class")
        self._types[cls.TYPE] = _Registration(cls, tuple(upcasters[v] for v in sorted(upcasters)))

    def schema_versions(self, type_name: str) -> range:
        """The schema versions of ``type_name`` this mapper reads (empty if the type is unknown)."""
        known = self._types.get(type_name)
        return range(1, known.cls.SCHEMA_VERSION + 1) if known is not None else range(0)

    def to_new_event(self, event: DomainEvent, metadata: EventMetadata) -> NewEvent:
        """The event to append; refuses a type this mapper could not read back."""
        known = self._types.get(event.TYPE)
        if known is None or known.cls is not type(event):
            raise UnknownEventType(event.TYPE)
        return NewEvent(
            event_id=event.event_id(),
            type=event.TYPE,
            schema_version=event.SCHEMA_VERSION,
            data=event.to_data(),
            metadata=metadata,
        )

    def decode(self, recorded: RecordedEvent) -> DomainEvent:
        """The domain event of a stored event, its payload upcast to the current schema version."""
        known = self._types.get(recorded.type)
        if known is None:
            raise UnknownEventType(recorded.type, recorded.stream_id, recorded.version)
        cls, version = known.cls, recorded.schema_version
        if version < 1 or version > cls.SCHEMA_VERSION:
            raise UnsupportedSchemaVersion(cls.TYPE, version, cls.SCHEMA_VERSION)
        data: Mapping[str, Any] = recorded.data
        try:
            for upcast in known.upcasters[version - 1:]:
                data = upcast(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedEventData(
                recorded.type, f"cannot upcast schema version {version}: {exc!r}",
                recorded.stream_id, recorded.version,
            ) from None
        try:
            return cls.from_data(data, cls.SCHEMA_VERSION)
        except MalformedEventData as exc:
            raise MalformedEventData(
                recorded.type, exc.detail, recorded.stream_id, recorded.version
            ) from None


class _ClassView(Mapping[str, type[DomainEvent]]):
    """Type name -> class, read live from a mapper's registrations."""

    def __init__(self, registrations: Mapping[str, _Registration]) -> None:
        self._registrations = registrations

    def __getitem__(self, name: str) -> type[DomainEvent]:
        return self._registrations[name].cls

    def __iter__(self) -> Iterator[str]:
        return iter(self._registrations)

    def __len__(self) -> int:
        return len(self._registrations)


def _build() -> EventMapper:
    mapper = EventMapper()
    for cls in (*core_events.EVENT_CLASSES, *personal_events.EVENT_CLASSES):
        mapper.register(cls)
    return mapper


MAPPER = _build()
"""The gateway's mapper: every event type of ``gateway.domain.events`` and ``gateway.personal.events``."""

EVENT_TYPES: Mapping[str, type[DomainEvent]] = MAPPER.types
to_new_event = MAPPER.to_new_event
decode = MAPPER.decode

__all__ = ["EVENT_TYPES", "MAPPER", "EventMapper", "Upcaster", "decode", "to_new_event"]
