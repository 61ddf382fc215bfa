"""Numbers in plain notation everywhere (issue 12): a register scaler made values such as
``4.236513E+7 Wh``, which reached ``views show``, the views' JSON and the stored events."""
from __future__ import annotations

import json
from datetime import date, datetime, timezone
from decimal import Decimal

from drivers.units import scale
from gateway.domain.events import RegisterRead
from gateway.domain.mapper import decode, to_new_event
from gateway.projections.views import DailyFigure
from gateway.store.codec import decimal_text, dumps
from gateway.store.model import EventMetadata, RecordedEvent

T = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def read(value: Decimal) -> RegisterRead:
    return RegisterRead(meter_id="m-1", obis="1.0.1.8.0.255", quantity="active_energy_import", value=value,
                        unit="Wh", capture_time=T, read_time=T)


def test_a_scaled_register_value_is_plain() -> None:
    assert str(scale(4236513, 1)) == "42365130"
    assert str(scale(1545, -3)) == "1.545"
    assert scale(5, 127) == Decimal(5).scaleb(127) and "E" not in str(scale(5, 127))


def test_new_events_store_plain_strings_and_old_ones_still_load() -> None:
    event = read(Decimal("4.236513E+7"))
    assert str(event.value) == "42365130"
    stored = to_new_event(event, EventMetadata(gateway_id="g", recorded_at=T))
    assert stored.data["value"] == "42365130"
    assert "E+" not in dumps(dict(stored.data))
    # An event stored before plain notation: same number, read back plain.
    old = RecordedEvent(
        stream_id="Meter:m-1:2026", version=1, position=1, event_id=stored.event_id, type=stored.type,
        schema_version=stored.schema_version, data={**stored.data, "value": "4.236513E+7"},
        metadata=stored.metadata,
    )
    again = decode(old)
    assert isinstance(again, RegisterRead) and again.value == Decimal("42365130") and str(again.value) == "42365130"
    assert again.event_id() == event.event_id()  # the id never depended on the notation


def test_views_json_and_small_values_are_plain() -> None:
    figure = DailyFigure("m-1", date(2026, 3, 1), Decimal("1.545E+4"), Decimal("1E-7"), "intervals", 96, 0, True)
    assert json.loads(json.dumps(figure.to_json()))["importWh"] == "15450"
    assert figure.to_json()["exportWh"] == "0.0000001"
    assert decimal_text(Decimal("-2E+2")) == "-200"
