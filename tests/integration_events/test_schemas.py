"""The packaged JSON Schemas of the contract: complete, valid draft 2020-12, strict, and frozen.

A published schema file is never edited: subscribers validate against the file they downloaded. A
changed shape is a new file with the next version (``meter.reading.v2.json``) and a new contract
type; ``PUBLISHED_SHA256`` then gains a line, and no existing line ever changes.
"""
from __future__ import annotations

import copy
import fnmatch
import hashlib
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from gateway.integration import CONTRACT_TYPES
from gateway.integration.schema_files import ENVELOPE_SCHEMA, load_schema, schema_file, schema_names

from . import validator

REPO = Path(__file__).resolve().parents[2]

PUBLISHED_SHA256 = {
    "cloudevents.v1": "34d5fef3dc69092f87126efa51246b25c72d5883ee825d3b64fdf740b0d92561",
    "meter.alarm.v1": "30d827b7b97045bedf10abdf48ea5f6044ec91d2c15362d17dc84439c0e8d4e8",
    "meter.clock.v1": "e7589afd4bb5de5bd20ec72a5fdb8122ab6154569297fa3194948fc45fcd49a6",
    "meter.clocksync.v1": "548f08f21829649f120ac27cb054e076f720fe2ee194befd0b998be640826d32",
    "meter.gap.v1": "1390076c4006f5ba77b0578d7147ce36988745f337af3960786ba51d1583cc92",
    "meter.intervals.v1": "1ad9795dfabd1253f2d71b996009b5ade43f532b5731df25d06f02463e10a38e",
    "meter.reading.v1": "0836be1e4031a05609f40d150eb2833c0bcf5e2060321fd21a12da82c25a1b01",
    "meter.registered.v1": "4a1d0a7436c2c57f3c94d7ee9eba9189b493d1803947c42a76e08ab6a7a228a2",
}


def test_a_published_schema_is_never_edited() -> None:
    """Changing a published shape needs a new version file, not an edit of this one."""
    actual = {name: hashlib.sha256(schema_file(name).read_bytes()).hexdigest() for name in schema_names()}
    for name, digest in PUBLISHED_SHA256.items():
        assert actual.get(name) == digest, (
            f"schemas/{name}.json was changed or removed after it was published: restore it, and put the "
            f"new shape in a new version (e.g. {_next_version(name)}.json)")
    assert set(actual) == set(PUBLISHED_SHA256), "a new schema file: add its hash to PUBLISHED_SHA256"


def _next_version(name: str) -> str:
    return re.sub(r"v([0-9]+)$", lambda m: f"v{int(m[1]) + 1}", name)


def test_every_contract_type_has_its_schema_and_nothing_else_is_shipped() -> None:
    assert schema_names() == sorted([*CONTRACT_TYPES, ENVELOPE_SCHEMA])
    with pytest.raises(FileNotFoundError):
        schema_file("meter.reading.v0")


@pytest.mark.parametrize("name", sorted([*CONTRACT_TYPES, ENVELOPE_SCHEMA]))
def test_each_schema_is_valid_draft_2020_12_and_names_itself_by_its_dataschema(name: str) -> None:
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"urn:meter-gateway:schema:{name}"
    schema["title"] = "changed"  # each call gives a fresh copy
    assert load_schema(name)["title"] != "changed"


def test_the_wheel_declares_the_schema_files_as_package_data() -> None:
    """(A wheel built from this tree was checked by hand to contain them; building one here needs
    a newer setuptools than the test environment has.)"""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["gateway.integration"]
    folder = REPO / "gateway" / "integration"
    files = [p.relative_to(folder).as_posix() for p in (folder / "schemas").rglob("*") if p.is_file()]
    assert files and all(any(fnmatch.fnmatch(f, g) for g in globs) for f in files)


READING = {"meterId": "M1", "obis": "1.0.1.8.0.255", "quantity": "active_energy_import", "value": "42365130",
           "unit": "Wh", "captureTime": "2026-03-01T12:00:00Z", "readTime": "2026-03-01T12:00:03.250000Z"}
CLOCK = {"meterId": "M1", "meterTime": "2026-03-01T12:00:07.500000Z", "gatewayTime": "2026-03-01T12:00:00Z",
         "offset": {"value": "7.5", "unit": "s"}, "driftDetected": True, "driftThreshold": {"value": "5", "unit": "s"}}
ALARM = {"meterId": "M1", "kind": "meterEvent", "logObis": "0.0.99.98.0.255", "eventTime": "2026-03-01T11:00:00Z",
         "code": 1, "meaning": "power down"}


def _with(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(doc)
    target = changed
    for key in path[:-1]:
        target = target[key]
    if value is _DROP:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return changed


_DROP = object()


@pytest.mark.parametrize(("name", "good", "path", "bad"), [
    ("meter.reading.v1", READING, ("value",), "4.236513E+7"),  # exponent notation
    ("meter.reading.v1", READING, ("value",), 42365130),  # a JSON number: floats lose digits
    ("meter.reading.v1", READING, ("value",), "1,5"),
    ("meter.reading.v1", READING, ("captureTime",), "2026-03-01T13:00:00+01:00"),  # UTC with Z only
    ("meter.reading.v1", READING, ("captureTime",), "2026-03-01T12:00:00"),
    ("meter.reading.v1", READING, ("obis",), "1.0.1.8.0"),
    ("meter.reading.v1", READING, ("unit",), _DROP),
    ("meter.reading.v1", READING, ("postalCode",), "1234 AB"),  # no field beyond the contract
    ("meter.clock.v1", CLOCK, ("driftThreshold",), _DROP),  # a drift names its threshold
    ("meter.clock.v1", CLOCK, ("driftDetected",), False),  # ... and a plain check has none
    ("meter.clock.v1", CLOCK, ("offset", "unit"), _DROP),
    ("meter.alarm.v1", ALARM, ("kind",), "suspectReading"),  # each kind has its own fields
    ("meter.alarm.v1", ALARM, ("kind",), "fire"),
    ("meter.alarm.v1", ALARM, ("reason",), "x"),
])
def test_the_schemas_refuse_what_the_contract_rules_out(
        name: str, good: dict[str, Any], path: tuple[str, ...], bad: Any) -> None:
    assert validator(name).is_valid(good)
    assert not validator(name).is_valid(_with(good, path, bad))
