"""JSON form of event data and envelopes: Decimals as strings, datetimes as ISO-8601 UTC.

Both backends store exactly these strings/dicts, so a stream moved from SQLite to Cosmos (or read
back years later) decodes the same way. Decoding never drops keys it does not know.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Mapping

from gateway.store.model import EventMetadata, NewEvent, RecordedEvent


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return iso_utc(value)
    raise TypeError(f"cannot store a {type(value).__name__} in event data: {value!r}")


def iso_utc(value: datetime) -> str:
    """ISO-8601 in UTC with an explicit 'Z'; naive datetimes are refused (they hide their zone)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: event times must be timezone-aware")
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def parse_utc(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        # astimezone() would silently take the box's local zone; a stored time always has one.
        raise ValueError(f"timestamp {text!r} has no UTC offset")
    return value.astimezone(timezone.utc)


def to_json_value(data: Mapping[str, Any]) -> dict[str, Any]:
    """Plain JSON-ready dict (Decimal → str, datetime → ISO UTC), recursively."""
    return json.loads(dumps(data))


def dumps(data: Any) -> str:
    return json.dumps(data, default=_default, separators=(",", ":"), sort_keys=True)


def loads(text: str) -> Any:
    return json.loads(text)


_METADATA_KEYS = ("gatewayId", "recordedAt", "correlationId")


def metadata_to_dict(meta: EventMetadata) -> dict[str, Any]:
    out: dict[str, Any] = dict(meta.extra)
    out["gatewayId"] = meta.gateway_id
    out["recordedAt"] = iso_utc(meta.recorded_at)
    out["correlationId"] = meta.correlation_id
    return out


def metadata_from_dict(raw: Mapping[str, Any]) -> EventMetadata:
    extra = {k: v for k, v in raw.items() if k not in _METADATA_KEYS}
    return EventMetadata(
        gateway_id=raw["gatewayId"],
        recorded_at=parse_utc(raw["recordedAt"]),
        correlation_id=raw.get("correlationId"),
        extra=extra,
    )


def event_to_dict(event: NewEvent | RecordedEvent) -> dict[str, Any]:
    """The envelope of one event as stored (without stream position fields)."""
    return {
        "id": event.event_id,
        "type": event.type,
        "schemaVersion": event.schema_version,
        "data": to_json_value(event.data),
        "metadata": metadata_to_dict(event.metadata),
    }


def recorded_from_dict(
    raw: Mapping[str, Any], *, stream_id: str, version: int, position: int
) -> RecordedEvent:
    return RecordedEvent(
        stream_id=stream_id,
        version=version,
        position=position,
        event_id=raw["id"],
        type=raw["type"],
        schema_version=int(raw["schemaVersion"]),
        data=raw["data"],
        metadata=metadata_from_dict(raw["metadata"]),
    )
