"""Server (secondary station) side of DLMS HDLC (IEC 62056-46) for an RS-485 bus, sans-IO.

Several meters share one byte stream (one TCP connection to the "bus"); each answers only
frames addressed to its physical address. Server addresses are parsed in their 1-, 2- and
4-byte forms; replies mirror the form the client used, so a physical address above 127
(which needs the 4-byte "extended" form) round-trips.

Supported: SNRM (with or without the parameter negotiation field; window size 1 only) → UA,
DISC → UA/DM, I-frames in both directions with segmentation (each segment acknowledged by
RR, IEC 62056-46 §6.4.4.4.3.4), RR polls, and retransmission of the last reply when the client
repeats a frame it sent (its ssn did not advance: our reply was lost or corrupt).

Frames are split, checked and built by the drivers' one HDLC codec (``drivers.decode.hdlc``),
the same the client transport and ``gateway decode`` use; this module holds each meter's link state.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from drivers.decode.errors import FrameError
from drivers.decode.hdlc import (DEFAULT_MAX_INFO, LLC_COMMAND, LLC_RESPONSE, MAX_INFO_RX, MAX_INFO_TX, CheckedFrame,
                                 HdlcFrameReader, check_frame, encode_address, encode_frame, encode_parameters,
                                 read_parameters)
from drivers.simulator.cosem import CosemAssociation
from drivers.simulator.faults import corrupt_fcs
from drivers.simulator.meter import SimulatedMeter

LLC_REQUEST = LLC_COMMAND
OWN_MAX_INFO = 512
# Replies, P/F bit set: UA, DM; RR and I-frames add their sequence numbers.
_UA_F, _DM_F, _RR_F, _I_F = 0x73, 0x1F, 0x11, 0x10


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


def _client_frame(frame: CheckedFrame) -> ClientFrame:
    if len(frame.src.raw) != 1:
        raise HdlcFrameError("client address must be one byte")
    return ClientFrame(
        server_logical=frame.dst.upper, server_physical=frame.dst.lower, server_address_length=len(frame.dst.raw),
        client_address=frame.src.upper, control=frame.control, segmented=frame.segmented, info=frame.info,
    )


def parse_client_frame(frame: bytes) -> ClientFrame:
    """Parse one client→server frame including both flags."""
    try:
        return _client_frame(check_frame(frame))
    except FrameError as exc:
        raise HdlcFrameError(exc.message) from exc


def split_frames(buffer: bytearray) -> list[bytes]:
    """Remove and return every complete, checked frame at the front of `buffer` (flags may be shared);
    corrupt frames are dropped, as a meter drops them."""
    reader = HdlcFrameReader()
    reader.feed(bytes(buffer))
    out: list[bytes] = []
    while True:
        try:
            frame = reader.next_checked()
        except FrameError:
            continue
        if frame is None:
            break
        out.append(frame.raw)
    buffer[:] = reader.pending
    return out


def _is_information(frame: bytes) -> bool:
    return check_frame(frame).control & 0x01 == 0


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
        self._reader = HdlcFrameReader()

    def is_connected(self, address: int) -> bool:
        link = self._links.get(address)
        return link is not None and link.connected

    def feed(self, data: bytes) -> list[BusOutput]:
        self._reader.feed(data)
        outputs = []
        while True:
            try:
                checked = self._reader.next_checked()
                if checked is None:
                    break
                frame = _client_frame(checked)
            except (FrameError, HdlcFrameError):
                continue  # corrupt frames are discarded; the client times out and retries
            link = self._links.get(frame.server_physical) if frame.server_physical is not None else None
            if link is None or link.meter.faults.no_answer:
                continue
            out = self._handle(link, frame)
            if out is not None:
                outputs.append(out)
        return outputs

    # -- frame handling ----------------------------------------------------------------

    def _addresses(self, frame: ClientFrame) -> tuple[bytes, bytes]:
        """(client, server) address bytes for replies, in the form the client used for the server."""
        client = encode_address(frame.client_address)
        if frame.server_address_length == 4:
            server = encode_address(frame.server_logical, frame.server_physical, 4)
        elif frame.server_physical is None:
            server = encode_address(frame.server_logical)
        else:
            # As dlms-cosem built it before: a zero upper (logical) byte of the 2-byte form is left out.
            server = (encode_address(frame.server_physical) if frame.server_logical == 0
                      else encode_address(frame.server_logical, frame.server_physical))
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
            params = read_parameters(frame.info)
            link.connected = True
            link.vs = link.vr = 0
            link.rx.clear()
            link.tx_segments.clear()
            link.last_frame = None
            link.association = CosemAssociation(link.meter, self._now, frame.client_address)
            if params:
                link.max_tx = min(params.get(MAX_INFO_RX, DEFAULT_MAX_INFO), OWN_MAX_INFO)
                rx = min(params.get(MAX_INFO_TX, DEFAULT_MAX_INFO), OWN_MAX_INFO)
                payload = encode_parameters(link.max_tx, rx)
            else:
                link.max_tx = DEFAULT_MAX_INFO
                payload = b""
            return self._out(link, encode_frame(client, server, _UA_F, payload))
        if control == 0x43:  # DISC
            was_connected = link.connected
            link.connected = False
            link.association = None
            if was_connected:
                return self._out(link, encode_frame(client, server, _UA_F))
            return self._out(link, encode_frame(client, server, _DM_F))
        if not link.connected or link.association is None:
            return self._out(link, encode_frame(client, server, _DM_F))
        if control & 0x01 == 0:  # I-frame
            return self._information(link, frame, client, server)
        if control & 0x0F == 0x01:  # RR
            return self._receive_ready(link, (frame.control >> 5) & 0x07, client, server)
        return None

    def _information(self, link: _Link, frame: ClientFrame, client: bytes, server: bytes) -> BusOutput | None:
        ssn = (frame.control >> 1) & 0x07
        if ssn != link.vr:
            if ssn == (link.vr - 1) % 8 and link.last_frame is not None:
                return self._out(link, link.last_frame)  # our reply was lost: repeat it
            return None
        link.vr = (link.vr + 1) % 8
        link.rx += frame.info
        if frame.segmented:
            link.last_frame = encode_frame(client, server, link.vr << 5 | _RR_F)
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

    def _send_segment(self, link: _Link, client: bytes, server: bytes) -> BusOutput:
        segment = link.tx_segments.pop(0)
        link.last_frame = encode_frame(client, server, link.vr << 5 | _I_F | link.vs << 1, segment,
                                       segmented=bool(link.tx_segments))
        link.vs = (link.vs + 1) % 8
        disconnect = link.disconnect_after and not link.tx_segments
        return self._out(link, link.last_frame, disconnect=disconnect)

    def _receive_ready(self, link: _Link, nr: int, client: bytes, server: bytes) -> BusOutput | None:
        if nr != link.vs:
            return self._out(link, link.last_frame) if link.last_frame is not None else None
        if link.tx_segments:
            return self._send_segment(link, client, server)
        return self._out(link, encode_frame(client, server, link.vr << 5 | _RR_F))
