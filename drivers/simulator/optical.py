"""A simulated meter's optical probe port on a pseudo-terminal: IEC 62056-21 mode E, then HDLC.

The client opens the pty's slave side like a serial port. Sign-on (IEC 62056-21 §6.4.5,
mode E): the client sends "/?!\\r\\n" (300 baud 7E1 on a real probe), the meter answers its
identification "/XXXZ\\\\2ident\\r\\n" (Z = baud rate character, "\\2" = HDLC capable), the
client acknowledges with ACK "2" Z "2" CR LF and both switch to HDLC at the new baud rate.
A frame starting with 0x7E before any sign-on is taken as direct HDLC (meters that need no
sign-on). After an HDLC DISC the port wants a new sign-on. A pty carries no baud rate or
parity, so the meter simply keeps reading bytes; the client may reopen the device to change
its settings (switching 7E1→8N1 in place fails on a pty with EINVAL).
"""
from __future__ import annotations

import os
import tty
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Callable

import anyio

from drivers.simulator.hdlc import HdlcBus
from drivers.simulator.meter import SimulatedMeter

BAUD_9600 = "5"
ACK = 0x06


def identification(meter: SimulatedMeter, baud_char: str = BAUD_9600) -> bytes:
    """The meter's mode E identification message."""
    profile = meter.config.profile
    return f"/{profile.flag_id}{baud_char}\\2{profile.model}{meter.config.serial}\r\n".encode("ascii")


class OpticalPortProtocol:
    """Sans-IO sign-on then HDLC for one meter: bytes in, bytes to send out."""

    def __init__(self, meter: SimulatedMeter, now: Callable[[], datetime], baud_char: str = BAUD_9600) -> None:
        self.meter = meter
        self._now = now
        self._baud_char = baud_char
        self._buffer = bytearray()
        self._bus: HdlcBus | None = None

    @property
    def in_hdlc(self) -> bool:
        return self._bus is not None

    def feed(self, data: bytes) -> list[bytes]:
        if self.meter.faults.no_answer:
            return []
        if self._bus is not None:
            return self._hdlc(data)
        self._buffer += data
        out: list[bytes] = []
        while self._bus is None:
            if self._buffer[:1] == b"\x7e":  # direct HDLC, no sign-on
                rest, self._buffer = bytes(self._buffer), bytearray()
                self._bus = HdlcBus({self.meter.config.hdlc_address: self.meter}, self._now)
                return out + self._hdlc(rest)
            end = self._buffer.find(b"\r\n")
            if end < 0:
                if len(self._buffer) > 256:
                    self._buffer.clear()  # line noise
                return out
            line, self._buffer = bytes(self._buffer[:end]), self._buffer[end + 2:]
            # Strip a parity bit a real 7E1 line would have added.
            line = bytes(b & 0x7F for b in line)
            if line.startswith(b"/?") and line.endswith(b"!"):
                out.append(identification(self.meter, self._baud_char))
            elif line == bytes((ACK,)) + b"2" + self._baud_char.encode() + b"2":
                self._bus = HdlcBus({self.meter.config.hdlc_address: self.meter}, self._now)
                rest, self._buffer = bytes(self._buffer), bytearray()
                return out + (self._hdlc(rest) if rest else [])
        return out

    def _hdlc(self, data: bytes) -> list[bytes]:
        assert self._bus is not None
        address = self.meter.config.hdlc_address
        was_connected = self._bus.is_connected(address)
        out: list[bytes] = []
        for reply in self._bus.feed(data):
            out.extend(reply.frames)
            if reply.disconnect:
                self._bus = None
                return out
        # A DISC ends the session; the next one starts with a sign-on again.
        if was_connected and not self._bus.is_connected(address):
            self._bus = None
        return out


@asynccontextmanager
async def optical_port(
    meter: SimulatedMeter, now: Callable[[], datetime], baud_char: str = BAUD_9600
) -> AsyncIterator[str]:
    """Serve `meter` on a new pty for the duration of the block; yields the device path."""
    master, slave = os.openpty()
    try:
        # Our own handle on the slave keeps the pty alive while the client reopens it.
        tty.setraw(slave)
        os.set_blocking(master, False)
        protocol = OpticalPortProtocol(meter, now, baud_char)

        async def serve() -> None:
            while True:
                await anyio.wait_readable(master)
                try:
                    data = os.read(master, 4096)
                except BlockingIOError:
                    continue
                for chunk in protocol.feed(data):
                    if meter.faults.latency_ms:
                        await anyio.sleep(meter.faults.latency_ms / 1000)
                    view = memoryview(chunk)
                    while view:
                        try:
                            written = os.write(master, view)
                        except BlockingIOError:
                            await anyio.wait_writable(master)
                            continue
                        view = view[written:]

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            try:
                yield os.ttyname(slave)
            finally:
                tg.cancel_scope.cancel()
    finally:
        os.close(master)
        os.close(slave)
