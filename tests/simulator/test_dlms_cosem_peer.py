"""The simulator against an independent peer: dlms-cosem's own blocking DlmsClient.

Each test serves meters on 127.0.0.1 with a frozen simulated clock, reads them through
dlms-cosem over both framings and every security level, and compares what came back with the
simulator's oracle (`expected_*`), which is computed without any protocol code.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import anyio
import pytest
import structlog
from dlms_cosem import cosem, enumerations
from dlms_cosem.client import DlmsClient
from dlms_cosem.cosem.selective_access import CaptureObject, RangeDescriptor
from dlms_cosem.dlms_data import DlmsDataParser
from dlms_cosem.enumerations import AcseServiceUserDiagnostics, AssociationResult, CosemInterface
from dlms_cosem.io import BlockingTcpIO, HdlcTransport, TcpTransport
from dlms_cosem.security import (
    HighLevelSecurityGmacAuthentication,
    LowLevelSecurityAuthentication,
    NoSecurityAuthentication,
)

from drivers.simulator import (
    TEST_AUTHENTICATION_KEY,
    TEST_ENCRYPTION_KEY,
    Framing,
    MeterConfig,
    MeterEndpoint,
    MeterSimulator,
    SecurityLevel,
    SimulatorConfig,
    expected_clock,
    expected_events,
    expected_profile_rows,
    expected_register,
)

NOW = datetime(2026, 3, 2, 10, 7, 30, tzinfo=timezone.utc)
CLIENT_TITLE = b"GWY00001"


@pytest.fixture(autouse=True)
def quiet_dlms_cosem() -> Iterator[None]:
    """dlms-cosem logs every frame (and the LLS password) through structlog at INFO: mute it here."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    yield
    structlog.configure(**saved)


METERS = (
    MeterConfig("kam-none", "omnipower", "57000001", seed=7, hdlc_address=17),
    MeterConfig("e450-lls", "e450", "35000002", seed=7, security=SecurityLevel.LLS, hdlc_address=300),
    MeterConfig("e360-hls", "e360", "36000003", seed=7, security=SecurityLevel.HLS_GMAC, hdlc_address=18),
)


class LengthFramedTcpIO(BlockingTcpIO):
    """BlockingTcpIO that reads HDLC frames by their length field and hands them out 0x7E-piecewise.

    IEC 62056-46 frames are delimited by their length, not by byte stuffing, so 0x7E can occur
    in the payload or the FCS. dlms-cosem's HdlcTransport reads "up to the next 0x7E" and, when
    the FCS ends in 0x7E, blocks for a flag that never comes. This adapter never reads past the
    end of a frame: it serves the frame in the pieces the transport asks for and answers one
    extra request with b"" so dlms-cosem re-scans the bytes it already holds. The stock client
    stays the independent peer without inheriting that defect.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pieces: list[bytes] = []
        self._owe_empty = False

    def recv_until(self, end: bytes) -> bytes:
        if self._pieces:
            return self._pieces.pop(0)
        if self._owe_empty:
            self._owe_empty = False
            return b""
        while self.recv(1) != b"\x7e":
            pass
        head = self.recv(1)
        while head == b"\x7e":  # flags between frames
            head = self.recv(1)
        fmt = head + self.recv(1)
        length = ((fmt[0] & 0x07) << 8) | fmt[1]
        rest = fmt + self.recv(length - 1)
        self._pieces = [b"\x7e"]
        start = 0
        for i, byte in enumerate(rest):
            if byte == 0x7E:
                self._pieces.append(rest[start:i + 1])
                start = i + 1
        self._owe_empty = True
        return self._pieces.pop(0)


def make_client(ep: MeterEndpoint, security: SecurityLevel, *, password: bytes | None = None,
                key: bytes = TEST_ENCRYPTION_KEY, ic: int = 0, timeout: float = 5) -> DlmsClient:
    io_class = BlockingTcpIO if ep.framing == Framing.WRAPPER else LengthFramedTcpIO
    io = io_class(host=ep.host, port=ep.port, timeout=timeout)  # type: ignore[arg-type]
    client_sap = ep.public_client if security == SecurityLevel.NONE else ep.reading_client
    if ep.framing == Framing.WRAPPER:
        transport: Any = TcpTransport(client_logical_address=client_sap,
                                      server_logical_address=ep.server_logical_address, io=io)
    else:
        assert ep.physical_address is not None
        transport = HdlcTransport(
            client_logical_address=client_sap, server_logical_address=ep.server_logical_address,
            server_physical_address=ep.physical_address, io=io,
            extended_addressing=ep.physical_address > 127,
        )
    if security == SecurityLevel.NONE:
        return DlmsClient(transport=transport, authentication=NoSecurityAuthentication())
    if security == SecurityLevel.LLS:
        return DlmsClient(transport=transport,
                          authentication=LowLevelSecurityAuthentication(password or ep.password))
    return DlmsClient(
        transport=transport, authentication=HighLevelSecurityGmacAuthentication(challenge_length=32),
        encryption_key=key, authentication_key=TEST_AUTHENTICATION_KEY,
        client_system_title=CLIENT_TITLE, client_initial_invocation_counter=ic,
    )


def attribute(interface: CosemInterface, obis: str, attr: int) -> cosem.CosemAttribute:
    return cosem.CosemAttribute(interface, cosem.Obis.from_string(obis), attr)


def decode(raw: bytes) -> Any:
    return DlmsDataParser().parse(raw, limit=1)[0].to_python()


def clock_range(from_: datetime, to: datetime) -> RangeDescriptor:
    return RangeDescriptor(
        restricting_object=CaptureObject(attribute(CosemInterface.CLOCK, "0.0.1.0.0.255", 2), 0),
        from_value=from_, to_value=to,
    )


async def in_thread(fn: Callable[[], Any]) -> Any:
    return await anyio.to_thread.run_sync(fn)


def frozen(meters: tuple[MeterConfig, ...] = METERS, framing: Framing = Framing.BOTH) -> SimulatorConfig:
    return SimulatorConfig(meters=meters, framing=framing, start=NOW, speed=0)


@pytest.mark.anyio
@pytest.mark.parametrize("framing", [Framing.WRAPPER, Framing.HDLC])
@pytest.mark.parametrize("meter_id", ["kam-none", "e450-lls", "e360-hls"])
async def test_full_session_matches_the_oracle(framing: Framing, meter_id: str) -> None:
    async with MeterSimulator(frozen()) as sim:
        ep = sim.endpoint(meter_id, framing)
        meter = sim.meter(meter_id)
        client = make_client(ep, ep.security, ic=10)
        day_from = datetime(2026, 3, 1, 0, 0, tzinfo=meter.local_timezone)
        day_to = day_from + timedelta(hours=23, minutes=45)

        def session() -> dict[str, Any]:
            out: dict[str, Any] = {}
            with client.session():
                out["clock"] = client.get(attribute(CosemInterface.CLOCK, "0.0.1.0.0.255", 2))
                out["serial"] = decode(client.get(attribute(CosemInterface.DATA, "0.0.96.1.0.255", 2)))
                for obis in ("1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.1.7.0.255", "1.0.32.7.0.255"):
                    out[obis] = (decode(client.get(attribute(CosemInterface.REGISTER, obis, 2))),
                                 decode(client.get(attribute(CosemInterface.REGISTER, obis, 3))))
                out["period"] = decode(client.get(attribute(CosemInterface.PROFILE_GENERIC, "1.0.99.1.0.255", 4)))
                out["capture"] = decode(client.get(attribute(CosemInterface.PROFILE_GENERIC, "1.0.99.1.0.255", 3)))
                out["profile"] = decode(client.get(
                    attribute(CosemInterface.PROFILE_GENERIC, "1.0.99.1.0.255", 2), clock_range(day_from, day_to)))
                out["events"] = decode(client.get(attribute(CosemInterface.PROFILE_GENERIC, "0.0.99.98.0.255", 2)))
            return out

        got = await in_thread(session)

    clock = expected_clock(meter, NOW)
    raw_clock = bytes(got["clock"])
    assert raw_clock[0:2] == b"\x09\x0c"
    assert raw_clock[2:9] == bytes((clock.local_time.year >> 8, clock.local_time.year & 0xFF, clock.local_time.month,
                                    clock.local_time.day, clock.local_time.isoweekday(), clock.local_time.hour,
                                    clock.local_time.minute))
    expected_deviation = b"\x80\x00" if clock.deviation is None else clock.deviation.to_bytes(2, "big", signed=True)
    assert raw_clock[11:13] == expected_deviation
    assert bytes(got["serial"]) == meter.config.serial.encode()
    for obis in ("1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.1.7.0.255", "1.0.32.7.0.255"):
        value, (scaler, unit) = got[obis]
        expected = expected_register(meter, obis, NOW)
        assert (value, scaler, unit) == (expected.raw, expected.scaler, expected.unit)
    assert got["period"] == 900  # seconds, as COSEM says (dlms-cosem would read minutes)
    assert [(c[0], bytes(c[1]), c[2]) for c in got["capture"]] == [
        (8, bytes([0, 0, 1, 0, 0, 255]), 2), (1, bytes([0, 0, 96, 10, 1, 255]), 2),
        (3, bytes([1, 0, 1, 8, 0, 255]), 2), (3, bytes([1, 0, 2, 8, 0, 255]), 2),
    ]
    rows = expected_profile_rows(meter, day_from, day_to, now=NOW)
    assert len(rows) == 96 and len(got["profile"]) == 96
    for cells, row in zip(got["profile"], rows):
        assert bytes(cells[0])[:7] == bytes((row.clock.year >> 8, row.clock.year & 0xFF, row.clock.month,
                                            row.clock.day, row.clock.isoweekday(), row.clock.hour, row.clock.minute))
        assert cells[1:] == [row.status, row.energy_import, row.energy_export]
    events = expected_events(meter, None, None, NOW)
    assert [e[1] for e in got["events"]] == [e.code for e in events] and events


@pytest.mark.anyio
async def test_profile_increments_are_register_deltas_and_registers_only_grow() -> None:
    async with MeterSimulator(frozen()) as sim:
        ep = sim.endpoint("kam-none", Framing.WRAPPER)
        meter = sim.meter("kam-none")
        readings = []
        for hours in (0, 1, 6):
            sim.clock.set(NOW + timedelta(hours=hours))
            client = make_client(ep, SecurityLevel.NONE)

            def read() -> int:
                with client.session():
                    return int(decode(client.get(attribute(CosemInterface.REGISTER, "1.0.1.8.0.255", 2))))

            readings.append(await in_thread(read))
    assert readings == sorted(readings) and readings[0] < readings[-1]
    start = NOW.astimezone(meter.local_timezone)
    rows = expected_profile_rows(meter, start, start + timedelta(hours=6), now=NOW + timedelta(hours=6))
    increments = sum(b.energy_import - a.energy_import for a, b in zip(rows, rows[1:]))
    assert increments == rows[-1].energy_import - rows[0].energy_import > 0


@pytest.mark.anyio
async def test_get_with_list_returns_each_item_or_its_access_result() -> None:
    async with MeterSimulator(frozen()) as sim:
        ep = sim.endpoint("kam-none", Framing.HDLC)
        client = make_client(ep, SecurityLevel.NONE)

        def read() -> list[Any]:
            with client.session():
                response = client.get_many([
                    cosem.CosemAttributeWithSelection(attribute(CosemInterface.REGISTER, "1.0.1.8.0.255", 2), None),
                    cosem.CosemAttributeWithSelection(attribute(CosemInterface.REGISTER, "1.0.99.99.0.255", 2), None),
                    cosem.CosemAttributeWithSelection(attribute(CosemInterface.DATA, "1.0.0.2.0.255", 2), None),
                ])
                return list(response.result)

        result = await in_thread(read)
    meter = sim.meter("kam-none")
    assert result[0] == expected_register(meter, "1.0.1.8.0.255", NOW).raw
    assert result[1] == enumerations.DataAccessResult.OBJECT_UNDEFINED
    assert bytes(result[2]) == meter.config.profile.firmware.encode()


def associate_raw(client: DlmsClient) -> Any:
    """Send the AARQ and return the AARE object itself (DlmsClient.associate only raises text)."""
    client.connect()
    try:
        client.send(client.dlms_connection.get_aarq())
        return client.next_event()
    finally:
        client.transport.io.disconnect()


@pytest.mark.anyio
@pytest.mark.parametrize("framing", [Framing.WRAPPER, Framing.HDLC])
async def test_wrong_password_is_rejected_with_authentication_failure(framing: Framing) -> None:
    async with MeterSimulator(frozen()) as sim:
        ep = sim.endpoint("e450-lls", framing)
        aare = await in_thread(lambda: associate_raw(make_client(ep, SecurityLevel.LLS, password=b"wrong")))
        assert aare.result == AssociationResult.REJECTED_PERMANENT
        assert aare.result_source_diagnostics == AcseServiceUserDiagnostics.AUTHENTICATION_FAILED
        # The meter is not locked out: the right password still works on the same port.
        ok = await in_thread(lambda: associate_raw(make_client(ep, SecurityLevel.LLS)))
        assert ok.result == AssociationResult.ACCEPTED


@pytest.mark.anyio
async def test_public_client_cannot_skip_the_security_of_the_reading_client() -> None:
    async with MeterSimulator(frozen()) as sim:
        ep = sim.endpoint("e450-lls", Framing.WRAPPER)
        client = make_client(ep, SecurityLevel.NONE)
        client.transport.client_logical_address = ep.reading_client  # reading client without password
        aare = await in_thread(lambda: associate_raw(client))
        assert aare.result == AssociationResult.REJECTED_PERMANENT
        assert aare.result_source_diagnostics == AcseServiceUserDiagnostics.AUTHENTICATION_REQUIRED


@pytest.mark.anyio
async def test_hls_with_a_wrong_key_or_a_replayed_invocation_counter_is_rejected() -> None:
    async with MeterSimulator(frozen()) as sim:
        ep = sim.endpoint("e360-hls", Framing.WRAPPER)
        bad_key = bytes(16)
        aare = await in_thread(lambda: associate_raw(make_client(ep, SecurityLevel.HLS_GMAC, key=bad_key, ic=5)))
        assert aare.result == AssociationResult.REJECTED_PERMANENT
        good = make_client(ep, SecurityLevel.HLS_GMAC, ic=5)

        def session() -> int:
            with good.session():
                return int(decode(good.get(attribute(CosemInterface.REGISTER, "1.0.1.8.0.255", 2))))

        assert await in_thread(session) == expected_register(sim.meter("e360-hls"), "1.0.1.8.0.255", NOW).raw
        # A client that starts its invocation counter again from 5 is replaying: refused.
        replay = await in_thread(lambda: associate_raw(make_client(ep, SecurityLevel.HLS_GMAC, ic=5)))
        assert replay.result == AssociationResult.REJECTED_PERMANENT
        fresh = await in_thread(lambda: associate_raw(make_client(ep, SecurityLevel.HLS_GMAC, ic=1000)))
        assert fresh.result == AssociationResult.ACCEPTED


@pytest.mark.anyio
async def test_power_down_rows_can_carry_null_cells_in_their_own_column() -> None:
    config = MeterConfig("nulls", "e450", "35000077", seed=7, null_cells_on_power_down=True)
    async with MeterSimulator(frozen((config,), Framing.WRAPPER)) as sim:
        meter = sim.meter("nulls")
        tz = meter.local_timezone
        day = next(
            d for d in (datetime(2026, 3, 1, tzinfo=tz) - timedelta(days=n) for n in range(25))
            if any(r.energy_import is None for r in expected_profile_rows(meter, d, d + timedelta(hours=23, minutes=45), NOW))
        )
        rows = expected_profile_rows(meter, day, day + timedelta(hours=23, minutes=45), NOW)
        client = make_client(sim.endpoint("nulls", Framing.WRAPPER), SecurityLevel.NONE)

        def read() -> Any:
            with client.session():
                return decode(client.get(attribute(CosemInterface.PROFILE_GENERIC, "1.0.99.1.0.255", 2),
                                         clock_range(day, day + timedelta(hours=23, minutes=45))))

        got = await in_thread(read)
    assert [cells[1:] for cells in got] == [[r.status, r.energy_import, r.energy_export] for r in rows]
    assert all(len(cells) == 4 for cells in got)
