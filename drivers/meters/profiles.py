"""Meter profiles: what the drivers need to know about a make and model, built from plain data.

A profile says how to reach a meter (default client and server addresses), what to read (identity
objects, registers with their interface classes, the load profile and event logs), how the meter
behaves (needs a release or not, supports GET-with-list or not, how long a list may be) and which
known quirks apply. The per-make modules (``kamstrup``, ``landis_gyr``) hold the defaults as plain
dicts; a meter's ``overrides`` table from the fleet config goes through the same validation and
replaces single fields, so a field engineer can correct one meter without a code change.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from drivers.errors import ConfigError

# Quirks the readers act on (others in a profile are documentation for the field engineer).
QUIRK_DEVIATION_UNSPECIFIED = "clock-deviation-unspecified"  # clock sends 0x8000: use the configured zone
QUIRK_DEVIATION_INVERTED = "clock-deviation-inverted"  # sends +60 for UTC+1, against COSEM's sign
QUIRK_NULL_PROFILE_TIMESTAMPS = "profile-null-timestamps"  # regular rows carry a null clock cell
KNOWN_QUIRKS = frozenset({
    QUIRK_DEVIATION_UNSPECIFIED,
    QUIRK_DEVIATION_INVERTED,
    QUIRK_NULL_PROFILE_TIMESTAMPS,
    "no-general-block-transfer",
    "hdlc-extended-address-above-127",
})

_DOTTED = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")
_IEC = re.compile(r"^(\d{1,3})-(\d{1,3}):(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:\.(\d{1,3}))?$")


def normalize_obis(text: str) -> str:
    """``"1-0:1.8.0.255"``, ``"1-0:1.8.0"`` or ``"1.0.1.8.0.255"`` -> ``"1.0.1.8.0.255"``."""
    if not isinstance(text, str):
        raise ConfigError(None, f"OBIS code must be a string, got {type(text).__name__}")
    match = _DOTTED.match(text.strip()) or _IEC.match(text.strip())
    if match is None:
        raise ConfigError(None, f"{text!r} is not an OBIS code (A.B.C.D.E.F or A-B:C.D.E[.F])")
    parts = [int(p) if p is not None else 255 for p in match.groups()]
    if any(p > 255 for p in parts):
        raise ConfigError(None, f"OBIS code {text!r} has a group above 255")
    return ".".join(map(str, parts))


@dataclass(frozen=True)
class CosemObject:
    """An object to read: OBIS code and COSEM interface class (1 data, 3 register, 4 extended register ...)."""

    obis: str
    class_id: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "obis", normalize_obis(self.obis))
        if not isinstance(self.class_id, int) or not 1 <= self.class_id <= 0xFFFF:
            raise ConfigError(None, f"class id {self.class_id!r} of {self.obis} is not a COSEM interface class")


@dataclass(frozen=True)
class MeterProfile:
    make: str
    model: str
    display_name: str
    # Client SAPs: the public client (no security) and the reading client for LLS / HLS.
    public_client_address: int
    client_address: int
    # Server addresses: HDLC upper (logical device) address, wrapper destination wPort, and the
    # HDLC physical address used point to point (optical port); on a bus each meter's own is configured.
    server_logical_address: int
    server_wport: int
    server_physical_address: int
    clock: str
    serial: str
    model_object: str | None
    firmware: str | None
    logical_device_name: str | None
    registers: tuple[CosemObject, ...]
    load_profile: str | None
    event_logs: tuple[str, ...]
    use_release: bool
    get_with_list: bool
    max_list_size: int
    max_pdu_size: int
    quirks: frozenset[str]

    @property
    def key(self) -> tuple[str, str]:
        return self.make, self.model

    def client_address_for(self, security_level: str) -> int:
        """The client SAP for a fleet-config security level ("none", "lls", "hls_gmac")."""
        if security_level == "none":
            return self.public_client_address
        if security_level in ("lls", "hls_gmac"):
            return self.client_address
        raise ConfigError(None, f"unknown security level {security_level!r}")

    def register(self, obis: str) -> CosemObject:
        """The profile's object for ``obis``, or a class 3 register if the profile does not list it."""
        wanted = normalize_obis(obis)
        for item in self.registers:
            if item.obis == wanted:
                return item
        return CosemObject(wanted, 3)

    def has_quirk(self, quirk: str) -> bool:
        return quirk in self.quirks


_FIELDS = {f.name: f for f in dataclasses.fields(MeterProfile)}
_INT_FIELDS = {
    "public_client_address": (1, 0x7F), "client_address": (1, 0x7F), "server_logical_address": (1, 0x3FFF),
    "server_wport": (0, 0xFFFF), "server_physical_address": (16, 0x3FFF), "max_list_size": (1, 255),
    "max_pdu_size": (64, 0xFFFF),
}
_OBIS_FIELDS = ("clock", "serial")
_OPTIONAL_OBIS_FIELDS = ("model_object", "firmware", "logical_device_name", "load_profile")
_BOOL_FIELDS = ("use_release", "get_with_list")
# Identity of a profile: an override must not turn one make into another.
_FIXED_FIELDS = ("make", "model")


def _field_value(name: str, value: Any, where: str) -> Any:
    def fail(expected: str) -> ConfigError:
        return ConfigError(None, f"{where}.{name}: expected {expected}, got {value!r}")

    if name in _INT_FIELDS:
        low, high = _INT_FIELDS[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise fail(f"an integer in {low}..{high}")
        return value
    if name in _BOOL_FIELDS:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if name in _OBIS_FIELDS:
        return _obis(value, f"{where}.{name}")
    if name in _OPTIONAL_OBIS_FIELDS:
        return None if value is None or value == "" else _obis(value, f"{where}.{name}")
    if name == "display_name":
        if not isinstance(value, str) or not value:
            raise fail("a non-empty string")
        return value
    if name == "registers":
        return tuple(_register(item, f"{where}.{name}") for item in _sequence(value, f"{where}.{name}"))
    if name == "event_logs":
        return tuple(_obis(item, f"{where}.{name}") for item in _sequence(value, f"{where}.{name}"))
    if name == "quirks":
        items = list(_sequence(value, f"{where}.{name}"))
        if not all(isinstance(q, str) for q in items):
            raise fail("a list of quirk names")
        unknown = sorted(set(items) - KNOWN_QUIRKS)
        if unknown:
            hints = "".join(_did_you_mean(q, KNOWN_QUIRKS) for q in unknown)
            raise ConfigError(None, f"{where}.quirks: unknown quirk(s) {unknown}{hints or f'; known: {sorted(KNOWN_QUIRKS)}'}")
        return frozenset(items)
    known = sorted(set(_FIELDS) - set(_FIXED_FIELDS))
    raise ConfigError(None, f"{where}: unknown profile field {name!r}{_did_you_mean(name, known) or f'; known: {known}'}")


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def _sequence(value: Any, where: str) -> Iterable[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, frozenset, set)):
        raise ConfigError(None, f"{where}: expected a list, got {value!r}")
    return value


def _obis(value: Any, where: str) -> str:
    try:
        return normalize_obis(value)
    except ConfigError as exc:
        raise ConfigError(None, f"{where}: {exc.message}") from None


def _register(item: Any, where: str) -> CosemObject:
    if isinstance(item, CosemObject):
        return item
    if isinstance(item, str):
        return CosemObject(_obis(item, where), 3)
    if isinstance(item, Mapping) and set(item) <= {"obis", "class_id"} and "obis" in item:
        class_id = item.get("class_id", 3)
        if isinstance(class_id, bool) or not isinstance(class_id, int):
            raise ConfigError(None, f"{where}: class_id must be an integer, got {class_id!r}")
        return CosemObject(_obis(item["obis"], where), class_id)
    raise ConfigError(None, f"{where}: a register is an OBIS string or {{obis, class_id}}, got {item!r}")


def profile_from_data(make: str, model: str, data: Mapping[str, Any]) -> MeterProfile:
    """Build and validate a profile from its data dict (every field except make/model required)."""
    where = f"profile {make}/{model}"
    missing = sorted(set(_FIELDS) - set(_FIXED_FIELDS) - set(data))
    if missing:
        raise ConfigError(None, f"{where}: missing field(s) {missing}")
    values = {name: _field_value(name, value, where) for name, value in data.items()}
    return MeterProfile(make=make, model=model, **values)


def override_problems(overrides: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every problem of a meter's ``overrides`` table, as (field, message) pairs; empty when usable.

    The fleet config calls this at load time, so ``gateway check-config`` reports a misspelt field, a
    bad OBIS code, a wrong type or an unknown quirk under its key path instead of the meter failing
    every poll with the first of them. ``apply_overrides`` accepts exactly the tables with no problems.
    """
    problems: list[tuple[str, str]] = []
    for name, value in overrides.items():
        if name in _FIXED_FIELDS:
            problems.append((name, "make and model are chosen by the profile, not overridden"))
            continue
        try:
            _field_value(name, value, "overrides")
        except ConfigError as exc:
            message = exc.message
            for prefix in (f"overrides.{name}: ", "overrides: "):
                message = message.removeprefix(prefix)
            problems.append((name, message))
    return problems


def apply_overrides(profile: MeterProfile, overrides: Mapping[str, Any], *, meter_id: str | None = None) -> MeterProfile:
    """The profile with the fields named in ``overrides`` (the meter's fleet-config table) replaced.

    Values are validated like the built-in data; an unknown field or a bad value is a ConfigError
    naming the meter, so a typo in the fleet config cannot silently fall back to the default.
    """
    if not isinstance(overrides, Mapping):
        raise ConfigError(meter_id, f"overrides must be a table, got {type(overrides).__name__}")
    where = f"meter {meter_id} overrides" if meter_id else "overrides"
    changes: dict[str, Any] = {}
    for name, value in overrides.items():
        if name in _FIXED_FIELDS:
            raise ConfigError(meter_id, f"{where}.{name}: make and model are chosen by the profile, not overridden")
        try:
            changes[name] = _field_value(name, value, where)
        except ConfigError as exc:
            raise ConfigError(meter_id, exc.message) from None
    return dataclasses.replace(profile, **changes)
