"""Server (secondary station) side of DLMS HDLC (IEC 62056-46) for an RS-485 bus, sans-IO.

Several meters share one byte stream (one TCP connection to the "bus"); each answers only
frames addressed to its physical address. Server addresses are parsed in their 1-, 2- and
4-byte forms; replies mirror the form the client used, so a physical address above 127
(which needs the 4-byte "extended" form) round-trips.

Supported: SNRM (with or without the parameter negotiation field; window size 1 only) → UA,
DISC → UA/DM, I-frames in both directions with segmentation (each segment acknowledged by
RR, IEC 62056-46 §6.4.4.4.3.4), RR polls, and retransmission of the last reply when the client
repeats a frame it sent (its ssn did not advance: our reply was lost or corrupt).

Reply frames are built with dlms-cosem's frame classes; incoming frames are parsed here
because dlms-cosem only parses the server→client direction.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from dlms_cosem.crc import CRCCCITT
from dlms_cosem.hdlc import frames
from dlms_cosem.hdlc.address import HdlcAddress

from drivers.simulator.cosem import CosemAssociation
from drivers.simulator.faults import corrupt_fcs
from drivers.simulator.meter import SimulatedMeter

LLC_REQUEST = b"\xe6\xe6\x00"
LLC_RESPONSE = b"\xe6\xe7\x00"
DEFAULT_MAX_INFO = 128  # IEC 62056-46 default when SNRM carries no parameters
OWN_MAX_INFO = 512
_CRC = CRCCCITT()
_MAX_BUFFER = 8192  # garbage beyond this without a frame is dropped


class HdlcFrameError(ValueError):
    """A frame that fails length, HCS or FCS checks; a meter silently discards it."""


@dataclass(frozen=True)
class ClientFrame:
    server_logical: int
    server_physical: int | None
    server_address_length: int
    client_address: int
    control: int
    segmented: bool
    info: bytes


def _server_address(raw: bytes) -> tuple[int, int | None]:
    if len(raw) == 1:
        return raw[0] >> 1, None
    if len(raw) == 2:
        return raw[0] >> 1, raw[1] >> 1
    return ((raw[0] >> 1) << 7) | (raw[1] >> 1), ((raw[2] >> 1) << 7) | (raw[3] >> 1)


def parse_client_frame(frame: bytes) -> ClientFrame:
    """Parse one client→server frame including both flags."""
    if len(frame) < 9 or frame[0] != 0x7E or frame[-1] != 0x7E or frame[1] & 0xF0 != 0xA0:
        raise HdlcFrameError("not an HDLC frame type 3")
    length = ((frame[1] & 0x07) << 8) | frame[2]
    if length + 2 != len(frame):
        raise HdlcFrameError("length field does not match")
    pos = 3
    start = pos
    while not frame[pos] & 0x01:
        pos += 1
        if pos - start >= 4 or pos >= len(frame) - 3:
            raise HdlcFrameError("server address longer than 4 bytes")
    server_raw = frame[start:pos + 1]
    if len(server_raw) == 3:
        raise HdlcFrameError("3-byte server address")
    pos += 1
    client_byte = frame[pos]
    if not client_byte & 0x01:
        raise HdlcFrameError("client address must be one byte")
    pos += 1
    control = frame[pos]
    pos += 1
    body_end = len(frame) - 3
    if frame[body_end:body_end + 2] != _CRC.calculate_for(frame[1:body_end]):
        raise HdlcFrameError("bad FCS")
    info = b""
    if body_end > pos:
        if frame[pos:pos + 2] != _CRC.calculate_for(frame[1:pos]):
            raise HdlcFrameError("bad HCS")
        info = bytes(frame[pos + 2:body_end])
    logical, physical = _server_address(server_raw)
    return ClientFrame(
        server_logical=logical, server_physical=physical, server_address_length=len(server_raw),
        client_address=client_byte >> 1, control=control, segmented=bool(frame[1] & 0x08), info=info,
    )


def split_frames(buffer: bytearray) -> list[bytes]:
    """Remove and return every complete frame at the front of `buffer` (flags may be shared)."""
    out: list[bytes] = []
    while True:
        start = buffer.find(0x7E)
        if start < 0:
            buffer.clear()
            return out
        del buffer[:start]
        while len(buffer) >= 2 and buffer[1] == 0x7E:
            del buffer[0]
        if len(buffer) < 3:
            return out
        if buffer[1] & 0xF0 != 0xA0:
            del buffer[0]
            continue
        length = ((buffer[1] & 0x07) << 8) | buffer[2]
        if len(buffer) < length + 2:
            if len(buffer) > _MAX_BUFFER:
                del buffer[0]
                continue
            return out
        if buffer[length + 1] != 0x7E:
            del buffer[0]  # not a frame start after all: resynchronise on the next flag
            continue
        out.append(bytes(buffer[:length + 2]))
        # Keep the closing flag: it may also open the next frame.
        del buffer[:length + 1]


def _is_information(frame: bytes) -> bool:
    pos = 3
    while not frame[pos] & 0x01:  # destination (client) address
        pos += 1
    pos += 1
    while not frame[pos] & 0x01:  # source (server) address
        pos += 1
    return frame[pos + 1] & 0x01 == 0


def _parse_parameters(info: bytes) -> dict[int, int]:
    """SNRM/UA parameter negotiation field: 81 80 len {id len value}*."""
    if len(info) < 3 or info[0] != 0x81 or info[1] != 0x80:
        return {}
    params: dict[int, int] = {}
    pos, end = 3, min(len(info), 3 + info[2])
    while pos + 2 <= end:
        pid, plen = info[pos], info[pos + 1]
        params[pid] = int.from_bytes(info[pos + 2:pos + 2 + plen], "big")
        pos += 2 + plen
    return params


def _encode_parameters(tx: int, rx: int) -> bytes:
    def item(pid: int, value: int, width: int | None = None) -> bytes:
        size = width or (1 if value < 256 else 2)
        return bytes((pid, size)) + value.to_bytes(size, "big")

    body = item(0x05, tx) + item(0x06, rx) + item(0x07, 1, 4) + item(0x08, 1, 4)
    return b"\x81\x80" + bytes((len(body),)) + body


@dataclass
class _Link:
    meter: SimulatedMeter
    association: CosemAssociation | None = None
    connected: bool = False
    vs: int = 0  # our next send sequence number
    vr: int = 0  # next sequence number we expect from the client
    max_tx: int = DEFAULT_MAX_INFO
    rx: bytearray = field(default_factory=bytearray)
    tx_segments: list[bytes] = field(default_factory=list)
    last_frame: bytes | None = None
    disconnect_after: bool = False


@dataclass(frozen=True)
class BusOutput:
    """Frames one meter sends in reply, then whether the line drops (fault injection)."""

    meter: SimulatedMeter
    frames: tuple[bytes, ...]
    disconnect: bool = False


class HdlcBus:
    """All meters behind one RS-485 port, seen from one client connection."""

    def __init__(self, meters: dict[int, SimulatedMeter], now: Callable[[], datetime]) -> None:
        self._links = {address: _Link(meter) for address, meter in meters.items()}
        self._now = now
        self._buffer = bytearray()

    def is_connected(self, address: int) -> bool:
        link = self._links.get(address)
        return link is not None and link.connected

    def feed(self, data: bytes) -> list[BusOutput]:
        self._buffer += data
        outputs = []
        for raw in split_frames(self._buffer):
            try:
                frame = parse_client_frame(raw)
            except HdlcFrameError:
                continue  # corrupt frames are discarded; the client times out and retries
            link = self._links.get(frame.server_physical) if frame.server_physical is not None else None
            if link is None or link.meter.faults.no_answer:
                continue
            out = self._handle(link, frame)
            if out is not None:
                outputs.append(out)
        return outputs

    # -- frame handling ----------------------------------------------------------------

    def _addresses(self, frame: ClientFrame) -> tuple[HdlcAddress, HdlcAddress]:
        client = HdlcAddress(logical_address=frame.client_address, address_type="client")
        server = HdlcAddress(
            logical_address=frame.server_logical, physical_address=frame.server_physical,
            address_type="server", extended_addressing=frame.server_address_length == 4,
        )
        return client, server

    def _out(self, link: _Link, *frames_: bytes, disconnect: bool = False) -> BusOutput:
        # The corrupt-FCS fault hits information frames only, so the link comes up and the
        # failure shows where it hurts: in the middle of a read.
        if link.meter.faults.corrupt_fcs:
            frames_ = tuple(corrupt_fcs(f) if _is_information(f) else f for f in frames_)
        return BusOutput(link.meter, tuple(frames_), disconnect)

    def _handle(self, link: _Link, frame: ClientFrame) -> BusOutput | None:
        client, server = self._addresses(frame)
        control = frame.control & ~0x10  # strip the poll bit
        if control == 0x83:  # SNRM
            params = _parse_parameters(frame.info)
            link.connected = True
            link.vs = link.vr = 0
            link.rx.clear()
            link.tx_segments.clear()
            link.last_frame = None
            link.association = CosemAssociation(link.meter, self._now, frame.client_address)
            if params:
                link.max_tx = min(params.get(0x06, DEFAULT_MAX_INFO), OWN_MAX_INFO)
                rx = min(params.get(0x05, DEFAULT_MAX_INFO), OWN_MAX_INFO)
                payload = _encode_parameters(link.max_tx, rx)
            else:
                link.max_tx = DEFAULT_MAX_INFO
                payload = None
            ua = frames.UnNumberedAcknowledgmentFrame(destination_address=client, source_address=server, payload=payload)
            return self._out(link, ua.to_bytes())
        if control == 0x43:  # DISC
            was_connected = link.connected
            link.connected = False
            link.association = None
            if was_connected:
                ua = frames.UnNumberedAcknowledgmentFrame(destination_address=client, source_address=server)
                return self._out(link, ua.to_bytes())
            return self._out(link, self._dm(client, server))
        if not link.connected or link.association is None:
            return self._out(link, self._dm(client, server))
        if control & 0x01 == 0:  # I-frame
            return self._information(link, frame, client, server)
        if control & 0x0F == 0x01:  # RR
            return self._receive_ready(link, (frame.control >> 5) & 0x07, client, server)
        return None

    @staticmethod
    def _dm(client: HdlcAddress, server: HdlcAddress) -> bytes:
        header = (
            frames.fields.DlmsHdlcFrameFormatField(length=5 + client.length + server.length, segmented=False).to_bytes()
            + client.to_bytes() + server.to_bytes() + b"\x1f"
        )
        return b"\x7e" + header + _CRC.calculate_for(header) + b"\x7e"

    def _information(self, link: _Link, frame: ClientFrame, client: HdlcAddress, server: HdlcAddress) -> BusOutput | None:
        ssn = (frame.control >> 1) & 0x07
        if ssn != link.vr:
            if ssn == (link.vr - 1) % 8 and link.last_frame is not None:
                return self._out(link, link.last_frame)  # our reply was lost: repeat it
            return None
        link.vr = (link.vr + 1) % 8
        link.rx += frame.info
        if frame.segmented:
            rr = frames.ReceiveReadyFrame(destination_address=client, source_address=server, receive_sequence_number=link.vr)
            link.last_frame = rr.to_bytes()
            return self._out(link, link.last_frame)
        request = bytes(link.rx)
        link.rx.clear()
        if not request.startswith(LLC_REQUEST):
            return None
        assert link.association is not None
        reply = link.association.handle(request[len(LLC_REQUEST):])
        if reply.apdu is None:
            return BusOutput(link.meter, (), reply.disconnect)
        payload = LLC_RESPONSE + reply.apdu
        link.tx_segments = [payload[i:i + link.max_tx] for i in range(0, len(payload), link.max_tx)]
        link.disconnect_after = reply.disconnect
        return self._send_segment(link, client, server)

    def _send_segment(self, link: _Link, client: HdlcAddress, server: HdlcAddress) -> BusOutput:
        segment = link.tx_segments.pop(0)
        frame = frames.InformationFrame(
            destination_address=client, source_address=server, payload=segment,
            send_sequence_number=link.vs, receive_sequence_number=link.vr,
            segmented=bool(link.tx_segments), final=True,
        )
        link.vs = (link.vs + 1) % 8
        link.last_frame = frame.to_bytes()
        disconnect = link.disconnect_after and not link.tx_segments
        return self._out(link, link.last_frame, disconnect=disconnect)

    def _receive_ready(self, link: _Link, nr: int, client: HdlcAddress, server: HdlcAddress) -> BusOutput | None:
        if nr != link.vs:
            return self._out(link, link.last_frame) if link.last_frame is not None else None
        if link.tx_segments:
            return self._send_segment(link, client, server)
        rr = frames.ReceiveReadyFrame(destination_address=client, source_address=server, receive_sequence_number=link.vr)
        return self._out(link, rr.to_bytes())
