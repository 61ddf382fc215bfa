"""The event mapper: stored envelopes written before it still read, and write back byte for byte;
the registry and upcasting rules.

The envelopes below were captured from the encoding of the code before ``gateway.domain.mapper`` existed
(commit 6a88fa1: ``codec.dumps(codec.event_to_dict(to_new_event(event, META)))``, the form the outbox
stores and the Cosmos DB commit items hold), one per event type of ``one_of_each()``. Never edit them
to make a test pass: a change here means stored history no longer reads or no longer re-encodes the same.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, ClassVar, Mapping

import pytest

from gateway.domain.events import (
    DomainEvent,
    MalformedEventData,
    RegisterRead,
    UnknownEventType,
    UnsupportedSchemaVersion,
)
from gateway.domain.mapper import EVENT_TYPES, MAPPER, EventMapper, decode, to_new_event
from gateway.personal.crypto import ERASED, reveal
from gateway.personal.events import MeterAssigned
from gateway.personal.keys import DataKey, KeyDestroyed
from gateway.store import EventMetadata, RecordedEvent
from gateway.store import codec

from .test_events import one_of_each

UTC = timezone.utc

# In one_of_each() order; metadata with a correlation id and an extra key (kept through round trips).
STORED_BEFORE_THE_MAPPER: tuple[str, ...] = (
    '{"data":{"firmware":"1.2.3","firstContact":"2025-12-31T23:45:00Z","make":"Kamstrup","meterId":"M1","model":"Omnipower","serial":"57000001"},"id":"83cb2e1a-b574-569d-9af9-551a9a1c8edd","metadata":{"correlationId":"poll-7","gatewayId":"gw-test","recordedAt":"2026-01-02T00:00:00Z","source":"capture"},"schemaVersion":1,"type":"MeterRegistered"}',
    '{"data":{"captureTime":"2025-12-31T23:45:00Z","meterId":"M1","obis":"1.0.1.8.0.255","quantity":"active_energy_import","readTime":"2025-12-31T23:45:03Z","unit":"Wh","value":"12345678.901"},"id":"bd0e9bd8-1e67-5e2a-8284-b4e60fbdcf6d","metadata":{"correlationId":"poll-7","gatewayId":"gw-test","recordedAt":"2026-01-02T00:00:00Z","source":"capture"},"schemaVersion":1,"type":"RegisterRead"}',
    '{"data":{"capturePeriodS":900,"meterId":"M1","profileObis":"1.0.99.1.0.255","rows":[{"endTime":"2025-12-31T23:45:00Z","status":0,"units":{"1.0.1.8.0.255":"Wh"},"values":{"1.0.1.8.0.255":"1.250"}},{"endTime":"2026-01-01T00:00:00Z","status":8,"units":{"1.0.1.8.0.255":"Wh"},"values":{"1.0.1.8.0.255":"0.5"}}]},"id":"0cd36257-52c8-542d-9ce4-8ca23f7eeecf","metadata":{"correlationId":"poll-7","gatewayId":"gw-test","recordedAt":"2026-01-02T00:00:00Z","source":"capture"},"schemaVersion":1,"type":"IntervalsRecorded"}',
    '{"data":{"gatewayTime":"2025-12-31T23:45:00Z","meterId":"M1","meterTime":"2025-12-31T23:45:02Z","offsetS":"2.125"},"id":"7646a69d-7fab-59da-bf3a-a0be336ec4a2","metadata":{"correlationId":"poll-7","gatewayId":"gw-test","recordedAt":"2026-01-02T00:00:00Z","source":"capture"},"schemaVersion":1,"type":"ClockChecked"}',
    '{"data":{"gatewayTime":"2025-12-31T23:45:00Z","meterId":"M1","meterTime":"2025-12-31T23:45:40Z","offsetS":"40.000","thresholdS":"30"},"id":"f05befbe-eb29-5151-b8c0-c89f31ef02bd","metadata":{"correlationId":"poll-7","gatewayId":"gw-test","recordedAt":"2026-01-02T00:00:00Z","source":"capture"},"schemaVersion":1,"type":"ClockDriftDetected"}',
    '{"data":{"deviationMin":-60,"gatewayTime":"2025-12-31T23:45:00Z","gatewayTimeAfter":"2025-12-31T23:45:01Z","meterId":"M1","meterTimeAfter":"2025-12-31T23:45:01Z","meterTimeBefore":"2025-12-31T23:45:40Z","method":"set","offsetAfterS":"0.000","offsetBeforeS":"40.000","statusFlags":["daylight_saving_active"],"verified":true},"id":"1cbecf9a-c1ea-5d84-aad2-3107c3e72b37","metadata":{"correlationId":"poll-7","gatewayId":"gw-test","recordedAt":"2026-01-02T00:00:00Z","source":"capture"},"schemaVersion":1,"type":"ClockSynchronised"}',
    '{"data":{"gatewayTime":"2025-12-31T23:45:00Z","maxStepS":"300","meterId":"M1","meterTime":"2026-01-01T01:45:00Z","method":"set","offsetS":"7200.000","reason":"drift +7200.0 s beyond max_step_s 300 s"},"id":"7446c994-d167-55cf-b04f-620d5473daa9","metadata":{"correlationId":"poll-7","gatewayId":"gw-test","recordedAt":"2026-01-02T00:00:00Z","source":"capture"},"schemaVersion":1,"type":"ClockSyncRefused"}',
    '{"data":{"code":4,"eventTime":"2025-12-31T23:45:00Z","logObis":"0.0.99.98.0.255","meaning":"power down","meterId":"M1"},"id":"faab9d51-5dff-533c-a679-510bfd94e9ab","metadata":{"correlationId":"poll-7","gatewayId":"gw-test","recordedAt":"2026-01-02T00:00:00Z","source":"capture"},"schemaVersion":1,"type":"MeterEventLogged"}',
    '{"data":{"gapEnd":"2026-01-01T01:45:00Z","gapStart":"2025-12-31T23:45:00Z","meterId":"M1","profileObis":"1.0.99.1.0.255","reason":"meter unreachable"},"id":"b75a10b3-c1f2-5ee2-811f-4e004c485f65","metadata":{"correlationId":"poll-7","gatewayId":"gw-test","recordedAt":"2026-01-02T00:00:00Z","source":"capture"},"schemaVersion":1,"type":"ReadingGapDetected"}',
    '{"data":{"captureTime":"2025-12-31T23:45:00Z","meterId":"M1","obis":"1.0.1.8.0.255","reason":"register went backwards","value":"-0.001"},"id":"0679e707-17bc-5d4e-815c-de5d62b63a81","metadata":{"correlationId":"poll-7","gatewayId":"gw-test","recordedAt":"2026-01-02T00:00:00Z","source":"capture"},"schemaVersion":1,"type":"SuspectReadingFlagged"}',
    '{"data":{"carried":{"clockCheckedAt":"2025-12-31T23:45:00Z","clockOffsetS":"2.125","eventLogEnds":{"0.0.99.98.0.255":"2025-12-31T23:45:00Z"},"identity":{"firmware":"1.2.3","firstContact":"2025-12-31T23:45:00Z","make":"Kamstrup","model":"Omnipower","serial":"57000001"},"intervalEnds":{"1.0.99.1.0.255":"2025-12-31T23:45:00Z"},"registers":{"1.0.1.8.0.255":{"captureTime":"2025-12-31T23:45:00Z","quantity":"active_energy_import","unit":"Wh","value":"12345678.901"}}},"meterId":"M1","previousVersion":17,"year":2026},"id":"5015afe1-d1bf-5707-84ce-fd3910f3361a","metadata":{"correlationId":"poll-7","gatewayId":"gw-test","recordedAt":"2026-01-02T00:00:00Z","source":"capture"},"schemaVersion":1,"type":"YearStreamOpened"}',
    '{"data":{"activationCode":{"algorithm":"AES-256-GCM","ciphertext":"Y2lwaGVy","keyId":"k-1","nonce":"bm9uY2U="},"assignedAt":"2025-12-31T23:45:00Z","assignmentId":"a-1","houseNumber":{"algorithm":"AES-256-GCM","ciphertext":"Y2lwaGVy","keyId":"k-1","nonce":"bm9uY2U="},"meterId":"M1","postalCode":{"algorithm":"AES-256-GCM","ciphertext":"Y2lwaGVy","keyId":"k-1","nonce":"bm9uY2U="}},"id":"dd01d074-88f1-5aa7-8f2d-76ce3f64fa91","metadata":{"correlationId":"poll-7","gatewayId":"gw-test","recordedAt":"2026-01-02T00:00:00Z","source":"capture"},"schemaVersion":1,"type":"MeterAssigned"}',
    '{"data":{"assignmentId":"a-1","erasedAt":"2025-12-31T23:45:00Z","fields":["postal_code","house_number","activation_code"],"keyId":"k-1","meterId":"M1"},"id":"8f1a2abb-9138-55b0-8c74-4122ce72c6b9","metadata":{"correlationId":"poll-7","gatewayId":"gw-test","recordedAt":"2026-01-02T00:00:00Z","source":"capture"},"schemaVersion":1,"type":"PersonalDataErased"}',
)

# A MeterAssigned really encrypted (encrypt_field, random nonces) under FIXED_KEY, then captured.
ENCRYPTED_ASSIGNMENT = (
    '{"data":{"activationCode":{"algorithm":"AES-256-GCM","ciphertext":"NNUoqojon3mpcNVzPPqHfyWDDojF6GjlOPfxyQ==","keyId":"k-fixed","nonce":"d1uDeYy7ljnHGy7w"},"assignedAt":"2025-12-31T23:45:00Z","assignmentId":"a-2","houseNumber":{"algorithm":"AES-256-GCM","ciphertext":"vMS1cQSl7rxy/HfZA+zvcP7WzA==","keyId":"k-fixed","nonce":"CotO0wtll/X3vECh"},"meterId":"M2","postalCode":{"algorithm":"AES-256-GCM","ciphertext":"zXk5gr1RwwnCvyZ0cHkxvM6snnLRtfU=","keyId":"k-fixed","nonce":"UX4cmWScPYTyaXc2"}},"id":"5be28446-871b-5b32-b571-f7ed98669663","metadata":{"correlationId":"poll-7","gatewayId":"gw-test","recordedAt":"2026-01-02T00:00:00Z","source":"capture"},"schemaVersion":1,"type":"MeterAssigned"}'
)
FIXED_KEY = DataKey("k-fixed", "a-2", bytes(range(32)))
PLAINTEXT = {"postal_code": "1234 AB", "house_number": "12a", "activation_code": "ABCDEF234567"}


def recorded_from(envelope: str, stream_id: str = "Meter:M1:2025") -> RecordedEvent:
    return codec.recorded_from_dict(codec.loads(envelope), stream_id=stream_id, version=1, position=1)


def reencoded(event: DomainEvent, metadata: EventMetadata) -> str:
    return codec.dumps(codec.event_to_dict(to_new_event(event, metadata)))


def test_there_is_a_stored_envelope_of_every_registered_type() -> None:
    assert {codec.loads(e)["type"] for e in STORED_BEFORE_THE_MAPPER} == set(EVENT_TYPES)


@pytest.mark.parametrize(
    ("envelope", "expected"), list(zip(STORED_BEFORE_THE_MAPPER, one_of_each(), strict=True)),
    ids=[e.TYPE for e in one_of_each()],
)
def test_an_envelope_stored_before_decodes_and_encodes_to_the_same_bytes(
    envelope: str, expected: DomainEvent
) -> None:
    recorded = recorded_from(envelope)
    event = decode(recorded)
    assert event == expected
    assert event.event_id() == recorded.event_id  # same fact, same id: idempotent re-appends
    assert reencoded(event, recorded.metadata) == envelope
    # The outbox keeps NewEvents as these envelopes: read back and written again, the same text.
    assert codec.dumps(codec.event_to_dict(codec.new_event_from_dict(codec.loads(envelope)))) == envelope


class _OneKey:
    """A key store holding FIXED_KEY, or remembering it destroyed."""

    def __init__(self, destroyed: bool) -> None:
        self.destroyed = destroyed

    async def get(self, key_id: str) -> DataKey:
        assert key_id == FIXED_KEY.key_id
        if self.destroyed:
            raise KeyDestroyed(key_id, FIXED_KEY.assignment_id, datetime(2026, 2, 1, tzinfo=UTC))
        return FIXED_KEY


@pytest.mark.anyio
@pytest.mark.parametrize("destroyed", [False, True], ids=["live key", "erased"])
async def test_an_encrypted_assignment_stored_before_decodes_reveals_and_encodes_the_same(
    destroyed: bool,
) -> None:
    recorded = recorded_from(ENCRYPTED_ASSIGNMENT, "Assignment:a-2")
    event = decode(recorded)
    assert isinstance(event, MeterAssigned)
    keys = _OneKey(destroyed)
    for name, plain in PLAINTEXT.items():
        value = await reveal(keys, name, getattr(event, name), "a-2")  # type: ignore[arg-type]
        assert value == (ERASED if destroyed else plain)
    # Erasure destroys the key, never the event: the ciphertext stays and re-encodes unchanged.
    assert reencoded(event, recorded.metadata) == ENCRYPTED_ASSIGNMENT


# --- the registry and upcasting, on a mapper of its own -------------------------------------------


@dataclass(frozen=True, slots=True)
class Renamed(DomainEvent):
    """Schema 1 stored ``label``; schema 2 calls it ``name`` and adds ``weight``."""

    TYPE: ClassVar[str] = "TestRenamed"
    SCHEMA_VERSION: ClassVar[int] = 2

    meter_id: str
    name: str
    weight: int

    def _id_parts(self) -> tuple[str, ...]:
        return (self.name,)


def v1_to_v2(data: Mapping[str, Any]) -> dict[str, Any]:
    old = dict(data)
    return {"meterId": old.pop("meterId"), "name": old.pop("label"), "weight": 1, **old}


def renamed_mapper() -> EventMapper:
    mapper = EventMapper()
    mapper.register(Renamed, upcasters={1: v1_to_v2})
    return mapper


def stored(type_name: str, schema_version: int, data: Mapping[str, Any]) -> RecordedEvent:
    meta = EventMetadata("gw", datetime(2026, 1, 1, tzinfo=UTC))
    return RecordedEvent("Meter:M1:2026", 3, 9, "id-1", type_name, schema_version, data, meta)


def test_an_old_schema_version_is_upcast_to_the_current_one() -> None:
    mapper = renamed_mapper()
    assert mapper.decode(stored("TestRenamed", 1, {"meterId": "M1", "label": "x"})) == Renamed("M1", "x", 1)
    assert mapper.decode(stored("TestRenamed", 2, {"meterId": "M1", "name": "x", "weight": 5})) == Renamed(
        "M1", "x", 5
    )
    assert list(mapper.schema_versions("TestRenamed")) == [1, 2]
    new = mapper.to_new_event(Renamed("M1", "x", 5), stored("TestRenamed", 2, {}).metadata)
    assert (new.type, new.schema_version, dict(new.data)) == (
        "TestRenamed", 2, {"meterId": "M1", "name": "x", "weight": 5}
    )


@pytest.mark.parametrize("version", [0, 3])
def test_a_schema_version_outside_the_known_ones_is_refused(version: int) -> None:
    with pytest.raises(UnsupportedSchemaVersion) as caught:
        renamed_mapper().decode(stored("TestRenamed", version, {"meterId": "M1", "name": "x", "weight": 1}))
    assert caught.value.supported == 2


def test_a_payload_an_upcaster_cannot_read_is_malformed_and_says_where() -> None:
    with pytest.raises(MalformedEventData) as caught:
        renamed_mapper().decode(stored("TestRenamed", 1, {"meterId": "M1"}))
    assert (caught.value.stream_id, caught.value.version) == ("Meter:M1:2026", 3)


def test_a_type_must_bring_an_upcaster_for_every_older_version() -> None:
    with pytest.raises(ValueError, match="upcasters for versions \\[1\\]"):
        EventMapper().register(Renamed)
    with pytest.raises(ValueError):
        EventMapper().register(Renamed, upcasters={1: v1_to_v2, 2: v1_to_v2})


def test_a_type_name_belongs_to_one_class() -> None:
    mapper = renamed_mapper()
    mapper.register(Renamed, upcasters={1: v1_to_v2})  # the same class again: harmless

    @dataclass(frozen=True, slots=True)
    class Impostor(RegisterRead):
        pass

    with pytest.raises(ValueError, match="already registered"):
        MAPPER.register(Impostor)


def test_only_registered_types_are_mapped_either_way() -> None:
    with pytest.raises(UnknownEventType):
        renamed_mapper().to_new_event(one_of_each()[1], stored("X", 1, {}).metadata)
    with pytest.raises(UnknownEventType) as caught:
        renamed_mapper().decode(stored("RegisterRead", 1, {}))
    assert caught.value.stream_id == "Meter:M1:2026"
