"""SET and ACTION through DlmsSession against the meter simulator, at every security level and over
both framings: the clock is set (normal and with block transfer), clock methods run, and the
simulator's access rights refuse what a client may not do (issue 14, item 1)."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from dlms_cosem import cosem, enumerations as enums

from drivers.errors import AccessDenied, ConfigError, DataAccessRefused
from drivers.simulator.meter import AccessRight, MeterConfig, SecurityLevel
from drivers.simulator.objects import encode_cosem_datetime
from drivers.simulator.server import Framing, MeterSimulator, SimulatorConfig

try:
    from .test_session_simulator import ENERGY, LEVELS, NOW, client_for, session, transport
except ImportError:
    from test_session_simulator import ENERGY, LEVELS, NOW, client_for, session, transport

pytestmark = pytest.mark.anyio

CLOCK_OBIS = cosem.Obis(0, 0, 1, 0, 0, 255)
CLOCK_TIME = cosem.CosemAttribute(enums.CosemInterface.CLOCK, CLOCK_OBIS, 2)
SHIFT_TIME = cosem.CosemMethod(enums.CosemInterface.CLOCK, CLOCK_OBIS, 6)
ADJUST_TO_QUARTER = cosem.CosemMethod(enums.CosemInterface.CLOCK, CLOCK_OBIS, 1)
UTC_PLUS_1 = timezone(timedelta(hours=1))


def clock_value(at: datetime) -> bytes:
    """The A-XDR octet string of a COSEM date-time for ``at`` (UTC+1 wall time, deviation -60)."""
    local = at.astimezone(UTC_PLUS_1).replace(tzinfo=None)
    return b"\x09\x0c" + encode_cosem_datetime(local, -60)


@asynccontextmanager
async def simulator(level: SecurityLevel, **meter: object) -> AsyncIterator[MeterSimulator]:
    config = SimulatorConfig(
        meters=(MeterConfig(meter_id="sim-1", model="e450", serial="12340001", seed=5, security=level,
                            clock_offset_s=90.0, **meter),),  # type: ignore[arg-type]
        start=NOW, speed=0.0,
    )
    async with MeterSimulator(config) as sim:
        yield sim


@pytest.mark.parametrize("framing", [Framing.WRAPPER, Framing.HDLC], ids=["wrapper", "hdlc"])
@pytest.mark.parametrize("level", ["lls", "hls"])
async def test_set_clock_at_each_authenticated_level(tmp_path: Path, framing: Framing, level: str) -> None:
    sim_level, security = LEVELS[level]
    async with simulator(sim_level) as sim:
        meter = sim.meter("sim-1")
        assert meter.clock_offset_seconds(NOW) == pytest.approx(90.0)
        endpoint = sim.endpoint("sim-1", framing)
        async with session(transport(endpoint, client_for(endpoint, level)), security, tmp_path) as s:
            await s.set(CLOCK_TIME, clock_value(NOW))
            assert s.usable
            assert (await s.get(ENERGY))[0] in (0x05, 0x06)  # the association goes on after a SET
        assert meter.clock_offset_seconds(NOW) == pytest.approx(0.0, abs=0.01)
        assert meter.sets == [("0.0.1.0.0.255", 2)]


async def test_the_public_client_is_read_only(tmp_path: Path) -> None:
    sim_level, security = LEVELS["none"]
    async with simulator(sim_level) as sim:
        endpoint = sim.endpoint("sim-1", Framing.WRAPPER)
        async with session(transport(endpoint, endpoint.public_client), security, tmp_path) as s:
            with pytest.raises(AccessDenied) as denied:
                await s.set(CLOCK_TIME, clock_value(NOW))
            with pytest.raises(AccessDenied) as not_executed:
                await s.action(SHIFT_TIME, b"\x10\xff\xa6")
            assert s.usable
            assert (await s.get(ENERGY))[0] in (0x05, 0x06)
        assert sim.meter("sim-1").clock_offset_seconds(NOW) == pytest.approx(90.0)
    assert denied.value.result == "READ_WRITE_DENIED"
    assert not_executed.value.result == "READ_WRITE_DENIED"
    assert "SET 0-0:1.0.0.255 attr 2 refused" in str(denied.value)


@pytest.mark.parametrize("level", ["lls", "hls"])
async def test_a_read_only_clock_refuses_set_and_action(tmp_path: Path, level: str) -> None:
    sim_level, security = LEVELS[level]
    async with simulator(sim_level, clock_read_only=True) as sim:
        endpoint = sim.endpoint("sim-1", Framing.WRAPPER)
        async with session(transport(endpoint, endpoint.reading_client), security, tmp_path) as s:
            with pytest.raises(AccessDenied, match="READ_WRITE_DENIED"):
                await s.set(CLOCK_TIME, clock_value(NOW))
            with pytest.raises(AccessDenied, match="READ_WRITE_DENIED"):
                await s.action(ADJUST_TO_QUARTER, b"\x0f\x00")
            assert s.usable
        assert sim.meter("sim-1").clock_offset_seconds(NOW) == pytest.approx(90.0)


async def test_rights_are_per_object_and_level(tmp_path: Path) -> None:
    # HLS only: an LLS client is refused the clock, an HLS one (another meter) may set it.
    hls_only = (AccessRight("0.0.1.0.0.255", 2, method=False, levels=frozenset({SecurityLevel.HLS_GMAC})),)
    async with simulator(SecurityLevel.LLS, rights=hls_only) as sim:
        endpoint = sim.endpoint("sim-1", Framing.WRAPPER)
        async with session(transport(endpoint, endpoint.reading_client), LEVELS["lls"][1], tmp_path) as s:
            with pytest.raises(AccessDenied):
                await s.set(CLOCK_TIME, clock_value(NOW))
    async with simulator(SecurityLevel.HLS_GMAC, rights=hls_only) as sim:
        endpoint = sim.endpoint("sim-1", Framing.WRAPPER)
        async with session(transport(endpoint, endpoint.reading_client), LEVELS["hls"][1], tmp_path) as s:
            await s.set(CLOCK_TIME, clock_value(NOW))


async def test_a_value_of_the_wrong_type_is_a_data_access_refusal_not_access_denied(tmp_path: Path) -> None:
    async with simulator(SecurityLevel.LLS) as sim:
        endpoint = sim.endpoint("sim-1", Framing.WRAPPER)
        async with session(transport(endpoint, endpoint.reading_client), LEVELS["lls"][1], tmp_path) as s:
            with pytest.raises(DataAccessRefused) as refused:
                await s.set(CLOCK_TIME, b"\x12\x00\x01")  # a long-unsigned where a date-time belongs
            assert s.usable
    assert not isinstance(refused.value, AccessDenied)
    assert refused.value.result == "TYPE_UNMATCHED"


@pytest.mark.parametrize("level", ["lls", "hls"])
async def test_shift_time_and_adjust_to_quarter(tmp_path: Path, level: str) -> None:
    sim_level, security = LEVELS[level]
    async with simulator(sim_level) as sim:
        meter = sim.meter("sim-1")
        endpoint = sim.endpoint("sim-1", Framing.WRAPPER)
        async with session(transport(endpoint, endpoint.reading_client), security, tmp_path) as s:
            assert await s.action(SHIFT_TIME, b"\x10" + (-90).to_bytes(2, "big", signed=True)) is None
            assert meter.clock_offset_seconds(NOW) == pytest.approx(0.0, abs=0.01)
            with pytest.raises(DataAccessRefused, match="SCOPE_OF_ACCESS_VIOLATED"):
                await s.action(SHIFT_TIME, b"\x10" + (3600).to_bytes(2, "big", signed=True))
            await s.action(ADJUST_TO_QUARTER, b"\x0f\x00")
        # NOW is 00:07:30 true; the meter clock was right, so the nearest quarter is 00:00 (back 450 s).
        assert meter.clock_offset_seconds(NOW) == pytest.approx(-450.0, abs=0.01)
        assert meter.actions == [("0.0.1.0.0.255", 6), ("0.0.1.0.0.255", 6), ("0.0.1.0.0.255", 1)]


@pytest.mark.parametrize("level", ["lls", "hls"])
async def test_set_with_block_transfer_when_the_value_exceeds_the_pdu_size(tmp_path: Path, level: str) -> None:
    # The meter announces 64-byte APDUs in its AARE: a SET of the clock (27 bytes, 57 ciphered)
    # fits one APDU; a 200-byte structure does not, goes in blocks, and is refused (wrong type) only
    # once all its blocks arrived and the meter reassembled it.
    sim_level, security = LEVELS[level]
    async with simulator(sim_level, max_pdu_size=64) as sim:
        meter = sim.meter("sim-1")
        endpoint = sim.endpoint("sim-1", Framing.WRAPPER)
        async with session(transport(endpoint, endpoint.reading_client), security, tmp_path) as s:
            with pytest.raises(ConfigError, match="block transfer with SET was not negotiated"):
                await s.set(CLOCK_TIME, b"\x09\x81\xc8" + bytes(200))
            assert s.usable and meter.sets == []
        async with session(transport(endpoint, endpoint.reading_client), security, tmp_path,
                           set_block_transfer=True) as s:
            assert s._core is not None and s._core.max_pdu_size == 64
            big = b"\x02\x02" + clock_value(NOW) + b"\x09\x81\xb4" + bytes(180)
            with pytest.raises(DataAccessRefused, match="TYPE_UNMATCHED"):
                await s.set(CLOCK_TIME, big)
            assert meter.sets == [("0.0.1.0.0.255", 2)]  # one SET, reassembled from its blocks
            assert meter.set_blocks_received >= 200 // 64
            blocks = meter.set_blocks_received
            await s.set(CLOCK_TIME, clock_value(NOW))
            assert s.usable
            assert (await s.get(ENERGY))[0] in (0x05, 0x06)
        assert meter.clock_offset_seconds(NOW) == pytest.approx(0.0, abs=0.01)
        assert meter.sets == [("0.0.1.0.0.255", 2)] * 2
        assert meter.set_blocks_received == blocks  # the clock went in one APDU
