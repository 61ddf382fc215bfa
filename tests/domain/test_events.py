"""Domain events: payload round trips, deterministic ids, validation and decoding errors."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.events import (
    CarryOver,
    ClockChecked,
    ClockDriftDetected,
    ClockSynchronised,
    ClockSyncRefused,
    DomainEvent,
    IntervalRow,
    IntervalsRecorded,
    InvalidEvent,
    MalformedEventData,
    MeterEventLogged,
    MeterIdentity,
    MeterRegistered,
    ReadingGapDetected,
    RegisterRead,
    RegisterValue,
    SuspectReadingFlagged,
    UnknownEventType,
    UnsupportedSchemaVersion,
    YearStreamOpened,
    event_id,
)
from gateway.domain.mapper import EVENT_TYPES, decode, to_new_event
from gateway.personal.events import EncryptedField, MeterAssigned, PersonalDataErased
from gateway.store import EventMetadata, RecordedEvent
from gateway.store.codec import dumps, loads

UTC = timezone.utc
T0 = datetime(2025, 12, 31, 23, 45, tzinfo=UTC)
IMPORT = "1.0.1.8.0.255"
PROFILE = "1.0.99.1.0.255"
META = EventMetadata(gateway_id="gw-test", recorded_at=datetime(2026, 1, 2, tzinfo=UTC))


def row(end: datetime, value: str = "1.250", status: int = 0) -> IntervalRow:
    return IntervalRow(end, {IMPORT: Decimal(value)}, {IMPORT: "Wh"}, status)


def one_of_each() -> list[DomainEvent]:
    identity = MeterIdentity("Kamstrup", "Omnipower", "57000001", "1.2.3", T0)
    return [
        MeterRegistered("M1", "Kamstrup", "Omnipower", "57000001", "1.2.3", T0),
        RegisterRead("M1", IMPORT, "active_energy_import", Decimal("12345678.901"), "Wh", T0,
                     T0 + timedelta(seconds=3)),
        IntervalsRecorded("M1", PROFILE, 900, (row(T0), row(T0 + timedelta(minutes=15), "0.5", 8))),
        ClockChecked("M1", T0 + timedelta(seconds=2), T0, Decimal("2.125")),
        ClockDriftDetected("M1", T0 + timedelta(seconds=40), T0, Decimal("40.000"), Decimal("30")),
        ClockSynchronised("M1", "set", T0, T0 + timedelta(seconds=40), Decimal("40.000"), T0 + timedelta(seconds=1),
                          T0 + timedelta(seconds=1), Decimal("0.000"), True, -60, ("daylight_saving_active",)),
        ClockSyncRefused("M1", "set", T0, T0 + timedelta(hours=2), Decimal("7200.000"), Decimal("300"),
                         "drift +7200.0 s beyond max_step_s 300 s"),
        MeterEventLogged("M1", "0.0.99.98.0.255", T0, 4, "power down"),
        ReadingGapDetected("M1", PROFILE, T0, T0 + timedelta(hours=2), "meter unreachable"),
        SuspectReadingFlagged("M1", IMPORT, "register went backwards", Decimal("-0.001"), T0),
        YearStreamOpened("M1", 2026, 17, CarryOver(
            identity,
            {IMPORT: RegisterValue("active_energy_import", Decimal("12345678.901"), "Wh", T0)},
            {PROFILE: T0},
            Decimal("2.125"),
            T0,
            {"0.0.99.98.0.255": T0},
        )),
        MeterAssigned("M1", "a-1", T0, *(EncryptedField("k-1", "bm9uY2U=", "Y2lwaGVy") for _ in range(3))),
        PersonalDataErased("M1", "a-1", "k-1", T0, ("postal_code", "house_number", "activation_code")),
    ]


def test_every_registered_type_has_an_example() -> None:
    assert {type(e) for e in one_of_each()} == set(EVENT_TYPES.values())
    assert all(cls.TYPE == name for name, cls in EVENT_TYPES.items())


@pytest.mark.parametrize("event", one_of_each(), ids=lambda e: e.TYPE)
def test_payload_round_trips_through_json(event: DomainEvent) -> None:
    data = loads(dumps(event.to_data()))  # exactly what a backend stores
    back = type(event).from_data(data, event.SCHEMA_VERSION)
    assert back == event
    assert back.event_id() == event.event_id()


@pytest.mark.parametrize("event", one_of_each(), ids=lambda e: e.TYPE)
def test_decode_of_a_recorded_event(event: DomainEvent) -> None:
    new = to_new_event(event, META)
    recorded = RecordedEvent(
        stream_id="Meter:M1:2025", version=1, position=1, event_id=new.event_id, type=new.type,
        schema_version=new.schema_version, data=loads(dumps(new.data)), metadata=META,
    )
    assert decode(recorded) == event
    assert new.event_id == event.event_id()
    assert new.type == event.TYPE


def test_decimal_precision_and_format_are_kept() -> None:
    event = RegisterRead("M1", IMPORT, "active_energy_import", Decimal("12345678.901"), "Wh", T0, T0)
    data = event.to_data()
    assert data["value"] == "12345678.901"
    assert data["captureTime"] == "2025-12-31T23:45:00Z"
    back = RegisterRead.from_data(loads(dumps(data)), 1)
    assert str(back.value) == "12345678.901"


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_any_finite_decimal_round_trips_exactly(value: Decimal) -> None:
    event = RegisterRead("M1", IMPORT, "active_power_import", value, "W", T0, T0)
    back = RegisterRead.from_data(loads(dumps(event.to_data())), 1)
    assert str(back.value) == str(value)


def test_times_are_normalised_to_utc() -> None:
    cet = timezone(timedelta(hours=1))
    local = datetime(2026, 1, 1, 0, 30, tzinfo=cet)
    event = RegisterRead("M1", IMPORT, "q", Decimal(1), "Wh", local, local)
    assert event.capture_time.tzinfo == UTC
    assert event.capture_time == datetime(2025, 12, 31, 23, 30, tzinfo=UTC)


def test_same_reading_gives_the_same_id() -> None:
    first = RegisterRead("M1", IMPORT, "q", Decimal("5"), "Wh", T0, T0)
    again = RegisterRead("M1", IMPORT, "q", Decimal("5"), "Wh", T0, T0 + timedelta(minutes=5))
    assert first.event_id() == again.event_id()  # read twice: same fact


def test_ids_differ_by_capture_time_meter_obis_and_type() -> None:
    base = RegisterRead("M1", IMPORT, "q", Decimal("5"), "Wh", T0, T0)
    others = [
        RegisterRead("M1", IMPORT, "q", Decimal("5"), "Wh", T0 + timedelta(seconds=1), T0),
        RegisterRead("M2", IMPORT, "q", Decimal("5"), "Wh", T0, T0),
        RegisterRead("M1", "1.0.2.8.0.255", "q", Decimal("5"), "Wh", T0, T0),
        SuspectReadingFlagged("M1", IMPORT, "x", Decimal("5"), T0),
    ]
    ids = {base.event_id(), *(o.event_id() for o in others)}
    assert len(ids) == 1 + len(others)


def test_interval_ids_follow_the_span() -> None:
    a = IntervalsRecorded("M1", PROFILE, 900, (row(T0), row(T0 + timedelta(minutes=15))))
    same_span = IntervalsRecorded("M1", PROFILE, 900, (row(T0), row(T0 + timedelta(minutes=15))))
    longer = IntervalsRecorded("M1", PROFILE, 900, (row(T0), row(T0 + timedelta(minutes=30))))
    assert a.event_id() == same_span.event_id()
    assert a.event_id() != longer.event_id()


def test_event_id_joins_parts_unambiguously() -> None:
    assert event_id("a:b", "c") != event_id("a", "b:c")
    assert event_id("ab", "c") != event_id("a", "bc")
    assert event_id("x", "y") == event_id("x", "y")
    with pytest.raises(TypeError):
        event_id()


@pytest.mark.parametrize(
    "build",
    [
        lambda: RegisterRead("M1", IMPORT, "q", 1.5, "Wh", T0, T0),  # float
        lambda: RegisterRead("M1", IMPORT, "q", Decimal("NaN"), "Wh", T0, T0),
        lambda: RegisterRead("M1", IMPORT, "q", Decimal(1), "Wh", datetime(2025, 1, 1), T0),
        lambda: RegisterRead("M1", "1.0.1.8.0", "q", Decimal(1), "Wh", T0, T0),
        lambda: RegisterRead("M1", "1.0.1.8.0.256", "q", Decimal(1), "Wh", T0, T0),
        lambda: RegisterRead("", IMPORT, "q", Decimal(1), "Wh", T0, T0),
        lambda: IntervalsRecorded("M1", PROFILE, 900, ()),
        lambda: IntervalsRecorded("M1", PROFILE, 0, (row(T0),)),
        lambda: IntervalRow(T0, {IMPORT: Decimal(1)}, {}, 0),
        lambda: ReadingGapDetected("M1", PROFILE, T0, T0, "x"),
        lambda: MeterEventLogged("M1", "0.0.99.98.0.255", T0, True, "bool is not a code"),
    ],
)
def test_bad_values_raise_invalid_event(build) -> None:
    with pytest.raises(InvalidEvent):
        build()


def recorded(type_name: str, data: dict, schema_version: int = 1) -> RecordedEvent:
    return RecordedEvent(
        stream_id="Meter:M1:2026", version=7, position=7, event_id="x", type=type_name,
        schema_version=schema_version, data=data, metadata=META,
    )


def test_unknown_type_is_a_typed_error() -> None:
    with pytest.raises(UnknownEventType) as info:
        decode(recorded("MeterExploded", {"meterId": "M1"}))
    assert info.value.type_name == "MeterExploded"
    assert info.value.stream_id == "Meter:M1:2026" and info.value.version == 7


def test_newer_schema_version_is_a_typed_error() -> None:
    data = one_of_each()[1].to_data()
    with pytest.raises(UnsupportedSchemaVersion):
        decode(recorded("RegisterRead", data, schema_version=2))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("value"),
        lambda d: d.update(value=1.5),  # a float where a Decimal string belongs
        lambda d: d.update(value="twelve"),
        lambda d: d.update(captureTime=12),
        lambda d: d.update(captureTime="2025-12-31T23:45:00"),  # no offset: ambiguous
        lambda d: d.update(captureTime="yesterday"),
        lambda d: d.update(obis="not-obis"),
    ],
)
def test_malformed_data_is_a_typed_error(mutate) -> None:
    data = dict(one_of_each()[1].to_data())
    mutate(data)
    with pytest.raises(MalformedEventData) as info:
        decode(recorded("RegisterRead", data))
    assert info.value.stream_id == "Meter:M1:2026"
