"""The demo fleet agrees with the simulator that serves it, so `gateway demo` needs no edits.

The simulator's layout (drivers/simulator): `fleet(7)` gives meter i as sim-000i, served on its own
wrapper port base+i (wPort 1) and on one HDLC bus at port base+7, physical address 17+i. The demo
config uses base 14059. If the simulator's layout changes, this test says where the config drifted.
"""
from __future__ import annotations

from drivers.simulator import SecurityLevel
from drivers.simulator.fleet import fleet
from drivers.simulator.meter import (
    TEST_AUTHENTICATION_KEY,
    TEST_ENCRYPTION_KEY,
    TEST_LLS_PASSWORD,
)
from gateway.config import ConcentratorConfig, load_config, read_env_file

from .conftest import REPO

BASE_PORT = 14059
SIM_METERS = 7
LEVELS = {SecurityLevel.NONE: "none", SecurityLevel.LLS: "lls", SecurityLevel.HLS_GMAC: "hls_gmac"}


def test_demo_meters_match_the_simulated_fleet() -> None:
    config = load_config(REPO / "config" / "demo-fleet.toml")
    simulated = {m.meter_id: m for m in fleet(SIM_METERS)}
    served_addresses = {m.hdlc_address for m in simulated.values()}

    for meter in config.meters:
        conn = config.connection(meter.connection)
        assert isinstance(conn, ConcentratorConfig) and conn.host == "127.0.0.1"
        sim = simulated.get(meter.id)
        if sim is None:  # the meter nobody answers
            assert meter.framing == "hdlc" and meter.physical_address not in served_addresses
            assert conn.port == BASE_PORT + SIM_METERS
            continue
        index = int(meter.id.removeprefix("sim-"))
        assert meter.profile == sim.model
        assert meter.security.level == LEVELS[sim.security]
        if meter.framing == "wrapper":
            assert (conn.port, meter.wport) == (BASE_PORT + index, 1)
        else:
            assert (conn.port, meter.physical_address, meter.logical_address) == (
                BASE_PORT + SIM_METERS, sim.hdlc_address, 1)
    assert sum(1 for m in config.meters if m.id not in simulated) == 1


def test_demo_secrets_are_the_simulators_test_secrets() -> None:
    config = load_config(REPO / "config" / "demo-fleet.toml")
    env = read_env_file(REPO / "config" / "demo-fleet.env")

    for meter in config.meters:
        sec = meter.security
        if sec.password is not None:
            assert sec.password.resolve(env).reveal() == TEST_LLS_PASSWORD
        if sec.authentication_key is not None and sec.encryption_key is not None:
            assert sec.authentication_key.resolve_key(16, env).reveal() == TEST_AUTHENTICATION_KEY
            assert sec.encryption_key.resolve_key(16, env).reveal() == TEST_ENCRYPTION_KEY
