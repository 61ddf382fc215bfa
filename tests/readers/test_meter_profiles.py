"""Meter profiles as data: built-in profiles validate, fleet-config overrides apply or fail clearly."""
from __future__ import annotations

import pytest

from drivers.errors import ConfigError
from drivers.meters import CosemObject, apply_overrides, get_profile, known_profiles, normalize_obis, profile_for
from gateway.config.model import KNOWN_PROFILES


def test_every_make_and_model_of_the_fleet_config_has_a_profile() -> None:
    assert known_profiles() == dict(KNOWN_PROFILES)
    for make, models in KNOWN_PROFILES.items():
        for model in models:
            profile = get_profile(make, model)
            assert profile.make == make and profile.model == model
            assert profile.registers and profile.load_profile and profile.event_logs


def test_profile_facts() -> None:
    kamstrup = get_profile("kamstrup", "omnipower")
    e450 = get_profile("landis_gyr", "e450")
    assert kamstrup.client_address_for("none") == 16
    assert kamstrup.client_address_for("hls_gmac") == 1
    assert e450.get_with_list and not kamstrup.get_with_list
    assert get_profile("landis_gyr", "e360").has_quirk("clock-deviation-unspecified")
    assert CosemObject("1.0.1.8.0.255", 3) in e450.registers
    assert e450.register("1-0:32.7.0") == CosemObject("1.0.32.7.0.255", 3)


def test_overrides_replace_single_fields() -> None:
    overrides = {
        "use_release": False,
        "get_with_list": True,
        "max_list_size": 4,
        "registers": ["1-0:1.8.0.255", {"obis": "1.0.1.8.1.255", "class_id": 4}],
        "event_logs": ["0.0.99.98.0.255", "1-0:99.97.0"],
        "server_physical_address": 290,
        "quirks": ["clock-deviation-unspecified"],
    }
    profile = profile_for("kamstrup", "omnipower", overrides, meter_id="m-1")
    assert profile.use_release is False and profile.get_with_list is True and profile.max_list_size == 4
    assert profile.registers == (CosemObject("1.0.1.8.0.255", 3), CosemObject("1.0.1.8.1.255", 4))
    assert profile.event_logs == ("0.0.99.98.0.255", "1.0.99.97.0.255")
    assert profile.server_physical_address == 290
    assert profile.quirks == frozenset({"clock-deviation-unspecified"})
    # Untouched fields keep the built-in values; the built-in profile itself is unchanged.
    assert profile.load_profile == get_profile("kamstrup", "omnipower").load_profile
    assert get_profile("kamstrup", "omnipower").use_release is True


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"use_relase": False}, "unknown profile field 'use_relase'"),
        ({"max_list_size": 0}, "max_list_size: expected an integer in 1..255"),
        ({"get_with_list": "yes"}, "get_with_list: expected true or false"),
        ({"registers": "1.0.1.8.0.255"}, "registers: expected a list"),
        ({"registers": ["1.0.1.8"]}, "is not an OBIS code"),
        ({"load_profile": "1.0.99.1.0.256"}, "group above 255"),
        ({"quirks": ["fast-clock"]}, "unknown quirk"),
        ({"make": "landis_gyr"}, "make and model are chosen by the profile"),
    ],
)
def test_bad_overrides_are_refused_naming_the_meter(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        apply_overrides(get_profile("landis_gyr", "e450"), overrides, meter_id="lg-7")
    assert caught.value.meter_id == "lg-7"


def test_unknown_make_or_model() -> None:
    with pytest.raises(ConfigError, match="known: \\['kamstrup', 'landis_gyr'\\]"):
        get_profile("elster", "as300")
    with pytest.raises(ConfigError, match="unknown landis_gyr model 'e350'"):
        get_profile("landis_gyr", "e350")


def test_obis_normalisation() -> None:
    assert normalize_obis("1-0:1.8.0") == "1.0.1.8.0.255"
    assert normalize_obis("1-0:1.8.0.255") == "1.0.1.8.0.255"
    assert normalize_obis(" 0.0.96.1.0.255 ") == "0.0.96.1.0.255"
    assert normalize_obis("0.0.99.98.1.128") == "0.0.99.98.1.128"
