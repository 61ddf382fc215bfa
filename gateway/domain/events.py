"""Domain events of one meter: what the gateway learned, stated as past-tense facts.

Every event is a frozen value with a type name (``TYPE``) and a payload schema version
(``SCHEMA_VERSION``). ``to_data()`` gives the JSON-ready payload stored by the event store
(gateway.store.codec conventions: Decimal as a string, datetimes as ISO-8601 UTC, camelCase keys);
``from_data()`` reads it back. ``gateway.domain.mapper`` registers the types (``EVENT_CLASSES``) and maps
events to and from the store (``to_new_event``, ``decode``, upcasting); this module imports no event
module of a feature, so it sits below them all. Values are in SI base units (Wh, W, V, A, s) as ``Decimal`` with
their unit spelled out, times are aware UTC datetimes, OBIS codes are strings like "1.0.1.8.0.255".

Event ids are deterministic (uuid5 over what identifies the fact: meter, OBIS/profile, capture
time or interval span, type), so reading the same register or interval twice yields the same id and
the store's idempotent-append rule turns the second write into a no-op.
"""
from __future__ import annotations

import json
import re
import types
import uuid
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin, get_type_hints

from gateway.store.codec import decimal_text, iso_utc, parse_utc, plain_decimal

# Fixed forever: changing it changes every event id and breaks idempotent re-reads.
EVENT_ID_NAMESPACE = uuid.UUID("5d0e8f3c-6a1b-4c7e-9f21-3b8d2a7c4e10")

_OBIS = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")
_OBIS_FIELDS = frozenset({"obis", "profile_obis", "log_obis"})


class EventError(Exception):
    """Base class of the errors of the domain event layer."""


class InvalidEvent(EventError, ValueError):
    """An event (or a value inside one) was built from values that break its rules."""

    def __init__(self, event_type: str, message: str) -> None:
        self.event_type = event_type
        super().__init__(f"{event_type}: {message}")


class UnknownEventType(EventError):
    """A stored event has a type this code does not know (e.g. written by a newer gateway)."""

    def __init__(self, type_name: str, stream_id: str | None = None, version: int | None = None):
        self.type_name = type_name
        self.stream_id = stream_id
        self.version = version
        where = f" at {stream_id!r} version {version}" if stream_id is not None else ""
        super().__init__(f"unknown event type {type_name!r}{where}")


class UnsupportedSchemaVersion(EventError):
    """A stored payload has a schema version newer than (or unknown to) this code."""

    def __init__(self, type_name: str, schema_version: int, supported: int) -> None:
        self.type_name = type_name
        self.schema_version = schema_version
        self.supported = supported
        super().__init__(
            f"{type_name}: schema version {schema_version} is not supported (up to {supported})"
        )


class MalformedEventData(EventError):
    """A stored payload does not have the shape its type and schema version promise."""

    def __init__(self, type_name: str, message: str, stream_id: str | None = None,
                 version: int | None = None) -> None:
        self.type_name = type_name
        self.detail = message
        self.stream_id = stream_id
        self.version = version
        where = f" at {stream_id!r} version {version}" if stream_id is not None else ""
        super().__init__(f"{type_name}{where}: {message}")


def check_obis(code: str, *, context: str = "OBIS code") -> str:
    """Return ``code`` if it is a logical name "A.B.C.D.E.F" (six groups 0..255), else raise."""
    match = _OBIS.match(code) if isinstance(code, str) else None
    if match is None or any(int(group) > 255 for group in match.groups()):
        raise InvalidEvent(context, f"{code!r} is not an OBIS code like '1.0.1.8.0.255'")
    return code


def event_id(*parts: str) -> str:
    """Deterministic id of a fact; parts are joined unambiguously (a JSON list), then uuid5."""
    if not parts or not all(isinstance(p, str) for p in parts):
        raise TypeError("event_id needs one or more string parts")
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, json.dumps(list(parts), separators=(",", ":"))))


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = {f.name: get_type_hints(cls)[f.name] for f in fields(cls)}
        _HINTS[cls] = hints
    return hints


def _normalize(hint: Any, value: Any, path: str) -> Any:
    """Check ``value`` against the field type and return its canonical form (UTC, dict, tuple)."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in get_args(hint):
            return None
        (inner,) = [arg for arg in get_args(hint) if arg is not type(None)]
        return _normalize(inner, value, path)
    if hint is Decimal:
        # Floats are refused: a binary fraction is not the value the meter sent.
        if not isinstance(value, Decimal) or not value.is_finite():
            raise ValueError(f"{path} must be a finite Decimal, got {value!r}")
        return plain_decimal(value)
    if hint is datetime:
        if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{path} must be a timezone-aware datetime, got {value!r}")
        return value.astimezone(timezone.utc)
    if hint is bool or hint is str:
        if not isinstance(value, hint):
            raise ValueError(f"{path} must be a {hint.__name__}, got {value!r}")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{path} must be an int, got {value!r}")
        return value
    if origin is tuple:
        item_hint = get_args(hint)[0]
        if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
            raise ValueError(f"{path} must be a sequence, got {value!r}")
        return tuple(_normalize(item_hint, item, f"{path}[{i}]") for i, item in enumerate(value))
    if origin is Mapping or origin is dict:
        key_hint, value_hint = get_args(hint)
        if not isinstance(value, Mapping):
            raise ValueError(f"{path} must be a mapping, got {value!r}")
        # A read-only view: an event is a value, even its mappings.
        return types.MappingProxyType({
            _normalize(key_hint, k, f"{path} key"): _normalize(value_hint, v, f"{path}[{k!r}]")
            for k, v in value.items()
        })
    if isinstance(hint, type) and issubclass(hint, Payload):
        if not isinstance(value, hint):
            raise ValueError(f"{path} must be a {hint.__name__}, got {value!r}")
        return value
    raise TypeError(f"{path}: unsupported field type {hint!r}")  # a programming error


def _encode(value: Any) -> Any:
    if isinstance(value, Payload):
        return value.to_data()
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    return value


def _decode(hint: Any, raw: Any, path: str) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        if raw is None and type(None) in get_args(hint):
            return None
        (inner,) = [arg for arg in get_args(hint) if arg is not type(None)]
        return _decode(inner, raw, path)
    if hint is Decimal:
        if not isinstance(raw, (str, int)) or isinstance(raw, bool):
            raise ValueError(f"{path}: a Decimal is stored as a string, got {raw!r}")
        try:
            return plain_decimal(Decimal(raw))  # events stored before plain notation held "4.2E+7"
        except InvalidOperation:
            raise ValueError(f"{path}: {raw!r} is not a decimal number") from None
    if hint is datetime:
        if not isinstance(raw, str):
            raise ValueError(f"{path}: a datetime is stored as an ISO-8601 string, got {raw!r}")
        try:
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{path}: {raw!r} is not an ISO-8601 datetime") from None
        if parsed.tzinfo is None:
            # parse_utc would read a zone-less time as the gateway's local time: refuse instead.
            raise ValueError(f"{path}: {raw!r} has no UTC offset")
        return parse_utc(raw)
    if origin is tuple:
        if not isinstance(raw, list):
            raise ValueError(f"{path}: expected a list, got {raw!r}")
        return tuple(_decode(get_args(hint)[0], item, f"{path}[{i}]") for i, item in enumerate(raw))
    if origin is Mapping or origin is dict:
        if not isinstance(raw, Mapping):
            raise ValueError(f"{path}: expected an object, got {raw!r}")
        value_hint = get_args(hint)[1]
        return {k: _decode(value_hint, v, f"{path}[{k!r}]") for k, v in raw.items()}
    if isinstance(hint, type) and issubclass(hint, Payload):
        return hint._from_fields(raw, path)
    return raw  # str/int/bool: checked by the constructor


class Payload:
    """Base of every event and of the values nested in events: validation and (de)serialisation.

    Subclasses are frozen slotted dataclasses whose fields are typed with str, int, bool, Decimal,
    datetime, ``X | None``, ``tuple[X, ...]``, ``Mapping[str, X]`` or another Payload.
    """

    __slots__ = ()

    def __post_init__(self) -> None:
        for name, hint in _hints(type(self)).items():
            try:
                value = _normalize(hint, getattr(self, name), name)
                if name in _OBIS_FIELDS:
                    check_obis(value, context=name)
            except (ValueError, InvalidEvent) as exc:
                raise InvalidEvent(type(self).__name__, str(exc)) from None
            object.__setattr__(self, name, value)
        self._check()

    def _check(self) -> None:
        """Rules across fields; override where a payload has them."""

    def _fail(self, message: str) -> None:
        raise InvalidEvent(type(self).__name__, message)

    def to_data(self) -> dict[str, Any]:
        """JSON-ready payload: camelCase keys, Decimal as string, datetimes ISO-8601 UTC."""
        return {_camel(name): _encode(getattr(self, name)) for name in _hints(type(self))}

    @classmethod
    def _from_fields(cls: type[_P], raw: Any, path: str = "") -> _P:
        if not isinstance(raw, Mapping):
            raise ValueError(f"{path or cls.__name__}: expected an object, got {raw!r}")
        kwargs: dict[str, Any] = {}
        optional = {f.name for f in fields(cls) if f.default is not MISSING or f.default_factory is not MISSING}
        for name, hint in _hints(cls).items():
            key = _camel(name)
            if key not in raw and name in optional:
                continue  # a field added later: older stored payloads lack it
            if key not in raw:
                raise ValueError(f"{path}{'.' if path else ''}{key} is missing")
            kwargs[name] = _decode(hint, raw[key], f"{path}{'.' if path else ''}{key}")
        return cls(**kwargs)


_P = TypeVar("_P", bound=Payload)


class DomainEvent(Payload):
    """A fact about one meter. Subclasses set TYPE and SCHEMA_VERSION and define ``_id_parts``."""

    __slots__ = ()
    TYPE: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int]
    meter_id: str

    def _check(self) -> None:
        if not self.meter_id:
            self._fail("meter_id must not be empty")

    def _id_parts(self) -> tuple[str, ...]:
        raise NotImplementedError

    def event_id(self) -> str:
        return event_id(self.TYPE, self.meter_id, *self._id_parts())

    @classmethod
    def from_data(cls: type[_E], data: Mapping[str, Any], schema_version: int) -> _E:
        """Rebuild the event from a stored payload; typed errors for newer or malformed data."""
        if schema_version < 1 or schema_version > cls.SCHEMA_VERSION:
            raise UnsupportedSchemaVersion(cls.TYPE, schema_version, cls.SCHEMA_VERSION)
        try:
            return cls._from_fields(data)
        except (ValueError, InvalidEvent) as exc:
            raise MalformedEventData(cls.TYPE, str(exc)) from None


_E = TypeVar("_E", bound=DomainEvent)


# --- values nested in events -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IntervalRow(Payload):
    """One row of a load profile: the values captured at ``end_time`` (end of the period)."""

    end_time: datetime
    values: Mapping[str, Decimal]  # channel OBIS → value
    units: Mapping[str, str]  # channel OBIS → unit of its value
    status: int  # the profile's status word (meter-specific bit flags, e.g. power down, DST)

    def _check(self) -> None:
        for code in self.values:
            check_obis(code, context="IntervalRow channel")
        if set(self.units) != set(self.values):
            self._fail(f"units must name exactly the channels of values: {sorted(self.values)}")


@dataclass(frozen=True, slots=True)
class RegisterValue(Payload):
    """The last known value of one register, as carried from one year stream to the next."""

    quantity: str
    value: Decimal
    unit: str
    capture_time: datetime


@dataclass(frozen=True, slots=True)
class MeterIdentity(Payload):
    make: str
    model: str
    serial: str
    firmware: str
    first_contact: datetime


@dataclass(frozen=True, slots=True)
class CarryOver(Payload):
    """A year stream's closing state: what the next year needs so it never reads an older stream."""

    identity: MeterIdentity | None
    registers: Mapping[str, RegisterValue]  # OBIS → last value
    interval_ends: Mapping[str, datetime]  # profile OBIS → end time of its last recorded row
    clock_offset_s: Decimal | None
    clock_checked_at: datetime | None
    # Added after schema 1 shipped; absent in older YearStreamOpened events, hence the default.
    event_log_ends: Mapping[str, datetime] = field(default_factory=dict)  # log OBIS → newest entry

    def _check(self) -> None:
        for code in (*self.registers, *self.interval_ends, *self.event_log_ends):
            check_obis(code, context="CarryOver")


# --- events --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MeterRegistered(DomainEvent):
    TYPE: ClassVar[str] = "MeterRegistered"
    SCHEMA_VERSION: ClassVar[int] = 1

    meter_id: str
    make: str
    model: str
    serial: str
    firmware: str
    first_contact: datetime

    def _id_parts(self) -> tuple[str, ...]:
        return (self.serial, iso_utc(self.first_contact))

    @property
    def identity(self) -> MeterIdentity:
        return MeterIdentity(self.make, self.model, self.serial, self.firmware, self.first_contact)


@dataclass(frozen=True, slots=True)
class RegisterRead(DomainEvent):
    TYPE: ClassVar[str] = "RegisterRead"
    SCHEMA_VERSION: ClassVar[int] = 1

    meter_id: str
    obis: str
    quantity: str  # e.g. "active_energy_import"
    value: Decimal
    unit: str  # SI base unit: "Wh", "W", "V", "A", ...
    capture_time: datetime  # the meter's time stamp of the value
    read_time: datetime  # when the gateway read it

    def _id_parts(self) -> tuple[str, ...]:
        # read_time is left out on purpose: re-reading the same capture is the same fact.
        return (self.obis, iso_utc(self.capture_time))


@dataclass(frozen=True, slots=True)
class IntervalsRecorded(DomainEvent):
    TYPE: ClassVar[str] = "IntervalsRecorded"
    SCHEMA_VERSION: ClassVar[int] = 1

    meter_id: str
    profile_obis: str
    capture_period_s: int
    rows: tuple[IntervalRow, ...]

    def _check(self) -> None:
        DomainEvent._check(self)
        if not self.rows:
            self._fail("rows must not be empty")
        if self.capture_period_s <= 0:
            self._fail(f"capture_period_s must be positive, got {self.capture_period_s}")

    @property
    def first_end(self) -> datetime:
        return min(row.end_time for row in self.rows)

    @property
    def last_end(self) -> datetime:
        return max(row.end_time for row in self.rows)

    def _id_parts(self) -> tuple[str, ...]:
        return (self.profile_obis, iso_utc(self.first_end), iso_utc(self.last_end))


@dataclass(frozen=True, slots=True)
class ClockChecked(DomainEvent):
    TYPE: ClassVar[str] = "ClockChecked"
    SCHEMA_VERSION: ClassVar[int] = 1

    meter_id: str
    meter_time: datetime
    gateway_time: datetime
    offset_s: Decimal  # meter_time - gateway_time

    def _id_parts(self) -> tuple[str, ...]:
        return (iso_utc(self.gateway_time),)


@dataclass(frozen=True, slots=True)
class ClockDriftDetected(DomainEvent):
    TYPE: ClassVar[str] = "ClockDriftDetected"
    SCHEMA_VERSION: ClassVar[int] = 1

    meter_id: str
    meter_time: datetime
    gateway_time: datetime
    offset_s: Decimal
    threshold_s: Decimal

    def _id_parts(self) -> tuple[str, ...]:
        return (iso_utc(self.gateway_time),)


@dataclass(frozen=True, slots=True)
class ClockSynchronised(DomainEvent):
    """The gateway set the meter's clock (``[clock_sync]``) and read it again.

    ``gateway_time`` / ``meter_time_before`` / ``offset_before_s``: the read that found the drift;
    ``*_after``: the read after setting, ``verified`` when its offset is within the tolerance. The
    meter's deviation (minutes, COSEM sign; None: not specified) and clock status as read after."""

    TYPE: ClassVar[str] = "ClockSynchronised"
    SCHEMA_VERSION: ClassVar[int] = 1

    meter_id: str
    method: str  # "set" (clock attribute 2) or "shift_time" (clock method 6)
    gateway_time: datetime
    meter_time_before: datetime
    offset_before_s: Decimal
    gateway_time_after: datetime
    meter_time_after: datetime
    offset_after_s: Decimal
    verified: bool
    deviation_min: int | None = None
    status_flags: tuple[str, ...] = ()  # e.g. ("daylight_saving_active",)

    def _id_parts(self) -> tuple[str, ...]:
        return (iso_utc(self.gateway_time),)


@dataclass(frozen=True, slots=True)
class ClockSyncRefused(DomainEvent):
    """The gateway did not correct a drifting clock: the drift exceeds ``max_step_s`` (a large jump
    is a tamper or fault signal, never silently corrected) or the meter refused the write
    (``reason`` names it, e.g. "AccessDenied: ... READ_WRITE_DENIED")."""

    TYPE: ClassVar[str] = "ClockSyncRefused"
    SCHEMA_VERSION: ClassVar[int] = 1

    meter_id: str
    method: str
    gateway_time: datetime
    meter_time: datetime
    offset_s: Decimal
    max_step_s: Decimal
    reason: str

    def _id_parts(self) -> tuple[str, ...]:
        return (iso_utc(self.gateway_time),)


@dataclass(frozen=True, slots=True)
class MeterEventLogged(DomainEvent):
    TYPE: ClassVar[str] = "MeterEventLogged"
    SCHEMA_VERSION: ClassVar[int] = 1

    meter_id: str
    log_obis: str
    event_time: datetime
    code: int
    meaning: str

    def _id_parts(self) -> tuple[str, ...]:
        return (self.log_obis, iso_utc(self.event_time), str(self.code))


@dataclass(frozen=True, slots=True)
class ReadingGapDetected(DomainEvent):
    TYPE: ClassVar[str] = "ReadingGapDetected"
    SCHEMA_VERSION: ClassVar[int] = 1

    meter_id: str
    profile_obis: str
    gap_start: datetime
    gap_end: datetime
    reason: str

    def _check(self) -> None:
        DomainEvent._check(self)
        if self.gap_end <= self.gap_start:
            self._fail(f"gap_end {self.gap_end} is not after gap_start {self.gap_start}")

    def _id_parts(self) -> tuple[str, ...]:
        return (self.profile_obis, iso_utc(self.gap_start), iso_utc(self.gap_end))


@dataclass(frozen=True, slots=True)
class SuspectReadingFlagged(DomainEvent):
    TYPE: ClassVar[str] = "SuspectReadingFlagged"
    SCHEMA_VERSION: ClassVar[int] = 1

    meter_id: str
    obis: str
    reason: str
    value: Decimal
    capture_time: datetime

    def _id_parts(self) -> tuple[str, ...]:
        return (self.obis, iso_utc(self.capture_time), self.reason)


@dataclass(frozen=True, slots=True)
class YearStreamOpened(DomainEvent):
    """First event of every year stream after a meter's first: the previous year's closing state."""

    TYPE: ClassVar[str] = "YearStreamOpened"
    SCHEMA_VERSION: ClassVar[int] = 1

    meter_id: str
    year: int
    previous_version: int  # head of the previous year stream the carry-over was taken at
    carried: CarryOver

    def _id_parts(self) -> tuple[str, ...]:
        return (str(self.year),)


EVENT_CLASSES: tuple[type[DomainEvent], ...] = (
    MeterRegistered, RegisterRead, IntervalsRecorded, ClockChecked, ClockDriftDetected,
    ClockSynchronised, ClockSyncRefused, MeterEventLogged, ReadingGapDetected, SuspectReadingFlagged, YearStreamOpened,
)
"""The event types of a meter's year streams; ``gateway.domain.mapper`` registers them."""
