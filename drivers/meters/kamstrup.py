"""Kamstrup meter profiles, as data (validated by ``drivers.meters.profiles``).

OMNIPOWER: DLMS/COSEM over the wrapper (IP variants) or HDLC (optical port, RS-485). The objects are
the Blue Book / IDIS standard ones the OMNIPOWER exposes on its management logical device.
Not verified on a real meter here: GET-with-list support (left off, so every object is read with
its own GET; enable it per meter with ``overrides.get_with_list = true`` once confirmed).
"""
from __future__ import annotations

from typing import Any

PROFILES: dict[str, dict[str, Any]] = {
    "omnipower": {
        "display_name": "Kamstrup OMNIPOWER",
        "public_client_address": 16,
        "client_address": 1,
        "server_logical_address": 1,
        "server_wport": 1,
        "server_physical_address": 17,
        "clock": "0.0.1.0.0.255",
        "serial": "0.0.96.1.0.255",
        "model_object": "0.0.96.1.1.255",
        "firmware": "1.0.0.2.0.255",
        "logical_device_name": "0.0.42.0.0.255",
        "registers": [
            {"obis": "1.0.1.8.0.255", "class_id": 3},  # active energy import (+A), total
            {"obis": "1.0.2.8.0.255", "class_id": 3},  # active energy export (-A), total
            {"obis": "1.0.1.7.0.255", "class_id": 3},  # active power import, instantaneous
            {"obis": "1.0.32.7.0.255", "class_id": 3},  # voltage L1, instantaneous
        ],
        "load_profile": "1.0.99.1.0.255",  # 15-minute load profile: clock, status, +A, -A
        "event_logs": ["0.0.99.98.0.255"],  # standard event log: clock, event code
        "use_release": True,
        "get_with_list": False,
        "max_list_size": 10,
        "max_pdu_size": 1024,
        "quirks": ["no-general-block-transfer"],
    },
}
