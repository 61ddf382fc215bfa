"""TCP transport with the DLMS wrapper (IEC 62056-47 §7.3.3).

Each APDU travels behind an 8-byte header: version (1), source wPort, destination wPort, length,
all big-endian 16-bit. Reads go by that length, so a response is complete when its length has
arrived; the header's wPorts must be the meter's and ours, else the PDU is someone else's. An answer
that is no wrapper PDU is described (``drivers.transport.sniff``): HDLC frames (a framing mismatch),
HTTP, TLS or text (not a DLMS endpoint), so the operator knows which setting to check.
"""
from __future__ import annotations

import anyio
from anyio.abc import SocketStream

from drivers.errors import ConfigError, ConnectionLost, FrameError, MeterTimeout
from drivers.transport.base import ByteBuffer, close_quietly, connect_tcp, send_all
from drivers.transport.sniff import describe_bytes, looks_like_hdlc

WRAPPER_VERSION = 1
HEADER_LENGTH = 8
SNIFF_BYTES = 64  # of an answer that is no wrapper PDU, read to say what it is
SNIFF_WAIT_S = 0.2  # for the rest of such an answer to arrive


def wrap(apdu: bytes, source_wport: int, destination_wport: int) -> bytes:
    """One wrapper PDU; also used by the simulator and tests to build answers."""
    if len(apdu) > 0xFFFF:
        raise ValueError("APDU longer than the wrapper length field allows")
    return (
        WRAPPER_VERSION.to_bytes(2, "big")
        + source_wport.to_bytes(2, "big")
        + destination_wport.to_bytes(2, "big")
        + len(apdu).to_bytes(2, "big")
        + apdu
    )


class WrapperTransport:
    """DLMS wrapper over one TCP connection to a meter or an IP concentrator port."""

    # retransmit() re-sends the same PDU; the meter processes it again (no link-level duplicate
    # detection), so the session re-protects ciphered requests instead.
    link_retransmission = False

    def __init__(
        self,
        meter_id: str,
        host: str,
        port: int,
        *,
        client_wport: int = 16,
        server_wport: int = 1,
        connect_timeout_s: float = 10.0,
    ) -> None:
        for name, value in (("client_wport", client_wport), ("server_wport", server_wport)):
            if not 0 <= value <= 0xFFFF:
                raise ConfigError(meter_id, f"{name} {value} is outside 0..65535")
        self.meter_id = meter_id
        self.host = host
        self.port = port
        self.client_wport = client_wport
        self.server_wport = server_wport
        self.connect_timeout_s = connect_timeout_s
        self._stream: SocketStream | None = None
        self._buffer: ByteBuffer | None = None
        self._pending_header: bytes | None = None
        self._last_sent: bytes | None = None

    async def open(self) -> None:
        if self._stream is not None:
            return
        self._stream = await connect_tcp(self.host, self.port, self.meter_id, self.connect_timeout_s)
        self._buffer = ByteBuffer(self._stream, self.meter_id)
        self._pending_header = None

    async def send(self, apdu: bytes) -> None:
        stream = self._require_open()
        self._last_sent = wrap(apdu, self.client_wport, self.server_wport)
        await send_all(stream, self._last_sent, self.meter_id, self.connect_timeout_s)

    async def retransmit(self) -> None:
        stream = self._require_open()
        if self._last_sent is None:
            return
        await send_all(stream, self._last_sent, self.meter_id, self.connect_timeout_s)

    async def receive(self, timeout_s: float) -> bytes:
        self._require_open()
        assert self._buffer is not None
        try:
            with anyio.fail_after(timeout_s):
                while True:
                    apdu = await self._read_pdu(self._buffer)
                    if apdu is not None:
                        return apdu
        except TimeoutError as exc:
            partial = (self._pending_header or b"") + self._buffer.peek()
            detail = f"; {len(partial)} bytes came that are no wrapper PDU: {describe_bytes(partial)}" if partial else ""
            raise MeterTimeout(self.meter_id, f"no wrapper PDU within {timeout_s:g} s{detail}") from exc
        except ConnectionLost as exc:
            partial = (self._pending_header or b"") + self._buffer.peek()
            if not partial:
                raise
            raise ConnectionLost(self.meter_id, f"{exc.message} after answering with {describe_bytes(partial)}") from exc

    async def _read_pdu(self, buffer: ByteBuffer) -> bytes | None:
        # The header is kept across a timeout so a late body still parses in step.
        if self._pending_header is None:
            self._pending_header = await buffer.read_exactly(HEADER_LENGTH)
        header = self._pending_header
        version = int.from_bytes(header[0:2], "big")
        source = int.from_bytes(header[2:4], "big")
        destination = int.from_bytes(header[4:6], "big")
        length = int.from_bytes(header[6:8], "big")
        if version != WRAPPER_VERSION:
            # The stream is out of step and cannot be resynchronised: there is no flag to hunt for.
            self._pending_header = None
            seen = header + await buffer.read_available(SNIFF_BYTES, SNIFF_WAIT_S)
            if looks_like_hdlc(seen):
                problem = ('framing mismatch: the port answers with HDLC frames, not DLMS wrapper PDUs '
                           '(framing = "hdlc" on its concentrator?)')
            else:
                problem = f"not a DLMS wrapper answer: {describe_bytes(seen)} (check host and port)"
            raise FrameError(self.meter_id, f"{problem}; wrapper version field {version}, expected {WRAPPER_VERSION}")
        body = await buffer.read_exactly(length)
        self._pending_header = None
        if source != self.server_wport or destination != self.client_wport:
            # Another association's PDU on a shared concentrator port: not ours to read.
            return None
        if length == 0:
            raise FrameError(self.meter_id, "empty wrapper PDU")
        return body

    async def aclose(self) -> None:
        stream, self._stream, self._buffer = self._stream, None, None
        await close_quietly(stream)

    def _require_open(self) -> SocketStream:
        if self._stream is None:
            raise ConnectionLost(self.meter_id, "transport is not open")
        return self._stream
