"""Tests of the integration-event contract (``gateway.integration``): mapping, envelope, schemas.

``validator(name)`` validates against a packaged schema with ``jsonschema`` (draft 2020-12, formats
checked); ``check_document(document)`` checks one published document against the envelope schema
and its type's data schema and the value rules (no exponent, every time in UTC with ``Z``);
``stored(events)`` appends domain events to a real SQLite store and reads them back through
``read_all``, as a publisher does.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from gateway.domain.events import DomainEvent
from gateway.domain.mapper import to_new_event
from gateway.integration.schema_files import ENVELOPE_SCHEMA, load_schema
from gateway.store.model import NO_STREAM, RecordedEvent
from tests.backends import opened_sqlite, read_everything
from tests.builders import metadata

_EXPONENT = re.compile(r"^[-+]?[0-9.]+[eE][-+]?[0-9]+$")
_PLAIN_DECIMAL = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?$")
_LOOKS_LIKE_TIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T")


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(load_schema(name), format_checker=FormatChecker())


def strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, string) of every string in a JSON value, keys included."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield f"{path}.{key}#key", key
            yield from strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from strings(item, f"{path}[{index}]")


def check_document(raw: bytes) -> dict[str, Any]:
    """Parse one published document and assert every rule of the contract on it; returns it."""
    document = json.loads(raw)
    errors = list(validator(ENVELOPE_SCHEMA).iter_errors(document))
    assert not errors, [e.message for e in errors]
    name = document["dataschema"].removeprefix("urn:meter-gateway:schema:")
    assert document["type"] == f"com.metergateway.{name}"
    errors = list(validator(name).iter_errors(document["data"]))
    assert not errors, (name, [f"{list(e.absolute_path)}: {e.message}" for e in errors])
    for path, text in strings(document):
        assert not _EXPONENT.match(text), f"exponent notation at {path}: {text!r}"
        if _LOOKS_LIKE_TIME.match(text):
            assert text.endswith("Z"), f"{path}: {text!r} is not UTC with Z"
    assert raw == json.dumps(document, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode(), \
        "not compact JSON with sorted keys"
    return document


def plain_decimal_text(text: str) -> bool:
    return bool(_PLAIN_DECIMAL.match(text))


async def stored(path: Path, streams: dict[str, Sequence[DomainEvent]]) -> list[RecordedEvent]:
    """Append each stream's events to the SQLite store at ``path``; every event of ``read_all``."""
    async with opened_sqlite(path) as store:
        for stream_id, events in streams.items():
            await store.append(stream_id, [to_new_event(e, metadata()) for e in events], NO_STREAM)
        recorded, _ = await read_everything(store)
    return recorded
