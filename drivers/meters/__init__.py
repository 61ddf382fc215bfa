"""Meter profiles per make and model, and per-meter overrides from the fleet config.

``get_profile("landis_gyr", "e450")`` returns the built-in profile; ``profile_for(make, model,
overrides)`` applies a meter's ``overrides`` table on top. Make keys follow the fleet config
(``gateway.config.model.KNOWN_PROFILES``): one data module per make.
"""
from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from drivers.errors import ConfigError
from drivers.meters import kamstrup, landis_gyr
from drivers.meters.profiles import (
    KNOWN_QUIRKS,
    CosemObject,
    MeterProfile,
    apply_overrides,
    normalize_obis,
    override_problems,
    profile_from_data,
)

_DATA: dict[str, dict[str, dict[str, Any]]] = {
    "kamstrup": kamstrup.PROFILES,
    "landis_gyr": landis_gyr.PROFILES,
}


def known_profiles() -> dict[str, frozenset[str]]:
    """Every make and its models, as the fleet config names them."""
    return {make: frozenset(models) for make, models in _DATA.items()}


@cache
def get_profile(make: str, model: str) -> MeterProfile:
    """The built-in profile of ``make``/``model`` (ConfigError naming the known ones if unknown)."""
    models = _DATA.get(make)
    if models is None:
        raise ConfigError(None, f"unknown meter make {make!r}; known: {sorted(_DATA)}")
    data = models.get(model)
    if data is None:
        raise ConfigError(None, f"unknown {make} model {model!r}; known: {sorted(models)}")
    return profile_from_data(make, model, data)


def profile_for(
    make: str, model: str, overrides: Mapping[str, Any] | None = None, *, meter_id: str | None = None
) -> MeterProfile:
    """The profile of one meter: the built-in one with its fleet-config overrides applied."""
    profile = get_profile(make, model)
    return apply_overrides(profile, overrides, meter_id=meter_id) if overrides else profile


__all__ = [
    "KNOWN_QUIRKS", "CosemObject", "MeterProfile", "apply_overrides", "get_profile", "known_profiles",
    "normalize_obis", "override_problems", "profile_for", "profile_from_data",
]
