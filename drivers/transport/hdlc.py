"""HDLC link (IEC 62056-46) over any anyio byte stream: TCP to an RS-485 bus, or a serial port.

The client side of one HDLC connection: SNRM/UA to connect, I-frames carrying the LLC header and
the APDU (segmented by the maximum information field length), RR to fetch the next segment of a
long answer, DISC to leave. Frames are encoded and checked by the drivers' one HDLC codec
(``drivers.decode.hdlc``); this module holds the link state and the I/O: it pulls frames off the
stream by their length field (no byte stuffing in DLMS HDLC) and decides what each one means.

Frames from other stations on a shared bus are ignored. A corrupt frame is answered with RR (the
HDLC way to ask for retransmission) a bounded number of times, then ends in ``FrameError``. A bus
carries one session at a time: pass the bus's ``anyio.Lock`` and the transport holds it from
``open`` to ``aclose``.

When SNRM gets no UA, the error says what the line did instead: bytes that are no HDLC frames are
described (wrapper PDUs: a framing mismatch; HTTP, TLS, text: not a DLMS endpoint), frames of other
stations or an earlier answer on the same TCP line (``line_answered``) mean the line is alive and
nobody answers at this address, and silence is a dead line or nobody there.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import ByteStream

from drivers.decode import errors as decode_errors
# fcs is re-exported: callers that build a frame by hand (tests) keep taking it from here.
from drivers.decode.hdlc import (DEFAULT_MAX_INFO, FLAG, LLC_COMMAND, LLC_RESPONSE, MAX_INFO_RX, check_frame,
                                 encode_address, encode_frame, encode_parameters, fcs, read_parameters)
from drivers.errors import ConfigError, ConnectionLost, FrameError, MeterTimeout
from drivers.transport.base import ByteBuffer, close_quietly, connect_tcp, send_all
from drivers.transport.sniff import describe_bytes, looks_like_wrapper

LLC_REQUEST = LLC_COMMAND
DISC_TIMEOUT_S = 1.0  # bound on the closing DISC/UA exchange: it holds the bus, often past the deadline
_NOISE_KEPT = 64  # bytes of line noise kept to describe a line that answers with no HDLC frames
# The last address that answered SNRM on each line (HdlcTcpTransport: host and port), and when
# (anyio time): a later silent address on an answering line is "nobody at this address".
_LINE_ANSWERED: dict[object, tuple[str, float]] = {}

__all__ = ["HdlcTcpTransport", "HdlcTransport", "ReceivedFrame", "fcs", "server_address", "split_frame"]

StreamOpener = Callable[[], Awaitable[ByteStream]]

# Control field values with the P/F bit masked off (IEC 62056-46 §6.4.3).
_UA, _DM, _FRMR, _RR, _RNR = 0x63, 0x0F, 0x87, 0x01, 0x05
# Commands we send, P/F bit set: SNRM, DISC; RR and I-frames add their sequence numbers.
_SNRM_P, _DISC_P, _RR_P, _I_P = 0x93, 0x53, 0x11, 0x10


@dataclass(frozen=True)
class ReceivedFrame:
    """An incoming frame whose length, HCS and FCS have been checked."""

    destination: bytes
    source: bytes
    control: int
    information: bytes
    segmented: bool

    @property
    def is_information(self) -> bool:
        return self.control & 0x01 == 0

    @property
    def send_sequence(self) -> int:
        return (self.control >> 1) & 0x07

    @property
    def receive_sequence(self) -> int:
        return (self.control >> 5) & 0x07

    @property
    def kind(self) -> int:
        """Control field without P/F (and without sequence numbers for S-frames)."""
        if self.is_information:
            return 0
        if self.control & 0x03 == 0x01:  # supervisory: RR/RNR carry N(R)
            return self.control & 0x0F
        return self.control & 0xEF


def split_frame(body: bytes) -> ReceivedFrame:
    """Parse the bytes between the flags of one frame; raises ValueError when it is not valid."""
    try:
        frame = check_frame(bytes([FLAG]) + body + bytes([FLAG]))
    except decode_errors.FrameError as exc:
        raise ValueError(exc.message) from exc
    return ReceivedFrame(frame.dst.raw, frame.src.raw, frame.control, frame.info, frame.segmented)


def server_address(logical: int, physical: int | None) -> bytes:
    """The server address as this transport has always sent it (formerly through dlms-cosem).

    The 4-byte form when the physical address or, with one, the logical address exceeds 7 bits. Kept
    byte for byte from dlms-cosem for the other cases: a zero upper part is left out, and a logical
    address above 127 without a physical one goes out as two 7-bit halves."""
    if physical is not None and (physical > 0x7F or logical > 0x7F):
        return encode_address(logical, physical, 4)
    if physical is None:
        return encode_address(logical) if logical <= 0x7F else encode_address(logical >> 7, logical & 0x7F)
    return encode_address(physical) if logical == 0 else encode_address(logical, physical)


def _address_name(raw: bytes) -> str:
    """An encoded HDLC address (IEC 62056-46 §6.4.2.2: 7 bits per byte) as the config writes it."""
    parts = [b >> 1 for b in raw]
    if len(raw) == 2:
        return f"logical {parts[0]}, physical {parts[1]}"
    if len(raw) == 4:
        return f"logical {parts[0] << 7 | parts[1]}, physical {parts[2] << 7 | parts[3]}"
    return f"{parts[0] if parts else '?'}"


class HdlcTransport:
    """HDLC client link to one server (logical device) on a byte stream."""

    # retransmit() repeats the I-frame with its N(S); the server answers a duplicate by repeating
    # its response, so even a ciphered request may go out again unchanged.
    link_retransmission = True

    def __init__(
        self,
        meter_id: str,
        opener: StreamOpener,
        *,
        client_address: int = 16,
        server_logical_address: int = 1,
        server_physical_address: int | None = None,
        bus_lock: anyio.Lock | None = None,
        link_timeout_s: float = 5.0,
        frame_retries: int = 2,
        max_info_length: int = DEFAULT_MAX_INFO,
        negotiate: bool = False,
    ) -> None:
        """``max_info_length`` is what we propose (both directions) when ``negotiate`` is set;
        without negotiation SNRM carries no parameters and the 128-byte default applies."""
        if not 0 < client_address <= 0x7F:
            raise ConfigError(meter_id, f"HDLC client address {client_address} is outside 1..127")
        server_logical, server_physical = server_logical_address, server_physical_address
        if not 0 <= server_logical <= 0x3FFF or (server_physical is not None and not 0 < server_physical <= 0x3FFF):
            raise ConfigError(meter_id, "HDLC server addresses must be within 0..16383")
        if not 32 <= max_info_length <= 2030:
            raise ConfigError(meter_id, f"max information length {max_info_length} is outside 32..2030")
        self.meter_id = meter_id
        self._opener = opener
        self._client_bytes = encode_address(client_address)
        self._server_bytes = server_address(server_logical, server_physical)
        self._bus_lock = bus_lock
        self.link_timeout_s = link_timeout_s
        self.frame_retries = frame_retries
        self.proposed_max_info = max_info_length if negotiate else DEFAULT_MAX_INFO
        self.negotiate = negotiate
        self.max_info_length = DEFAULT_MAX_INFO  # what we may send; set from the UA
        self._stream: ByteStream | None = None
        self._buffer: ByteBuffer | None = None
        self._holds_lock = False
        self._connected = False  # UA received: DISC is owed on close
        self._ssn = 0  # N(S) of our next I-frame
        self._rsn = 0  # N(S) we expect next from the server
        self._last_sent: list[bytes] = []
        self._address_text = (f"logical {server_logical}, physical {server_physical}" if server_physical is not None
                              else f"logical {server_logical}")
        self.line_key: object | None = None  # names the line in _LINE_ANSWERED (None: not tracked)
        self._noise = bytearray()  # bytes that were no frame, since open (first _NOISE_KEPT)
        self._other_stations: set[str] = set()  # addresses of frames not meant for us, since open

    # -- link set-up and tear-down -----------------------------------------------------------

    async def open(self) -> None:
        if self._stream is not None:
            return
        if self._bus_lock is not None:
            await self._bus_lock.acquire()
            self._holds_lock = True
        try:
            self._stream = await self._opener()
            self._buffer = ByteBuffer(self._stream, self.meter_id)
            self._ssn = self._rsn = 0
            self._noise.clear()
            self._other_stations.clear()
            try:
                ua = await self._command(self._snrm(), expect=_UA, what="SNRM")
            except MeterTimeout as exc:
                raise MeterTimeout(self.meter_id, self._no_ua(exc.message)) from exc
            except ConnectionLost as exc:
                seen = self._seen()
                if not seen:
                    raise
                raise ConnectionLost(self.meter_id, f"{exc.message} after answering SNRM with "
                                     f"{describe_bytes(seen)}") from exc
            if self.line_key is not None:
                _LINE_ANSWERED[self.line_key] = (self._address_text, anyio.current_time())
            self._connected = True
            self._apply_negotiated(ua.information)
        except BaseException:
            await self.aclose()
            raise

    def _seen(self) -> bytes:
        """What came on the line that was no frame: skipped noise, and what still waits for a flag."""
        return bytes(self._noise) + (self._buffer.peek() if self._buffer is not None else b"")

    def _no_ua(self, timeout: str) -> str:
        """Why SNRM had no answer, as far as the line tells (see the module docstring)."""
        asked = f"no answer to SNRM from HDLC address {self._address_text} ({timeout})"
        seen = self._seen()
        if seen and looks_like_wrapper(seen):
            return (f"{asked}: framing mismatch: the port answers with {describe_bytes(seen)}, not HDLC frames "
                    '(framing = "wrapper" on its concentrator?)')
        if seen:
            return f"{asked}: the port answers with {describe_bytes(seen)}, no HDLC frames (check host and port)"
        if self._other_stations:
            return (f"{asked}: the line is alive (frames from HDLC address(es) {'; '.join(sorted(self._other_stations))}),"
                    " nobody answers at this address: check physical_address and logical_address")
        answered = _LINE_ANSWERED.get(self.line_key) if self.line_key is not None else None
        if answered is not None:
            address, at = answered
            return (f"{asked}: nobody answers at this address, though the line is alive (address {address} answered "
                    f"on it {anyio.current_time() - at:.0f} s ago): check physical_address and logical_address, "
                    "or the meter's power and its bus wiring")
        return (f"{asked}, not a byte came back: a dead line (concentrator, RS-485 wiring, meter power) "
                "or nobody at this address")

    def _snrm(self) -> bytes:
        if not self.negotiate:
            return self._frame(_SNRM_P)
        # IEC 62056-46 §6.4.4.4.3.2: max info tx/rx as proposed, window 1 because we acknowledge
        # every segment.
        return self._frame(_SNRM_P, encode_parameters(self.proposed_max_info, self.proposed_max_info))

    def _apply_negotiated(self, information: bytes) -> None:
        # UA carries the server's parameters, or none: then the defaults (128 bytes) apply.
        self.max_info_length = DEFAULT_MAX_INFO
        value = read_parameters(information).get(MAX_INFO_RX)  # the server's maximum receive length
        if value is not None and value >= 32:
            self.max_info_length = min(value, self.proposed_max_info) if self.negotiate else min(value, DEFAULT_MAX_INFO)

    def _frame(self, control: int, information: bytes = b"", *, segmented: bool = False) -> bytes:
        return encode_frame(self._server_bytes, self._client_bytes, control, information, segmented=segmented)

    async def aclose(self) -> None:
        try:
            if self._stream is not None and self._connected:
                self._connected = False
                # Shielded so a cancelled poll still says goodbye, but short: the bus is held
                # until this returns, and the poll's deadline has usually passed already.
                with anyio.move_on_after(min(self.link_timeout_s, DISC_TIMEOUT_S), shield=True):
                    try:
                        await self._command(self._frame(_DISC_P), expect=_UA, what="DISC", accept_dm=True, retries=0)
                    except (MeterTimeout, FrameError, ConnectionLost):
                        pass  # the meter drops the link by itself after its inactivity timeout
        finally:
            stream, self._stream, self._buffer = self._stream, None, None
            await close_quietly(stream)
            if self._holds_lock and self._bus_lock is not None:
                self._holds_lock = False
                self._bus_lock.release()

    async def _command(
        self, frame: bytes, *, expect: int, what: str, accept_dm: bool = False, retries: int | None = None
    ) -> ReceivedFrame:
        """Send an unnumbered command and wait for its answer, re-sending after a timeout or a bad frame."""
        attempts = self.frame_retries if retries is None else retries
        self._last_sent = [frame]
        await self._write(frame)
        while True:
            try:
                answer = await self._read_frame(self.link_timeout_s)
            except (MeterTimeout, FrameError):
                if attempts <= 0:
                    raise
                attempts -= 1
                await self._write(frame)
                continue
            if answer.kind == expect or (accept_dm and answer.kind == _DM):
                return answer
            if answer.kind == _DM:
                raise ConnectionLost(self.meter_id, f"meter answered {what} with DM (disconnected mode)")
            raise FrameError(self.meter_id, f"unexpected answer to {what} (control 0x{answer.control:02x})")

    # -- data transfer -----------------------------------------------------------------------

    async def send(self, apdu: bytes) -> None:
        self._require_open()
        payload = LLC_REQUEST + apdu
        chunks = [payload[i : i + self.max_info_length] for i in range(0, len(payload), self.max_info_length)]
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1
            frame = self._frame(self._rsn << 5 | _I_P | self._ssn << 1, chunk, segmented=not last)
            self._ssn = (self._ssn + 1) % 8
            self._last_sent = [frame]
            await self._write(frame)
            if not last:
                await self._await_segment_ack()

    async def _await_segment_ack(self) -> None:
        attempts = self.frame_retries
        while True:
            try:
                answer = await self._read_frame(self.link_timeout_s)
            except (MeterTimeout, FrameError):
                if attempts <= 0:
                    raise
                attempts -= 1
                await self.retransmit()
                continue
            if answer.kind == _RR and answer.receive_sequence == self._ssn:
                return
            if answer.kind == _DM:
                raise ConnectionLost(self.meter_id, "meter answered DM during a segmented request")
            raise FrameError(self.meter_id, f"expected RR({self._ssn}) for a segment, got control 0x{answer.control:02x}")

    async def receive(self, timeout_s: float) -> bytes:
        """One APDU; ``timeout_s`` bounds the wait for each frame of a segmented answer."""
        self._require_open()
        payload = bytearray()
        bad_frames = 0
        while True:
            try:
                frame = await self._read_frame(timeout_s)
            except FrameError:
                if bad_frames >= self.frame_retries:
                    raise
                bad_frames += 1
                await self._send_rr()  # N(R) unchanged: "send that frame again"
                continue
            if frame.kind == _DM:
                raise ConnectionLost(self.meter_id, "meter answered DM (link no longer connected)")
            if frame.kind == _FRMR:
                raise FrameError(self.meter_id, "meter rejected our frame (FRMR)")
            if not frame.is_information:
                continue  # a stray RR/RNR: keep waiting for the data
            if frame.send_sequence != self._rsn:
                continue  # a repeat of a frame already taken (our RR crossed it)
            self._rsn = (self._rsn + 1) % 8
            payload += frame.information
            if frame.segmented:
                await self._send_rr()
                continue
            if not payload.startswith(LLC_RESPONSE):
                raise FrameError(self.meter_id, "answer lacks the LLC response header E6 E7 00")
            return bytes(payload[len(LLC_RESPONSE) :])

    async def retransmit(self) -> None:
        """Re-send the last frame unchanged (same N(S)/N(R)): a server that already took it answers
        its duplicate by repeating its response."""
        self._require_open()
        for frame in self._last_sent:
            await self._write(frame)

    async def _send_rr(self) -> None:
        await self._write(self._frame(self._rsn << 5 | _RR_P))

    # -- framing -----------------------------------------------------------------------------

    async def _read_frame(self, timeout_s: float) -> ReceivedFrame:
        """The next frame addressed to us from our server, within ``timeout_s``."""
        buffer = self._require_open()
        try:
            with anyio.fail_after(timeout_s):
                while True:
                    body = await self._read_frame_body(buffer)
                    try:
                        frame = split_frame(body)
                    except ValueError as exc:
                        raise FrameError(self.meter_id, f"corrupt HDLC frame: {exc}") from exc
                    if frame.destination != self._client_bytes or frame.source != self._server_bytes:
                        if len(self._other_stations) < 8:
                            self._other_stations.add(_address_name(frame.source))
                        continue  # another station's traffic on a shared bus
                    return frame
        except TimeoutError as exc:
            raise MeterTimeout(self.meter_id, f"no HDLC frame within {timeout_s:g} s") from exc

    async def _read_frame_body(self, buffer: ByteBuffer) -> bytes:
        while True:
            self._note_noise((await buffer.read_until(FLAG))[:-1])  # hunt: anything before a flag is line noise
            first = await buffer.read_exactly(1)
            while first[0] == FLAG:  # back-to-back flags (shared closing/opening flag)
                first = await buffer.read_exactly(1)
            if first[0] & 0xF0 != 0xA0:
                self._note_noise(bytes([FLAG]) + first)
                continue
            second = await buffer.read_exactly(1)
            length = ((first[0] & 0x07) << 8) | second[0]
            if length < 7:
                self._note_noise(bytes([FLAG]) + first + second)
                continue
            rest = await buffer.read_exactly(length - 2)
            # The closing flag is left in the buffer: it may open the next frame.
            return first + second + rest

    def _note_noise(self, data: bytes) -> None:
        if data and len(self._noise) < _NOISE_KEPT:
            self._noise += data[: _NOISE_KEPT - len(self._noise)]

    async def _write(self, data: bytes) -> None:
        if self._stream is None:
            raise ConnectionLost(self.meter_id, "transport is not open")
        await send_all(self._stream, data, self.meter_id, self.link_timeout_s)

    def _require_open(self) -> ByteBuffer:
        if self._buffer is None:
            raise ConnectionLost(self.meter_id, "transport is not open")
        return self._buffer


class HdlcTcpTransport(HdlcTransport):
    """HDLC over TCP, e.g. to an RS-485 bus behind a terminal server or concentrator. Several
    meters behind one address share a bus: give all their transports the same ``bus_lock``."""

    def __init__(self, meter_id: str, host: str, port: int, *, connect_timeout_s: float = 10.0, **options: Any) -> None:
        self.host = host
        self.port = port

        async def opener() -> ByteStream:
            return await connect_tcp(host, port, meter_id, connect_timeout_s)

        super().__init__(meter_id, opener, **options)
        self.line_key = (host, port)
