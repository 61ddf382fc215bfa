"""Tests of the gateway pipeline: scheduler, poller, health, and the run/poll/status/demo commands.

``fleet_toml`` writes a real fleet config for meters served by a running ``MeterSimulator`` (its
ephemeral ports), in the demo fleet's layout: even meters as IP meters on their own wrapper port,
odd meters on one HDLC bus, plus optionally a meter on the bus that nobody answers; its store is
SQLite, or Cosmos DB through the outbox with ``store=cosmos_store(...)``.
"""
from __future__ import annotations

from drivers.simulator import Framing, MeterSimulator, SecurityLevel
from drivers.simulator.meter import TEST_AUTHENTICATION_KEY, TEST_ENCRYPTION_KEY, TEST_LLS_PASSWORD

ABSENT = "absent-0099"
ABSENT_ADDRESS = 99  # no simulated meter answers at this HDLC physical address
SECRETS = {
    "PIPELINE_LLS_PASSWORD": TEST_LLS_PASSWORD.decode(),
    "PIPELINE_HLS_AK": TEST_AUTHENTICATION_KEY.hex(),
    "PIPELINE_HLS_EK": TEST_ENCRYPTION_KEY.hex(),
}
_MAKES = {"omnipower": ("kamstrup", "omnipower"), "e450": ("landis_gyr", "e450"), "e360": ("landis_gyr", "e360")}
_SECURITY = {
    SecurityLevel.NONE: '{ level = "none" }',
    SecurityLevel.LLS: '{ level = "lls", password = { env = "PIPELINE_LLS_PASSWORD" } }',
    SecurityLevel.HLS_GMAC: '{ level = "hls_gmac", authentication_key = { env = "PIPELINE_HLS_AK" }, '
                            'encryption_key = { env = "PIPELINE_HLS_EK" } }',
}


def fleet_toml(
    simulator: MeterSimulator,
    db_path: str,
    *,
    absent: bool = True,
    deadline_s: float = 1.5,
    response_s: float = 0.5,
    connect_s: float = 0.5,
    retries: int = 1,
    interval_s: float = 900,
    max_concurrent: int = 8,
    store: str | None = None,
) -> str:
    """A fleet config (TOML text) for every meter of ``simulator``; ``store``: a ``[store]`` table
    (``cosmos_store``) instead of SQLite at ``db_path``."""
    lines = [
        'gateway_id = "pipeline-test"',
        'default_timezone = "Europe/Copenhagen"',
        "clock_drift_threshold_s = 5",
        *(store.splitlines() if store is not None else ["[store]", 'kind = "sqlite"', f'path = "{db_path}"']),
    ]
    for name in ("registers", "load_profile", "clock_check", "event_log"):
        lines += [f"[schedules.{name}]", f"interval_s = {interval_s}", "jitter_s = 0.5"]
    lines += [
        "[limits]",
        f"max_concurrent_polls = {max_concurrent}",
        f"meter_deadline_s = {deadline_s}",
        f"retries = {retries}",
        "backoff_initial_s = 0.05",
        "backoff_max_s = 0.2",
    ]
    timeouts = f"timeouts = {{ connect_s = {connect_s}, response_s = {response_s} }}"
    bus_port = None
    meters = []
    for index, meter_id in enumerate(sorted(simulator.meters)):
        sim = simulator.meters[meter_id].config
        make, profile = _MAKES[sim.model]
        common = [
            "[[meters]]", f'id = "{meter_id}"', f'make = "{make}"', f'profile = "{profile}"', "client_address = 1",
            f"security = {_SECURITY[sim.security]}", "max_power_w = 69000",
        ]
        if index % 2 == 0:
            endpoint = simulator.endpoint(meter_id, Framing.WRAPPER)
            lines += ["[[concentrators]]", f'id = "ip-{meter_id}"', 'host = "127.0.0.1"', f"port = {endpoint.port}",
                      'framing = "wrapper"', "max_sessions = 1", timeouts]
            meters += [*common, f'connection = "ip-{meter_id}"', "wport = 1"]
        else:
            endpoint = simulator.endpoint(meter_id, Framing.HDLC)
            bus_port = endpoint.port
            meters += [*common, 'connection = "bus-0"', f"physical_address = {endpoint.physical_address}",
                       "logical_address = 1"]
    assert bus_port is not None, "the fleet needs at least two meters for a bus"
    lines += ["[[concentrators]]", 'id = "bus-0"', 'host = "127.0.0.1"', f"port = {bus_port}",
              'framing = "hdlc"', "max_sessions = 1", timeouts]
    if absent:
        meters += ["[[meters]]", f'id = "{ABSENT}"', 'make = "landis_gyr"', 'profile = "e450"',
                   'connection = "bus-0"', f"physical_address = {ABSENT_ADDRESS}", "logical_address = 1",
                   "client_address = 1", 'security = { level = "none" }', "max_power_w = 69000"]
    return "\n".join(lines + meters) + "\n"


def cosmos_store(endpoint: str, database: str, container: str, key_env: str, outbox_path: str) -> str:
    """A ``[store]`` table for Cosmos DB through the local outbox; TLS unverified (the local test
    server's self-signed certificate only)."""
    return "\n".join([
        "[store]", 'kind = "cosmos"', f'endpoint = "{endpoint}"', f'database = "{database}"',
        f'container = "{container}"', f'key = {{ env = "{key_env}" }}', "verify_tls = false",
        f'outbox_path = "{outbox_path}"', "outbox_max_mb = 64",
    ])
