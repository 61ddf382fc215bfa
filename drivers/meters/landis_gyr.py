"""Landis+Gyr meter profiles, as data (validated by ``drivers.meters.profiles``).

E450 (residential, IDIS package 2), E360 (residential/SME) and E570 (commercial and industrial),
all IDIS-style: public client 16, management/reading client 1, management logical device 1.
IDIS devices answer GET-with-list; lists are kept at 10 objects so an answer stays within a few
blocks. Known quirks: some E360 firmwares send the clock with deviation 0x8000 ("not specified")
and local time, so the meter's configured timezone is needed; L+G meters above HDLC physical
address 127 need 4-byte extended addressing.
"""
from __future__ import annotations

from typing import Any

_IDENTITY = {
    "clock": "0.0.1.0.0.255",
    "serial": "0.0.96.1.0.255",
    "model_object": "0.0.96.1.1.255",
    "firmware": "1.0.0.2.0.255",
    "logical_device_name": "0.0.42.0.0.255",
}

_ADDRESSES = {
    "public_client_address": 16,
    "client_address": 1,
    "server_logical_address": 1,
    "server_wport": 1,
    "server_physical_address": 17,
}

_ENERGY_REGISTERS = [
    {"obis": "1.0.1.8.0.255", "class_id": 3},  # active energy import (+A), total
    {"obis": "1.0.2.8.0.255", "class_id": 3},  # active energy export (-A), total
    {"obis": "1.0.1.7.0.255", "class_id": 3},  # active power import, instantaneous
    {"obis": "1.0.32.7.0.255", "class_id": 3},  # voltage L1, instantaneous
]

PROFILES: dict[str, dict[str, Any]] = {
    "e450": {
        "display_name": "Landis+Gyr E450",
        **_ADDRESSES,
        **_IDENTITY,
        "registers": _ENERGY_REGISTERS,
        "load_profile": "1.0.99.1.0.255",  # IDIS load profile 1 (15 min)
        "event_logs": ["0.0.99.98.0.255"],  # IDIS standard event log
        "use_release": True,
        "get_with_list": True,
        "max_list_size": 10,
        "max_pdu_size": 512,
        "quirks": ["no-general-block-transfer", "hdlc-extended-address-above-127"],
    },
    "e360": {
        "display_name": "Landis+Gyr E360",
        **_ADDRESSES,
        **_IDENTITY,
        "registers": _ENERGY_REGISTERS,
        "load_profile": "1.0.99.1.0.255",
        "event_logs": ["0.0.99.98.0.255"],
        "use_release": True,
        "get_with_list": True,
        "max_list_size": 10,
        "max_pdu_size": 512,
        "quirks": ["no-general-block-transfer", "clock-deviation-unspecified", "hdlc-extended-address-above-127"],
    },
    "e570": {
        "display_name": "Landis+Gyr E570",
        **_ADDRESSES,
        **_IDENTITY,
        "registers": _ENERGY_REGISTERS + [
            {"obis": "1.0.3.8.0.255", "class_id": 3},  # reactive energy import (+R), total
            {"obis": "1.0.4.8.0.255", "class_id": 3},  # reactive energy export (-R), total
        ],
        "load_profile": "1.0.99.1.0.255",
        "event_logs": ["0.0.99.98.0.255", "1.0.99.97.0.255"],  # standard event log, power failure log
        "use_release": True,
        "get_with_list": True,
        "max_list_size": 10,
        "max_pdu_size": 1024,
        "quirks": ["no-general-block-transfer", "hdlc-extended-address-above-127"],
    },
}
