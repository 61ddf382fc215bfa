"""JSON form of event data and envelopes: Decimals as strings, datetimes as ISO-8601 UTC.

Both backends store exactly these strings/dicts, so a stream moved from SQLite to Cosmos (or read
back years later) decodes the same way. Decoding never drops keys it does not know.

Encoding is on every append's path, so ``dumps`` uses orjson (about ten times faster than the
standard module) and falls back to the standard module for what orjson cannot or would not write
the same way: integers beyond 64 bits, non-string keys, lone surrogates, NaN/Infinity (orjson would
write ``null``), and refused values (so the error raised is the one ``_default`` gives). The two
differ in the text only where JSON allows it (orjson writes non-ASCII as UTF-8, not ``\\uXXXX``);
both load to equal values. One loosening: orjson writes a UUID or an Enum (as its value) where the
standard module refused it. ``loads`` stays the standard module: orjson reads integers beyond 64
bits as floats.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Context, Decimal
from typing import Any, Mapping

import orjson

from gateway.store.model import EventMetadata, NewEvent, RecordedEvent


def plain_decimal(value: Decimal) -> Decimal:
    """The same number without a positive exponent (``4.236513E+7`` -> ``42365130``): a register's
    scaler makes such values, and ``str()`` of them is exponent notation, which people and many
    parsers do not expect. Finite values only."""
    if value.is_finite() and value.as_tuple().exponent > 0:  # type: ignore[operator]
        return value.quantize(_ONE, context=Context(prec=max(28, value.adjusted() + 1)))
    return value


def decimal_text(value: Decimal) -> str:
    """A Decimal as plain decimal text, never exponent notation (``1E-7`` -> ``0.0000001``)."""
    return format(value, "f") if value.is_finite() else str(value)


_ONE = Decimal(1)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, datetime):
        return iso_utc(value)
    raise TypeError(f"cannot store a {type(value).__name__} in event data: {value!r}")


def iso_utc(value: datetime) -> str:
    """ISO-8601 in UTC with an explicit 'Z'; naive datetimes are refused (they hide their zone)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: event times must be timezone-aware")
    try:
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    except OverflowError:  # 0001-01-01 at +02:00 is in year 0 in UTC
        raise ValueError(f"datetime {value!r} has no UTC form (outside years 1-9999)") from None


def parse_utc(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        # astimezone() would silently take the box's local zone; a stored time always has one.
        raise ValueError(f"timestamp {text!r} has no UTC offset")
    return value.astimezone(timezone.utc)


def to_json_value(data: Mapping[str, Any]) -> dict[str, Any]:
    """Plain JSON-ready dict (Decimal → str, datetime → ISO UTC), recursively."""
    return json.loads(dumps(data))


# Datetimes and dataclasses go to _default as with the standard module (orjson would write naive
# datetimes, offsets as "+00:00" and dataclasses on its own).
_ORJSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def dumps(data: Any) -> str:
    try:
        encoded = orjson.dumps(data, default=_default, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        return _dumps_stdlib(data)
    text = encoded.decode()  # (searching the str below is faster than searching the bytes)
    if "null" in text:
        # Maybe a NaN or an infinity that orjson wrote as null: keep what the standard module writes.
        return _dumps_stdlib(data)
    return text


def _dumps_stdlib(data: Any) -> str:
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


def new_event_from_dict(raw: Mapping[str, Any]) -> NewEvent:
    """The event of a stored envelope (``event_to_dict``'s form), not yet appended anywhere."""
    return NewEvent(
        event_id=raw["id"],
        type=raw["type"],
        schema_version=int(raw["schemaVersion"]),
        data=raw["data"],
        metadata=metadata_from_dict(raw["metadata"]),
    )


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
