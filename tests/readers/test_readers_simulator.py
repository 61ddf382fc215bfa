"""Readers against the meter simulator over real TCP (DLMS wrapper and HDLC over TCP).

The simulator's clock is frozen, so its oracle (``expected_register``, ``expected_clock``,
``expected_profile_rows``, ``expected_events``) says exactly what the readers must return.
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from drivers.errors import AccessDenied, ProfileTooLarge, ProfileUnusable
from drivers.meters import MeterProfile, get_profile, profile_for
from drivers.readers import (
    ScalerUnitCache,
    read_clock,
    read_event_log,
    read_identity,
    read_profile,
    read_registers,
)
from drivers.readings import RegisterReading, RegisterRefused
from drivers.recording import MemoryInvocationCounterStore, RecordingTransport
from drivers.security import HlsGmacSecurity, LowLevelSecurity
from drivers.session import DlmsSession
from drivers.simulator import (
    Framing,
    MeterConfig,
    MeterFaults,
    MeterSimulator,
    SecurityLevel,
    TEST_AUTHENTICATION_KEY,
    TEST_ENCRYPTION_KEY,
    TEST_LLS_PASSWORD,
    SimulatorConfig,
    expected_clock,
    expected_events,
    expected_profile_rows,
    expected_register,
)
from drivers.transport.base import Transport
from drivers.transport.hdlc import HdlcTcpTransport
from drivers.transport.wrapper import WrapperTransport

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 3, 2, 0, 7, 30, tzinfo=timezone.utc)
UTC_PLUS_1 = timezone(timedelta(hours=1))
DAY_START = datetime(2026, 3, 1, 0, 0, tzinfo=UTC_PLUS_1)
DAY_END = datetime(2026, 3, 1, 23, 45, tzinfo=UTC_PLUS_1)
MODELS = {"omnipower": ("kamstrup", "omnipower"), "e450": ("landis_gyr", "e450"), "e360": ("landis_gyr", "e360")}


def transport_for(simulator: MeterSimulator, meter_id: str, framing: Framing, profile: MeterProfile) -> Transport:
    endpoint = simulator.endpoint(meter_id, framing)
    client = profile.public_client_address
    if framing is Framing.WRAPPER:
        return WrapperTransport(meter_id, endpoint.host, endpoint.port, client_wport=client,
                                server_wport=endpoint.server_logical_address)
    return HdlcTcpTransport(meter_id, endpoint.host, endpoint.port, client_address=client,
                            server_logical_address=endpoint.server_logical_address,
                            server_physical_address=endpoint.physical_address)


@asynccontextmanager
async def simulator_with(model: str, faults: MeterFaults = MeterFaults()) -> AsyncIterator[MeterSimulator]:
    config = SimulatorConfig(
        meters=(MeterConfig(meter_id="m1", model=model, serial="12340001", seed=3, security=SecurityLevel.NONE,
                            faults=faults),),
        start=NOW, speed=0.0,
    )
    async with MeterSimulator(config) as simulator:
        yield simulator


def session(transport: Transport, profile: MeterProfile) -> DlmsSession:
    return DlmsSession(transport, timeout_s=5.0, retries=0, use_release=profile.use_release,
                       max_pdu_size=profile.max_pdu_size)


@pytest.mark.parametrize("framing", [Framing.WRAPPER, Framing.HDLC], ids=["wrapper", "hdlc"])
@pytest.mark.parametrize("model", ["omnipower", "e450", "e360"])
async def test_poll_reads_what_the_meter_holds(framing: Framing, model: str) -> None:
    profile = get_profile(*MODELS[model])
    async with simulator_with(model) as simulator:
        meter = simulator.meter("m1")
        async with session(transport_for(simulator, "m1", framing, profile), profile) as dlms:
            identity = await read_identity(dlms, profile)
            registers = await read_registers(dlms, [r.obis for r in profile.registers], ScalerUnitCache(),
                                             profile=profile)
            clock = await read_clock(dlms, UTC_PLUS_1, quirks=profile.quirks, now=lambda: NOW)
            day = await read_profile(dlms, "1.0.99.1.0.255", DAY_START, DAY_END, meter_tz=UTC_PLUS_1,
                                     profile=profile)
            events = await read_event_log(dlms, "0.0.99.98.0.255", DAY_START - timedelta(days=14), DAY_END,
                                          meter_tz=UTC_PLUS_1, profile=profile)

    assert identity.serial == "12340001"
    assert identity.firmware == meter.config.profile.firmware
    assert identity.manufacturer == meter.config.profile.flag_id

    for reading in registers:
        assert isinstance(reading, RegisterReading)
        expected = expected_register(meter, reading.obis, NOW)
        assert (reading.value, reading.scaler, reading.unit_code) == (expected.value, expected.scaler, expected.unit)
        assert reading.raw == expected.raw
    assert {r.unit for r in registers} == {"Wh", "W", "V"}

    true_clock = expected_clock(meter, NOW)
    # The wire carries hundredths of a second.
    assert abs(clock.meter_time - true_clock.utc) < timedelta(milliseconds=10)
    assert clock.offset == clock.meter_time - NOW
    assert clock.deviation_min == true_clock.deviation  # None for the E360 (0x8000)

    assert day.capture_period_s == 900  # seconds, per COSEM: dlms-cosem would say 900 minutes
    expected_rows = expected_profile_rows(meter, DAY_START, DAY_END, now=NOW)
    assert len(day.rows) == len(expected_rows) == 96
    energy_scaler = expected_register(meter, "1.0.1.8.0.255", NOW).scaler
    status, imp, exp = day.column("0.0.96.10.1.255"), day.column("1.0.1.8.0.255"), day.column("1.0.2.8.0.255")
    for row, want in zip(day.rows, expected_rows):
        assert row.time == want.clock.astimezone(timezone.utc)
        assert row.values[status] == want.status
        assert row.values[imp] == Decimal(want.energy_import).scaleb(energy_scaler)
        assert row.values[exp] == Decimal(want.energy_export).scaleb(energy_scaler)
    assert day.columns[imp].unit == "Wh"

    want_events = expected_events(meter, DAY_START - timedelta(days=14), DAY_END, NOW)
    assert want_events, "the seed must give the fortnight some power outages"
    assert [(e.time, e.code) for e in events] == [(w.clock.astimezone(timezone.utc), w.code) for w in want_events]


@pytest.mark.parametrize("with_list", [True, False], ids=["get-with-list", "one-get-each"])
async def test_scaler_cache_and_get_with_list_save_exchanges(with_list: bool) -> None:
    profile = profile_for("landis_gyr", "e450", {"get_with_list": with_list})
    obis = [r.obis for r in profile.registers]
    cache = ScalerUnitCache()
    async with simulator_with("e450") as simulator:
        meter = simulator.meter("m1")
        first = RecordingTransport(transport_for(simulator, "m1", Framing.WRAPPER, profile))
        async with session(first, profile) as dlms:
            cold = await read_registers(dlms, obis, cache, profile=profile)
        second = RecordingTransport(transport_for(simulator, "m1", Framing.WRAPPER, profile))
        async with session(second, profile) as dlms:
            warm = await read_registers(dlms, obis, cache, profile=profile)
    assert cold == warm
    assert len(cache) == len(obis)
    assert all(r.value == expected_register(meter, r.obis, NOW).value for r in warm if isinstance(r, RegisterReading))

    def gets(transport: RecordingTransport) -> int:
        # Every send except the AARQ (0x60) and RLRQ (0x62).
        return sum(1 for e in transport.events if e.kind == "send" and e.apdu[0] not in (0x60, 0x62))

    if with_list:
        assert (gets(first), gets(second)) == (2, 1)  # scalers + values, then values only
    else:
        assert (gets(first), gets(second)) == (2 * len(obis), len(obis))


@pytest.mark.parametrize("with_list", [True, False], ids=["get-with-list", "one-get-each"])
async def test_a_refused_register_does_not_spoil_the_others(with_list: bool) -> None:
    profile = profile_for("landis_gyr", "e450", {"get_with_list": with_list})
    faults = MeterFaults(access_denied=frozenset({"1.0.2.8.0.255"}))
    async with simulator_with("e450", faults) as simulator:
        meter = simulator.meter("m1")
        async with session(transport_for(simulator, "m1", Framing.WRAPPER, profile), profile) as dlms:
            readings = await read_registers(dlms, ["1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.32.7.0.255"],
                                            ScalerUnitCache(), profile=profile)
            # The session stays usable after the refusal.
            clock = await read_clock(dlms, UTC_PLUS_1, now=lambda: NOW)
            identity = await read_identity(dlms)  # Blue Book identity objects, no profile
            whole_log = await read_event_log(dlms, "0.0.99.98.0.255", meter_tz=UTC_PLUS_1)
    assert readings[1] == RegisterRefused(obis="1.0.2.8.0.255", class_id=3, result="READ_WRITE_DENIED")
    assert isinstance(readings[0], RegisterReading) and isinstance(readings[2], RegisterReading)
    assert readings[0].value == expected_register(meter, "1.0.1.8.0.255", NOW).value
    assert readings[2].value == expected_register(meter, "1.0.32.7.0.255", NOW).value
    assert readings[2].unit == "V" and readings[2].scaler == -1
    assert clock.meter_time.tzinfo is timezone.utc
    assert (identity.serial, identity.manufacturer, identity.model) == ("12340001", "LGZ", "Landis+Gyr E450")
    want = expected_events(meter, None, None, NOW)
    assert len(want) > 10
    assert [(e.time, e.code) for e in whole_log] == [(w.clock.astimezone(timezone.utc), w.code) for w in want]


async def test_refused_profile_raises_access_denied() -> None:
    profile = get_profile("kamstrup", "omnipower")
    faults = MeterFaults(access_denied=frozenset({"1.0.99.1.0.255"}))
    async with simulator_with("omnipower", faults) as simulator:
        async with session(transport_for(simulator, "m1", Framing.WRAPPER, profile), profile) as dlms:
            with pytest.raises(AccessDenied) as caught:
                await read_profile(dlms, "1.0.99.1.0.255", DAY_START, DAY_END, meter_tz=UTC_PLUS_1, profile=profile)
    assert caught.value.meter_id == "m1"
    assert caught.value.result == "READ_WRITE_DENIED"


@pytest.mark.parametrize("level", [SecurityLevel.LLS, SecurityLevel.HLS_GMAC], ids=["lls", "hls-gmac"])
@pytest.mark.parametrize("framing", [Framing.WRAPPER, Framing.HDLC], ids=["wrapper", "hdlc"])
async def test_readers_work_at_every_security_level(level: SecurityLevel, framing: Framing) -> None:
    profile = get_profile("landis_gyr", "e450")
    config = SimulatorConfig(
        meters=(MeterConfig(meter_id="m1", model="e450", serial="35990001", seed=5, security=level),),
        start=NOW, speed=0.0,
    )
    if level is SecurityLevel.LLS:
        security: LowLevelSecurity | HlsGmacSecurity = LowLevelSecurity(password=TEST_LLS_PASSWORD)
    else:
        security = HlsGmacSecurity(authentication_key=TEST_AUTHENTICATION_KEY, encryption_key=TEST_ENCRYPTION_KEY)
    async with MeterSimulator(config) as simulator:
        meter = simulator.meter("m1")
        endpoint = simulator.endpoint("m1", framing)
        client = profile.client_address_for("lls" if level is SecurityLevel.LLS else "hls_gmac")
        transport: Transport
        if framing is Framing.WRAPPER:
            transport = WrapperTransport("m1", endpoint.host, endpoint.port, client_wport=client)
        else:
            transport = HdlcTcpTransport("m1", endpoint.host, endpoint.port, client_address=client,
                                         server_physical_address=endpoint.physical_address)
        async with DlmsSession(transport, security=security, timeout_s=5.0, max_pdu_size=profile.max_pdu_size,
                               invocation_counters=MemoryInvocationCounterStore()) as dlms:
            registers = await read_registers(dlms, ["1.0.1.8.0.255", "1.0.32.7.0.255"], ScalerUnitCache(),
                                             profile=profile)
            day = await read_profile(dlms, "1.0.99.1.0.255", DAY_START, DAY_END, meter_tz=UTC_PLUS_1,
                                     profile=profile)
    assert [r.value for r in registers if isinstance(r, RegisterReading)] == [
        expected_register(meter, "1.0.1.8.0.255", NOW).value, expected_register(meter, "1.0.32.7.0.255", NOW).value]
    imp = day.column("1.0.1.8.0.255")
    assert [row.values[imp] for row in day.rows] == [
        Decimal(r.energy_import) for r in expected_profile_rows(meter, DAY_START, DAY_END, now=NOW)]


# -- range reads checked against what was asked ----------------------------------------------------


async def test_profile_rows_outside_the_range_are_dropped_counted_and_warned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    profile = get_profile("kamstrup", "omnipower")
    # The meter answers an hour more on both sides: 4 rows before the range and 4 after it.
    faults = MeterFaults(range_slack=timedelta(hours=1))
    async with simulator_with("omnipower", faults) as simulator:
        meter = simulator.meter("m1")
        async with session(transport_for(simulator, "m1", Framing.WRAPPER, profile), profile) as dlms:
            with caplog.at_level(logging.WARNING, logger="drivers.readers"):
                day = await read_profile(dlms, "1.0.99.1.0.255", DAY_START, DAY_END, meter_tz=UTC_PLUS_1,
                                         profile=profile)
    want = expected_profile_rows(meter, DAY_START, DAY_END, now=NOW)
    assert [row.time for row in day.rows] == [w.clock.astimezone(timezone.utc) for w in want]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"meter m1: profile 1.0.99.1.0.255: dropped 8 of 104 row(s) outside the requested range "
        f"{DAY_START.astimezone(timezone.utc).isoformat()} .. {DAY_END.astimezone(timezone.utc).isoformat()}"
    ]


async def test_event_log_entries_outside_the_range_are_dropped() -> None:
    profile = get_profile("landis_gyr", "e450")
    slack = timedelta(days=10)
    start, end = DAY_START - timedelta(days=14), DAY_START - timedelta(days=7)
    async with simulator_with("e450", MeterFaults(range_slack=slack)) as simulator:
        meter = simulator.meter("m1")
        async with session(transport_for(simulator, "m1", Framing.WRAPPER, profile), profile) as dlms:
            events = await read_event_log(dlms, "0.0.99.98.0.255", start, end, meter_tz=UTC_PLUS_1, profile=profile)
    want = expected_events(meter, start, end, NOW)
    assert len(expected_events(meter, start - slack, end + slack, NOW)) > len(want) > 0, "the seed must give both"
    assert [(e.time, e.code) for e in events] == [(w.clock.astimezone(timezone.utc), w.code) for w in want]


@pytest.mark.parametrize("faults, measure", [
    # The whole buffer (40 days): refused on its size, before its rows are decoded.
    (MeterFaults(ignores_range=frozenset({"1.0.99.1.0.255"})), "bytes"),
    # Three days more on both sides: small enough in bytes, too many rows.
    (MeterFaults(range_slack=timedelta(days=3)), "rows"),
], ids=["whole-buffer", "wider-range"])
async def test_a_profile_reply_larger_than_its_range_is_refused(faults: MeterFaults, measure: str) -> None:
    profile = get_profile("kamstrup", "omnipower")
    async with simulator_with("omnipower", faults) as simulator:
        async with session(transport_for(simulator, "m1", Framing.WRAPPER, profile), profile) as dlms:
            with pytest.raises(ProfileTooLarge) as caught:
                await read_profile(dlms, "1.0.99.1.0.255", DAY_START, DAY_END, meter_tz=UTC_PLUS_1, profile=profile)
            clock = await read_clock(dlms, UTC_PLUS_1, now=lambda: NOW)  # the session goes on
    assert caught.value.meter_id == "m1" and caught.value.obis == "1.0.99.1.0.255"
    assert f"{measure} answered for a range of at most 136 rows" in str(caught.value)  # 96 periods + 24 + 16
    assert clock.meter_time.tzinfo is timezone.utc


async def test_a_range_read_of_a_profile_without_a_clock_column_is_refused() -> None:
    profile = get_profile("kamstrup", "omnipower")
    async with simulator_with("omnipower", MeterFaults(load_profile_without_clock=True)) as simulator:
        async with session(transport_for(simulator, "m1", Framing.WRAPPER, profile), profile) as dlms:
            with pytest.raises(ProfileUnusable) as caught:
                await read_profile(dlms, "1.0.99.1.0.255", DAY_START, DAY_END, meter_tz=UTC_PLUS_1, profile=profile)
            whole = await read_profile(dlms, "1.0.99.1.0.255", None, None, meter_tz=UTC_PLUS_1, profile=profile)
    assert caught.value.meter_id == "m1" and "no clock column" in str(caught.value)
    # Read whole, the same profile decodes: its rows just have no time.
    assert whole.rows and all(row.time is None for row in whole.rows)
