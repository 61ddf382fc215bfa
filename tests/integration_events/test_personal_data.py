"""Personal data never leaves: assignments are not published and erased fields never were.

Real assignments (encrypted fields, a real key store and unique index) are made and one is
forgotten, in the same SQLite store as the meters' readings (as on Cosmos DB, where they share a
container); the feed is then mapped as a publisher maps it. No assignment event maps to anything,
and no published byte holds a personal value, its ciphertext, nonce or key id, or the assignment id.
"""
from __future__ import annotations

import base64
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.domain.mapper import EVENT_TYPES, decode, to_new_event
from gateway.integration import NOT_PUBLISHED, integration_events
from gateway.personal import events as personal_events
from gateway.personal.assignments import Assignments
from gateway.personal.events import MeterAssigned
from gateway.personal.keys import SqliteKeyStore
from gateway.personal.unique_index import UniqueIndex
from gateway.store.model import NO_STREAM
from tests.backends import opened_sqlite, read_everything
from tests.builders import T0, metadata, register_read

from . import check_document

pytestmark = pytest.mark.anyio

PERSONAL = {"1234 AB": "postal code", "17 QX": "house number", "QXJ7K2M9": "activation code"}
OTHER = {"9876 ZY": "postal code", "221 KW": "house number", "ZZ9PLURALZ": "activation code"}


def test_no_personal_event_type_maps_to_anything() -> None:
    personal_types = {cls.TYPE for cls in personal_events.EVENT_CLASSES}
    assert personal_types and personal_types <= set(EVENT_TYPES)
    assert personal_types <= set(NOT_PUBLISHED)


async def test_assignments_and_erasures_publish_nothing_and_leak_nothing(tmp_path: Path) -> None:
    async with opened_sqlite(tmp_path / "events.db") as store:
        keys = await SqliteKeyStore.open(tmp_path / "keys.db")
        index = await UniqueIndex.open(tmp_path / "unique.db")
        try:
            assignments = Assignments(store, keys, index, "gw-test", clock=lambda: T0)
            kept = await assignments.assign("M1", "1234 AB", "17 QX", "QXJ7K2M9")
            gone = await assignments.assign("M2", "9876 ZY", "221 KW", "ZZ9PLURALZ")
            await assignments.forget(gone.assignment_id)
            readings = [register_read(str(1000 + n), T0 + timedelta(minutes=15 * n), meter=m)
                        for m in ("M1", "M2") for n in range(3)]
            for meter in ("M1", "M2"):
                await store.append(f"Meter:{meter}:2026", [to_new_event(e, metadata()) for e in readings
                                                           if e.meter_id == meter], NO_STREAM)
            recorded, _ = await read_everything(store)
        finally:
            await index.aclose()
            await keys.aclose()

    personal = [r for r in recorded if r.stream_id.startswith("Assignment:")]
    assert sorted(r.type for r in personal) == ["MeterAssigned", "MeterAssigned", "PersonalDataErased"]
    for event in personal:
        assert integration_events(event, gateway="gw-test") == []

    published = b"".join(e.to_json() for r in recorded for e in integration_events(r, gateway="gw-test"))
    assert published.count(b'"type":"com.metergateway.meter.reading.v1"') == len(readings)
    for r in recorded:
        for e in integration_events(r, gateway="gw-test"):
            check_document(e.to_json())
    secrets: dict[str, str] = {**PERSONAL, **OTHER,
                               kept.assignment_id: "assignment id", gone.assignment_id: "assignment id"}
    for event in personal:
        domain = decode(event)
        if isinstance(domain, MeterAssigned):
            for name in ("postal_code", "house_number", "activation_code"):
                sealed = getattr(domain, name)
                secrets[sealed.ciphertext] = f"{name} ciphertext"
                secrets[base64.b64decode(sealed.ciphertext).hex()] = f"{name} ciphertext (hex)"
                secrets[sealed.nonce] = f"{name} nonce"
                secrets[sealed.key_id] = "key id"
    text = published.decode()
    for secret, what in secrets.items():
        assert secret not in text, f"the {what} was published"
