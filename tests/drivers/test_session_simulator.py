"""DlmsSession against the meter simulator (drivers/simulator) over the TCP wrapper, HDLC over TCP and
the optical port (pty, mode E sign-on): every security level, block transfer, and each injected fault
ending in its typed error with the next poll succeeding."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import anyio
import pytest
from dlms_cosem import cosem, enumerations as enums

from drivers.errors import AccessDenied, AuthenticationFailed, ConnectionLost, FrameError, MeterTimeout
from drivers.security import HlsGmacSecurity, LowLevelSecurity, NoSecurity, SecuritySettings
from drivers.session import DlmsSession, FileInvocationCounterStore
from drivers.simulator.faults import NO_FAULTS, MeterFaults
from drivers.simulator.meter import (
    TEST_AUTHENTICATION_KEY,
    TEST_ENCRYPTION_KEY,
    TEST_LLS_PASSWORD,
    MeterConfig,
    SecurityLevel,
)
from drivers.simulator.server import Framing, MeterEndpoint, MeterSimulator, SimulatorConfig
from drivers.transport.base import Transport
from drivers.transport.hdlc import HdlcTcpTransport
from drivers.transport.optical import OpticalTransport
from drivers.transport.wrapper import WrapperTransport

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 3, 2, 0, 7, 30, tzinfo=timezone.utc)
ENERGY = cosem.CosemAttribute(enums.CosemInterface.REGISTER, cosem.Obis(1, 0, 1, 8, 0, 255), 2)
LOAD_PROFILE = cosem.CosemAttribute(enums.CosemInterface.PROFILE_GENERIC, cosem.Obis(1, 0, 99, 1, 0, 255), 2)
LEVELS = {
    "none": (SecurityLevel.NONE, NoSecurity()),
    "lls": (SecurityLevel.LLS, LowLevelSecurity(TEST_LLS_PASSWORD)),
    "hls": (SecurityLevel.HLS_GMAC, HlsGmacSecurity(authentication_key=TEST_AUTHENTICATION_KEY,
                                                    encryption_key=TEST_ENCRYPTION_KEY)),
}


@asynccontextmanager
async def simulator(level: SecurityLevel = SecurityLevel.NONE, hdlc_address: int = 17) -> AsyncIterator[MeterSimulator]:
    config = SimulatorConfig(
        meters=(MeterConfig(meter_id="sim-1", model="e450", serial="12340001", seed=5, security=level,
                            hdlc_address=hdlc_address),),
        start=NOW, speed=0.0,
    )
    async with MeterSimulator(config) as sim:
        yield sim


def transport(endpoint: MeterEndpoint, client: int, **options: object) -> Transport:
    if endpoint.framing is Framing.WRAPPER:
        return WrapperTransport(endpoint.meter_id, endpoint.host, endpoint.port, client_wport=client,
                                server_wport=endpoint.server_logical_address, connect_timeout_s=2)
    return HdlcTcpTransport(endpoint.meter_id, endpoint.host, endpoint.port, client_address=client,
                            server_logical_address=endpoint.server_logical_address,
                            server_physical_address=endpoint.physical_address, link_timeout_s=0.5, **options)


def session(link: Transport, security: SecuritySettings, tmp_path: Path, **options: object) -> DlmsSession:
    return DlmsSession(link, security=security, invocation_counters=FileInvocationCounterStore(tmp_path),
                       timeout_s=options.pop("timeout_s", 2.0), retries=options.pop("retries", 1),  # type: ignore[arg-type]
                       **options)  # type: ignore[arg-type]


def client_for(endpoint: MeterEndpoint, level: str) -> int:
    return endpoint.public_client if level == "none" else endpoint.reading_client


@pytest.mark.parametrize("framing", [Framing.WRAPPER, Framing.HDLC], ids=["wrapper", "hdlc"])
@pytest.mark.parametrize("level", ["none", "lls", "hls"])
async def test_poll_energy_and_a_day_of_profile(tmp_path: Path, framing: Framing, level: str) -> None:
    sim_level, security = LEVELS[level]
    async with simulator(sim_level) as sim:
        endpoint = sim.endpoint("sim-1", framing)
        for _ in range(2):  # the second poll proves the stored invocation counter is accepted
            async with session(transport(endpoint, client_for(endpoint, level)), security, tmp_path) as s:
                energy = await s.get(ENERGY)
                day = datetime(2026, 3, 1, tzinfo=timezone(timedelta(hours=1)))
                profile = await s.get_profile_range(LOAD_PROFILE, day, day + timedelta(hours=23, minutes=45))
    assert energy[0] in (0x05, 0x06, 0x14, 0x15)  # an integer register value
    assert profile[0] == 0x01 and profile[1:2] == b"\x60"  # array of 96 rows


async def test_extended_hdlc_address_above_127(tmp_path: Path) -> None:
    async with simulator(hdlc_address=300) as sim:
        endpoint = sim.endpoint("sim-1", Framing.HDLC)
        async with session(transport(endpoint, endpoint.public_client), NoSecurity(), tmp_path) as s:
            assert (await s.get(ENERGY))[0] in (0x05, 0x06, 0x14, 0x15)


async def test_optical_port_with_mode_e_sign_on(tmp_path: Path) -> None:
    async with simulator(SecurityLevel.LLS) as sim, sim.optical_port("sim-1") as port:
        endpoint = sim.endpoint("sim-1", Framing.HDLC)
        link = OpticalTransport("sim-1", port, client_address=endpoint.reading_client,
                                server_logical_address=endpoint.server_logical_address,
                                server_physical_address=endpoint.physical_address, link_timeout_s=2)
        async with session(link, LEVELS["lls"][1], tmp_path) as s:
            assert (await s.get(ENERGY))[0] in (0x05, 0x06, 0x14, 0x15)
    assert link.identification is not None and link.identification.startswith(b"/")


@pytest.mark.parametrize(
    ("framing", "faults", "error"),
    [
        (Framing.WRAPPER, MeterFaults(no_answer=True), MeterTimeout),
        (Framing.HDLC, MeterFaults(no_answer=True), MeterTimeout),
        (Framing.HDLC, MeterFaults(corrupt_fcs=True), FrameError),
        (Framing.WRAPPER, MeterFaults(disconnect_mid_block=True), ConnectionLost),
        (Framing.HDLC, MeterFaults(disconnect_mid_block=True), ConnectionLost),
        (Framing.WRAPPER, MeterFaults(access_denied=frozenset({"1.0.99.1.0.255"})), AccessDenied),
    ],
    ids=["wrapper-silent", "hdlc-silent", "hdlc-corrupt-fcs", "wrapper-cut-mid-block", "hdlc-cut-mid-block",
         "access-denied"],
)
@pytest.mark.slow
async def test_fault_ends_in_typed_error_within_deadline_and_next_poll_succeeds(
    tmp_path: Path, framing: Framing, faults: MeterFaults, error: type[Exception]
) -> None:
    async with simulator() as sim:
        endpoint = sim.endpoint("sim-1", framing)
        sim.set_faults("sim-1", faults)
        with anyio.fail_after(10):  # a guard against hanging only: the error must come from our deadlines
            with pytest.raises(error):
                async with session(transport(endpoint, endpoint.public_client), NoSecurity(), tmp_path,
                                   timeout_s=0.3, retries=1) as s:
                    await s.get(LOAD_PROFILE)
        sim.set_faults("sim-1", NO_FAULTS)
        async with session(transport(endpoint, endpoint.public_client), NoSecurity(), tmp_path) as s:
            assert (await s.get(ENERGY))[0] in (0x05, 0x06, 0x14, 0x15)


@pytest.mark.parametrize(
    ("level", "wrong"),
    [
        ("lls", LowLevelSecurity(b"87654321")),
        ("hls", HlsGmacSecurity(authentication_key=TEST_AUTHENTICATION_KEY, encryption_key=bytes(16))),
    ],
)
async def test_wrong_secret_is_authentication_failed_then_right_one_works(
    tmp_path: Path, level: str, wrong: SecuritySettings
) -> None:
    sim_level, right = LEVELS[level]
    async with simulator(sim_level) as sim:
        endpoint = sim.endpoint("sim-1", Framing.WRAPPER)
        with pytest.raises(AuthenticationFailed):
            async with session(transport(endpoint, endpoint.reading_client), wrong, tmp_path, timeout_s=1):
                pass
        async with session(transport(endpoint, endpoint.reading_client), right, tmp_path) as s:
            assert (await s.get(ENERGY))[0] in (0x05, 0x06, 0x14, 0x15)
