"""Every shipped config (config/*.toml) loads, and each of its meters gets a profile and a session;
the example fleet's meters, moved onto a simulator that serves their models, are polled.

The example fleet (config/example-fleet.toml) documents every key for operators: a key it shows that
the code does not honour (an override field that does not exist) is a meter failing every poll. So
its meters are polled for real: each one the simulator can play (same make, model and security
level; the simulator has no E570) is served by a simulated meter, and only its connection (host,
port, addresses, client SAP: the simulator's conventions) is moved there. Its profile, overrides and
security are the example's own.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from drivers.counters import FileInvocationCounterStore
from drivers.meters import profile_for
from drivers.simulator import Framing, MeterSimulator, SecurityLevel, SimulatorConfig
from drivers.simulator.meter import (
    MODELS,
    TEST_AUTHENTICATION_KEY,
    TEST_ENCRYPTION_KEY,
    TEST_LLS_PASSWORD,
    MeterConfig as SimMeter,
)
from gateway.config import ConcentratorConfig, FleetConfig, SqliteStoreConfig, Timeouts, load_config
from gateway.config.model import MeterConfig
from gateway.polling.meter_link import open_session
from gateway.polling.scheduler import ALL_STEPS, Scheduler
from gateway.wiring import open_poller

from .conftest import REPO

pytestmark = pytest.mark.anyio

EXAMPLES = sorted((REPO / "config").glob("*.toml"))
LEVELS = {"none": SecurityLevel.NONE, "lls": SecurityLevel.LLS, "hls_gmac": SecurityLevel.HLS_GMAC}


def _test_secrets(config: FleetConfig) -> dict[str, str]:
    """Every environment secret the config references, set to the simulator's test secret of its kind."""
    environ: dict[str, str] = {}
    for meter in config.meters:
        sec = meter.security
        for ref, value in ((sec.password, TEST_LLS_PASSWORD.decode()), (sec.authentication_key,
                           TEST_AUTHENTICATION_KEY.hex()), (sec.encryption_key, TEST_ENCRYPTION_KEY.hex())):
            if ref is not None and ref.kind == "env":
                environ[ref.target] = value
    return environ


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_config_loads_and_builds_every_meters_profile_and_session(path: Path, tmp_path: Path) -> None:
    assert EXAMPLES, "config/ has no example configs"
    config = load_config(path, check_secret_files=False)
    environ = _test_secrets(config)

    for meter in config.meters:
        profile = profile_for(meter.make, meter.profile, meter.overrides, meter_id=meter.id)
        for key in meter.overrides:  # every override took effect
            assert getattr(profile, key) is not None, (meter.id, key)
        sec = meter.security
        if any(ref is not None and ref.kind == "file" for ref in (sec.password, sec.authentication_key,
                                                                    sec.encryption_key)):
            continue  # a file secret is read when the session is built: the config tests check those
        counters = FileInvocationCounterStore(tmp_path)
        session = open_session(config, meter, profile, counters=counters, environ=environ, retries=0)
        assert session is not None


def _on_simulator(config: FleetConfig, simulator: MeterSimulator, db: Path) -> FleetConfig:
    """The example fleet with each simulated meter's connection moved to its simulated endpoint."""
    concentrators: list[ConcentratorConfig] = []
    meters: list[MeterConfig] = []
    timeouts = Timeouts(connect_s=1.0, response_s=2.0)
    for meter in config.meters:
        if meter.id not in simulator.meters:
            continue
        framing = Framing.WRAPPER if meter.framing == "wrapper" else Framing.HDLC
        endpoint = simulator.endpoint(meter.id, framing)
        client = endpoint.public_client if meter.security.level == "none" else endpoint.reading_client
        conn = ConcentratorConfig(f"sim-{meter.id}", endpoint.host, endpoint.port, meter.framing, 1, timeouts)
        concentrators.append(conn)
        if meter.framing == "wrapper":
            meters.append(replace(meter, connection=conn.id, client_address=client,
                                  wport=endpoint.server_logical_address))
        else:
            meters.append(replace(meter, connection=conn.id, client_address=client,
                                  logical_address=endpoint.server_logical_address,
                                  physical_address=endpoint.physical_address))
    return replace(config, store=SqliteStoreConfig(db), concentrators=tuple(concentrators), optical_ports=(),
                   meters=tuple(meters))


async def test_the_example_fleets_meters_are_polled_against_the_simulator(tmp_path: Path) -> None:
    config = load_config(REPO / "config" / "example-fleet.toml")
    simulated = [
        SimMeter(meter_id=m.id, model=m.profile, serial=f"{90000001 + i}", seed=i, security=LEVELS[m.security.level],
                 hdlc_address=m.physical_address or 17 + i)
        for i, m in enumerate(config.meters) if m.profile in MODELS
    ]
    assert {m.model for m in simulated} == {"omnipower", "e450", "e360"}
    assert len(simulated) == len(config.meters) - 1  # all but the E570 on the optical probe

    sim_config = SimulatorConfig(meters=tuple(simulated), framing=Framing.BOTH, speed=0.0)
    async with MeterSimulator(sim_config) as simulator:
        fleet = _on_simulator(config, simulator, tmp_path / "events.db")
        with anyio.fail_after(30):
            async with open_poller(fleet, now=simulator.clock.now, environ=_test_secrets(config)) as poller:
                summaries = await Scheduler(fleet, poller).run_cycle(ALL_STEPS)

    assert {s.meter_id for s in summaries} == {m.meter_id for m in simulated}
    assert all(s.ok for s in summaries), {s.meter_id: s.describe_error() for s in summaries if not s.ok}
    assert all(s.rows_read > 0 and s.registers_read > 0 for s in summaries)
