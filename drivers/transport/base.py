"""The transport interface and the byte-stream helpers every transport uses.

A transport moves one complete APDU per ``send``/``receive``; every read has a deadline that always
fires (``anyio.fail_after``) and ends in ``MeterTimeout``; a closed or broken stream ends in
``ConnectionLost``. Nothing from anyio or the OS escapes untyped.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream

from drivers.errors import ConnectionLost, MeterTimeout


@runtime_checkable
class Transport(Protocol):
    """One association's link to one meter. Used by one task at a time."""

    meter_id: str
    # Optional attribute (read with getattr, default False): True when retransmit() repeats a
    # link frame that the server recognises as a duplicate (HDLC N(S)), False when the server
    # will process a re-sent request again (wrapper over TCP).
    # link_retransmission: bool

    async def open(self) -> None:
        """Connect the byte stream and set up the link layer (e.g. HDLC SNRM/UA)."""

    async def send(self, apdu: bytes) -> None:
        """Send one complete APDU."""

    async def receive(self, timeout_s: float) -> bytes:
        """Return the next complete APDU, or raise MeterTimeout after ``timeout_s``."""

    async def retransmit(self) -> None:
        """Send the last request again unchanged (after a timeout or a corrupt answer)."""

    async def aclose(self) -> None:
        """Tear down the link layer (best effort, bounded) and close the stream. Idempotent."""


class ByteBuffer:
    """Bytes read from a stream but not yet consumed, so reads can be by exact length."""

    def __init__(self, stream: ByteReceiveStream, meter_id: str) -> None:
        self._stream = stream
        self._meter_id = meter_id
        self._buffer = bytearray()

    async def read_exactly(self, count: int) -> bytes:
        while len(self._buffer) < count:
            self._buffer += await _receive_some(self._stream, self._meter_id)
        out = bytes(self._buffer[:count])
        del self._buffer[:count]
        return out

    async def read_until(self, byte: int) -> bytes:
        """Read up to and including ``byte``."""
        while True:
            index = self._buffer.find(bytes([byte]))
            if index >= 0:
                out = bytes(self._buffer[: index + 1])
                del self._buffer[: index + 1]
                return out
            self._buffer += await _receive_some(self._stream, self._meter_id)

    def peek(self) -> bytes:
        """The bytes read from the stream and not consumed yet (for describing an odd answer)."""
        return bytes(self._buffer)

    async def read_available(self, limit: int, timeout_s: float) -> bytes:
        """Consume up to ``limit`` bytes: those buffered and what arrives within ``timeout_s``; a
        closed stream just ends the read. Only for describing an answer that is not the framing."""
        with anyio.move_on_after(timeout_s):
            try:
                while len(self._buffer) < limit:
                    self._buffer += await _receive_some(self._stream, self._meter_id)
            except ConnectionLost:
                pass
        out = bytes(self._buffer[:limit])
        del self._buffer[:limit]
        return out

    def discard(self) -> None:
        """Forget buffered bytes (stale answers after a timeout)."""
        self._buffer.clear()


async def _receive_some(stream: ByteReceiveStream, meter_id: str) -> bytes:
    try:
        return await stream.receive()
    except anyio.EndOfStream as exc:
        raise ConnectionLost(meter_id, "the meter closed the connection") from exc
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
        raise ConnectionLost(meter_id, f"connection failed: {type(exc).__name__}") from exc


async def send_all(stream: ByteSendStream, data: bytes, meter_id: str, timeout_s: float) -> None:
    try:
        with anyio.fail_after(timeout_s):
            await stream.send(data)
    except TimeoutError as exc:
        raise MeterTimeout(meter_id, f"could not send within {timeout_s:g} s") from exc
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
        raise ConnectionLost(meter_id, f"send failed: {type(exc).__name__}") from exc


async def connect_tcp(host: str, port: int, meter_id: str, timeout_s: float) -> anyio.abc.SocketStream:
    try:
        with anyio.fail_after(timeout_s):
            return await anyio.connect_tcp(host, port)
    except TimeoutError as exc:
        raise MeterTimeout(meter_id, f"TCP connect to {host}:{port} timed out after {timeout_s:g} s") from exc
    except OSError as exc:
        raise ConnectionLost(meter_id, f"TCP connect to {host}:{port} failed: {exc.strerror or exc}") from exc


async def close_quietly(stream: anyio.abc.AsyncResource | None) -> None:
    """Close a stream without letting a broken peer turn cleanup into a second error."""
    if stream is None:
        return
    with anyio.CancelScope(shield=True):
        try:
            await stream.aclose()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
