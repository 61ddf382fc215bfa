"""The optical probe port on a pty: mode E sign-on by pyserial at 300 baud 7E1, then dlms-cosem's
HDLC client over pyserial at 9600 8N1 (reopening the port, as the real probe procedure needs)."""
from __future__ import annotations

from datetime import datetime, timezone

import anyio
import pytest
import serial
from dlms_cosem.client import DlmsClient
from dlms_cosem.enumerations import CosemInterface
from dlms_cosem.io import HdlcTransport, SerialIO
from dlms_cosem.security import NoSecurityAuthentication

from drivers.simulator import (
    NO_FAULTS, Framing, MeterConfig, MeterFaults, MeterSimulator, SimulatedMeter, SimulatorConfig, expected_register,
)
from drivers.simulator.optical import identification, optical_port

from .test_dlms_cosem_peer import LengthFramedTcpIO, attribute, decode, quiet_dlms_cosem  # noqa: F401

NOW = datetime(2026, 3, 2, 10, 7, 30, tzinfo=timezone.utc)


class LengthFramedSerialIO(SerialIO):
    """SerialIO with the same length-based HDLC framing workaround as LengthFramedTcpIO."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._pieces: list[bytes] = []
        self._owe_empty = False

    recv_until = LengthFramedTcpIO.recv_until


def sign_on(device: str) -> bytes:
    with serial.Serial(device, 300, bytesize=7, parity=serial.PARITY_EVEN, stopbits=1, timeout=2) as port:
        port.write(b"/?!\r\n")
        ident = port.readline()
        port.write(b"\x06" + b"252" + b"\r\n")
    return ident


def read_register(device: str, address: int) -> int:
    io = LengthFramedSerialIO(port_name=device, baud_rate=9600, timeout=2)
    transport = HdlcTransport(client_logical_address=16, server_logical_address=1,
                              server_physical_address=address, io=io, extended_addressing=address > 127)
    client = DlmsClient(transport=transport, authentication=NoSecurityAuthentication())
    with client.session():
        return int(decode(client.get(attribute(CosemInterface.REGISTER, "1.0.1.8.0.255", 2))))


@pytest.mark.anyio
async def test_mode_e_sign_on_then_hdlc_twice_in_a_row() -> None:
    meter = SimulatedMeter(MeterConfig("probe", "omnipower", "57000042", seed=2, hdlc_address=144), NOW)
    async with optical_port(meter, lambda: NOW) as device:
        for _ in range(2):  # after DISC the port wants a fresh sign-on
            ident = await anyio.to_thread.run_sync(lambda: sign_on(device))
            assert ident == identification(meter) == b"/KAM5\\2OMNIPOWER57000042\r\n"
            value = await anyio.to_thread.run_sync(lambda: read_register(device, 144))
            assert value == expected_register(meter, "1.0.1.8.0.255", NOW).raw


@pytest.mark.anyio
async def test_direct_hdlc_without_sign_on() -> None:
    meter = SimulatedMeter(MeterConfig("probe", "e450", "35000043", seed=2, hdlc_address=17), NOW)
    async with optical_port(meter, lambda: NOW) as device:
        value = await anyio.to_thread.run_sync(lambda: read_register(device, 17))
    assert value == expected_register(meter, "1.0.1.8.0.255", NOW).raw


@pytest.mark.anyio
async def test_a_silent_meter_leaves_the_sign_on_unanswered_until_healed() -> None:
    config = MeterConfig("probe", "e360", "36000044", seed=2)
    async with MeterSimulator(SimulatorConfig(meters=(config,), framing=Framing.WRAPPER, start=NOW, speed=0)) as sim:
        sim.set_faults("probe", MeterFaults(no_answer=True))
        async with sim.optical_port("probe") as device:

            def ask_twice() -> tuple[bytes, bytes]:
                # One open for both tries: reopening a pty at 7E1 right after 7E1 can fail with EINVAL.
                with serial.Serial(device, 300, bytesize=7, parity=serial.PARITY_EVEN, timeout=0.5) as port:
                    port.write(b"/?!\r\n")
                    unanswered = port.readline()
                    sim.set_faults("probe", NO_FAULTS)
                    port.write(b"/?!\r\n")
                    return unanswered, port.readline()

            unanswered, answered = await anyio.to_thread.run_sync(ask_twice)
        assert unanswered == b""  # readline timed out
        assert answered == identification(sim.meter("probe"))
