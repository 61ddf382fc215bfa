"""The JSON Schemas of the contract, shipped in the package (``gateway/integration/schemas/``).

One file per contract type and version, named after it (``meter.reading.v1.json``), describing the
``data`` of that type's documents; its ``$id`` is the type's ``dataschema`` URI. ``cloudevents.v1.json``
describes the envelope every document shares. A published file is never edited: a changed shape is a
new file with the next version (``meter.reading.v2.json``); ``tests/integration_events`` holds the
hash of every file to keep it so. Reading the files needs no third-party package; validating with
them is left to the caller (``jsonschema`` in the tests and the consumer example).
"""
from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any, Final

ENVELOPE_SCHEMA: Final[str] = "cloudevents.v1"
"""The schema of the envelope (the whole document), beside the data schemas of the types."""


def schema_file(name: str) -> Traversable:
    """The packaged file of schema ``name`` (a contract type like "meter.reading.v1", or
    ``ENVELOPE_SCHEMA``); raises ``FileNotFoundError`` for a name the package has no file of."""
    resource = files("gateway.integration").joinpath("schemas", f"{name}.json")
    if not resource.is_file():
        raise FileNotFoundError(f"no schema {name!r} in gateway/integration/schemas/")
    return resource


def load_schema(name: str) -> dict[str, Any]:
    """The parsed schema ``name``: a fresh dict each call, so a caller may change its copy."""
    result: dict[str, Any] = json.loads(_schema_text(name))
    return result


@cache
def _schema_text(name: str) -> str:
    return schema_file(name).read_text(encoding="utf-8")  # the files never change while a process runs


def schema_names() -> list[str]:
    """Every schema file the package ships, by name, sorted."""
    folder = files("gateway.integration").joinpath("schemas")
    return sorted(item.name.removesuffix(".json") for item in folder.iterdir() if item.name.endswith(".json"))


__all__ = ["ENVELOPE_SCHEMA", "load_schema", "schema_file", "schema_names"]
