"""The optical probe: IEC 62056-21 mode E sign-on, then HDLC over the serial port.

Sign-on at 300 baud 7E1: send ``/?!<CR><LF>``, read the identification ``/XXXZ\\W...<CR><LF>`` (Z is
the baud rate character), answer ``<ACK>2Z2<CR><LF>`` (protocol control 2 = HDLC, mode control 2 =
binary), then close the port and open it again at baud Z in 8N1: switching the line settings in
place raised EINVAL on a pty, reopening works on ptys and on real probes. Meters that need no
sign-on are opened straight at their HDLC baud rate (``mode_e=False``).

pyserial is blocking: every call runs in a worker thread with a short pyserial timeout, so a
cancelled or expired read returns within ``_POLL_S`` and the port is never used by two threads.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import serial
from anyio.abc import ByteStream

from drivers.errors import ConfigError, ConnectionLost, FrameError, MeterTimeout
from drivers.transport.hdlc import HdlcTransport

_POLL_S = 0.05
SIGN_ON_REQUEST = b"/?!\r\n"
# IEC 62056-21 §6.3.14 table: baud rate character in mode C/E.
BAUD_RATES = {"0": 300, "1": 600, "2": 1200, "3": 2400, "4": 4800, "5": 9600, "6": 19200}

SerialFactory = Callable[..., Any]


class SerialByteStream(ByteStream):
    """An anyio byte stream over an open pyserial port."""

    def __init__(self, port: Any, meter_id: str) -> None:
        self._port = port
        self._meter_id = meter_id
        self._closed = False

    def _read_some(self, max_bytes: int) -> bytes:
        data: bytes = self._port.read(1)  # waits at most the port timeout (_POLL_S)
        if data:
            waiting = self._port.in_waiting
            if waiting:
                data += self._port.read(min(waiting, max_bytes - 1))
        return data

    async def receive(self, max_bytes: int = 65536) -> bytes:
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            try:
                data = await anyio.to_thread.run_sync(self._read_some, max_bytes)
            except (serial.SerialException, OSError) as exc:
                raise anyio.BrokenResourceError from exc
            if data:
                return data
            # Nothing within the poll interval: loop, which is also a cancellation point.

    async def send(self, item: bytes) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        try:
            await anyio.to_thread.run_sync(self._write, item)
        except (serial.SerialException, OSError) as exc:
            raise anyio.BrokenResourceError from exc

    def _write(self, item: bytes) -> None:
        self._port.write(item)
        self._port.flush()

    async def send_eof(self) -> None:
        raise NotImplementedError("a serial line has no half-close")

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._port.close)


class OpticalTransport(HdlcTransport):
    """HDLC over the optical probe (or any serial line), with or without mode E sign-on."""

    def __init__(
        self,
        meter_id: str,
        port: str,
        *,
        mode_e: bool = True,
        baud_rate: int = 9600,
        sign_on_timeout_s: float = 3.0,
        settle_s: float = 0.25,
        serial_factory: SerialFactory = serial.serial_for_url,
        **hdlc_options: Any,
    ) -> None:
        if baud_rate not in BAUD_RATES.values():
            raise ConfigError(meter_id, f"baud rate {baud_rate} is not an IEC 62056-21 rate")
        self.port_name = port
        self.mode_e = mode_e
        self.baud_rate = baud_rate
        self.sign_on_timeout_s = sign_on_timeout_s
        self.settle_s = settle_s
        self.identification: bytes | None = None
        self._serial_factory = serial_factory
        super().__init__(meter_id, self._open_line, **hdlc_options)

    async def _open_port(self, baud: int, seven_e_one: bool) -> Any:
        options: dict[str, Any] = {"baudrate": baud, "timeout": _POLL_S, "write_timeout": 5.0}
        if seven_e_one:
            options.update(bytesize=serial.SEVENBITS, parity=serial.PARITY_EVEN, stopbits=serial.STOPBITS_ONE)
        else:
            options.update(bytesize=serial.EIGHTBITS, parity=serial.PARITY_NONE, stopbits=serial.STOPBITS_ONE)
        try:
            return await anyio.to_thread.run_sync(lambda: self._serial_factory(self.port_name, **options))
        except (serial.SerialException, OSError, ValueError) as exc:
            raise ConnectionLost(self.meter_id, f"cannot open serial port {self.port_name}: {exc}") from exc

    async def _open_line(self) -> ByteStream:
        if not self.mode_e:
            return SerialByteStream(await self._open_port(self.baud_rate, seven_e_one=False), self.meter_id)
        sign_on = SerialByteStream(await self._open_port(300, seven_e_one=True), self.meter_id)
        try:
            baud = await self._sign_on(sign_on)
        finally:
            await sign_on.aclose()
        return SerialByteStream(await self._open_port(baud, seven_e_one=False), self.meter_id)

    async def _sign_on(self, line: SerialByteStream) -> int:
        """Mode E handshake; returns the baud rate the meter switches to."""
        try:
            with anyio.fail_after(self.sign_on_timeout_s):
                await line.send(SIGN_ON_REQUEST)
                received = bytearray()
                while not received.endswith(b"\r\n"):
                    received += await line.receive()
                    if len(received) > 128:
                        break
        except TimeoutError as exc:
            raise MeterTimeout(self.meter_id, "no identification after /?! on the optical port") from exc
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise ConnectionLost(self.meter_id, "optical port failed during sign-on") from exc
        # Parity bits may come through as the 8th bit when the line is read 7E1 on some adapters.
        identification = bytes(byte & 0x7F for byte in received)
        start = identification.find(b"/")
        if start < 0 or len(identification) < start + 6 or not identification.endswith(b"\r\n"):
            raise FrameError(self.meter_id, f"malformed identification message ({len(identification)} bytes)")
        identification = identification[start:]
        self.identification = identification[:-2]
        baud_char = chr(identification[4])
        if baud_char not in BAUD_RATES:
            raise FrameError(self.meter_id, f"identification has no mode C/E baud character ({baud_char!r})")
        # Mode E is announced by "\2" after the baud character; a meter without it still may
        # accept HDLC, so the ACK is sent either way and the SNRM decides.
        ack = b"\x06" + b"2" + baud_char.encode() + b"2\r\n"
        try:
            await line.send(ack)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise ConnectionLost(self.meter_id, "optical port failed during sign-on") from exc
        # IEC 62056-21: the meter switches 200..1500 ms after the ACK; the caller's SNRM retries cover the rest.
        await anyio.sleep(self.settle_s)
        return BAUD_RATES[baud_char]
