"""Fault injection seen from outside: each fault shows up at the client, and the next poll succeeds.

The peer is dlms-cosem (its blocking client, or its sans-IO DlmsConnection/HDLC frames over a
raw anyio socket where the client's own I/O would hide what happened).
"""
from __future__ import annotations

import anyio
import pytest
from dlms_cosem.client import DataResultError
from dlms_cosem.connection import DlmsConnection
from dlms_cosem.enumerations import CosemInterface, DataAccessResult
from dlms_cosem.exceptions import CommunicationError
from dlms_cosem.hdlc import frames
from dlms_cosem.hdlc.address import HdlcAddress
from dlms_cosem.hdlc.exceptions import HdlcParsingError
from dlms_cosem.protocol import xdlms
from dlms_cosem.protocol.wrappers import WrapperHeader, WrapperProtocolDataUnit
from dlms_cosem.security import NoSecurityAuthentication
from dlms_cosem import cosem

from drivers.simulator import NO_FAULTS, Framing, MeterFaults, MeterSimulator, SecurityLevel, expected_register

from .test_dlms_cosem_peer import NOW, attribute, decode, frozen, in_thread, make_client, quiet_dlms_cosem  # noqa: F401

REGISTER = "1.0.1.8.0.255"


def read_register(ep, timeout: float = 5) -> int:  # type: ignore[no-untyped-def]
    client = make_client(ep, SecurityLevel.NONE, timeout=timeout)
    try:
        with client.session():
            return int(decode(client.get(attribute(CosemInterface.REGISTER, REGISTER, 2))))
    finally:
        sock = client.transport.io.tcp_socket  # still open when the session failed half-way
        if sock is not None:
            sock.close()


@pytest.mark.anyio
@pytest.mark.parametrize("framing", [Framing.WRAPPER, Framing.HDLC])
async def test_no_answer_times_out_then_the_next_poll_succeeds(framing: Framing) -> None:
    async with MeterSimulator(frozen()) as sim:
        ep = sim.endpoint("kam-none", framing)
        sim.set_faults("kam-none", MeterFaults(no_answer=True))
        with pytest.raises(CommunicationError):
            await in_thread(lambda: read_register(ep, timeout=0.3))
        sim.set_faults("kam-none", NO_FAULTS)
        value = await in_thread(lambda: read_register(ep))
        assert value == expected_register(sim.meter("kam-none"), REGISTER, NOW).raw


@pytest.mark.slow
@pytest.mark.anyio
async def test_latency_beyond_the_client_timeout_is_a_timeout_and_within_it_a_success() -> None:
    async with MeterSimulator(frozen()) as sim:
        ep = sim.endpoint("kam-none", Framing.WRAPPER)
        sim.set_faults("kam-none", MeterFaults(latency_ms=400))
        with pytest.raises(CommunicationError):
            await in_thread(lambda: read_register(ep, timeout=0.1))
        assert await in_thread(lambda: read_register(ep, timeout=5)) == expected_register(
            sim.meter("kam-none"), REGISTER, NOW).raw


async def _read_frame(stream: anyio.abc.ByteStream, buffer: bytearray) -> bytes:
    """One HDLC frame by its length field (the FCS may legitimately contain 0x7E)."""
    while True:
        start = buffer.find(b"\x7e")
        if start >= 0 and len(buffer) >= start + 3 and buffer[start + 1] != 0x7E:
            length = ((buffer[start + 1] & 0x07) << 8) | buffer[start + 2]
            if len(buffer) >= start + length + 2:
                frame = bytes(buffer[start:start + length + 2])
                del buffer[:start + length + 2]
                return frame
        elif start >= 0 and len(buffer) > start + 1 and buffer[start + 1] == 0x7E:
            del buffer[start]
            continue
        buffer += await stream.receive()


@pytest.mark.anyio
async def test_corrupt_fcs_reaches_the_client_as_an_unparsable_frame_and_heals() -> None:
    async with MeterSimulator(frozen()) as sim:
        ep = sim.endpoint("e450-lls", Framing.HDLC)  # physical address 300: extended addressing
        sim.set_faults("e450-lls", MeterFaults(corrupt_fcs=True))
        server = HdlcAddress(1, ep.physical_address, "server", extended_addressing=True)
        client = HdlcAddress(ep.public_client, None, "client")
        aarq = DlmsConnection(authentication=NoSecurityAuthentication(), client_system_title=None).get_aarq().to_bytes()
        buffer = bytearray()
        async with await anyio.connect_tcp(ep.host, ep.port) as stream:
            await stream.send(frames.SetNormalResponseModeFrame(server, client).to_bytes())
            ua = await _read_frame(stream, buffer)
            frames.UnNumberedAcknowledgmentFrame.from_bytes(ua)  # the link comes up untouched
            info = frames.InformationFrame(server, client, b"\xe6\xe6\x00" + aarq, send_sequence_number=0,
                                           receive_sequence_number=0)
            await stream.send(info.to_bytes())
            reply = await _read_frame(stream, buffer)
        with pytest.raises(HdlcParsingError, match="FCS"):
            frames.InformationFrame.from_bytes(reply)
        with pytest.raises(CommunicationError):
            await in_thread(lambda: read_register(ep, timeout=0.3))
        sim.set_faults("e450-lls", NO_FAULTS)
        assert await in_thread(lambda: read_register(ep)) == expected_register(
            sim.meter("e450-lls"), REGISTER, NOW).raw


@pytest.mark.anyio
async def test_disconnect_in_the_middle_of_a_block_transfer() -> None:
    async with MeterSimulator(frozen()) as sim:
        ep = sim.endpoint("kam-none", Framing.WRAPPER)
        sim.set_faults("kam-none", MeterFaults(disconnect_mid_block=True))
        dlms = DlmsConnection(authentication=NoSecurityAuthentication(), client_system_title=None)

        def wrap(apdu: bytes) -> bytes:
            header = WrapperHeader(source_wport=ep.public_client, destination_wport=1, length=len(apdu))
            return WrapperProtocolDataUnit(apdu, header).to_bytes()

        async def exchange(stream: anyio.abc.ByteStream, event: object) -> object:
            await stream.send(wrap(dlms.send(event)))
            data = b""
            while len(data) < 8 or len(data) < 8 + int.from_bytes(data[6:8], "big"):
                data += await stream.receive()
            dlms.receive_data(data[8:])
            return dlms.next_event()

        async with await anyio.connect_tcp(ep.host, ep.port) as stream:
            await exchange(stream, dlms.get_aarq())
            buffer = cosem.CosemAttribute(CosemInterface.PROFILE_GENERIC, cosem.Obis.from_string("1.0.99.1.0.255"), 2)
            first = await exchange(stream, xdlms.GetRequestNormal(buffer))
            assert isinstance(first, xdlms.GetResponseWithBlock) and first.block_number == 1
            await stream.send(wrap(dlms.send(xdlms.GetRequestNext(block_number=1))))
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await stream.receive()
        sim.set_faults("kam-none", NO_FAULTS)
        assert await in_thread(lambda: read_register(ep)) == expected_register(
            sim.meter("kam-none"), REGISTER, NOW).raw


@pytest.mark.anyio
@pytest.mark.parametrize("framing", [Framing.WRAPPER, Framing.HDLC])
async def test_access_denied_and_unavailable_objects(framing: Framing) -> None:
    async with MeterSimulator(frozen()) as sim:
        ep = sim.endpoint("kam-none", framing)
        sim.set_faults("kam-none", MeterFaults(access_denied={REGISTER}, unavailable={"1.0.2.8.0.255"}))
        client = make_client(ep, SecurityLevel.NONE)

        def read() -> tuple[list[object], str]:
            with client.session():
                result = client.get_many([
                    cosem.CosemAttributeWithSelection(attribute(CosemInterface.REGISTER, REGISTER, 2), None),
                    cosem.CosemAttributeWithSelection(attribute(CosemInterface.REGISTER, "1.0.2.8.0.255", 2), None),
                    cosem.CosemAttributeWithSelection(attribute(CosemInterface.REGISTER, "1.0.1.7.0.255", 2), None),
                ]).result
                with pytest.raises(DataResultError) as denied:
                    client.get(attribute(CosemInterface.REGISTER, REGISTER, 2))
                return result, str(denied.value)

        result, message = await in_thread(read)
        assert result[0] == DataAccessResult.READ_WRITE_DENIED
        assert result[1] == DataAccessResult.OBJECT_UNAVAILABLE
        assert result[2] == expected_register(sim.meter("kam-none"), "1.0.1.7.0.255", NOW).raw
        assert "READ_WRITE_DENIED" in message
        sim.set_faults("kam-none", NO_FAULTS)
        assert await in_thread(lambda: read_register(ep)) == expected_register(
            sim.meter("kam-none"), REGISTER, NOW).raw
