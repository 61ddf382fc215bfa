"""OpticalTransport over a pty pair standing in for the optical probe: mode E sign-on, port reopen,
then a full DLMS session over HDLC; direct HDLC without sign-on; sign-on failures typed."""
from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from drivers.errors import FrameError, MeterTimeout
from drivers.session import DlmsSession, FileInvocationCounterStore
from drivers.transport.optical import OpticalTransport

try:
    from .test_session_peer import ENERGY, PROFILE, FakeMeter, HdlcLink, profile_rows, run_hdlc_links
except ImportError:
    from test_session_peer import ENERGY, PROFILE, FakeMeter, HdlcLink, profile_rows, run_hdlc_links

pytestmark = pytest.mark.anyio

IDENTIFICATION = b"/FAK5\\2FAKEMETER01\r\n"


class PtyMeter:
    """The meter end of a pty: answers the sign-on (if asked to), then HDLC."""

    def __init__(self, master: int, link: HdlcLink, identification: bytes | None, mode_e: bool) -> None:
        self.master = master
        self.link = link
        self.identification = identification
        self.mode_e = mode_e
        self.sign_on_seen: list[bytes] = []

    async def receive(self) -> bytes:
        while True:
            await anyio.wait_readable(self.master)
            try:
                data = os.read(self.master, 4096)
            except OSError as exc:
                if exc.errno != errno.EIO:  # EIO: the client end is closed for its reopen
                    raise
                await anyio.sleep(0.01)
                continue
            if data:
                return data

    async def send(self, data: bytes) -> None:
        await anyio.wait_writable(self.master)
        os.write(self.master, data)

    async def run(self) -> None:
        if self.mode_e:
            buffer = bytearray()
            while not buffer.endswith(b"/?!\r\n"):
                buffer += await self.receive()
            self.sign_on_seen.append(bytes(buffer))
            if self.identification is None:
                await anyio.sleep_forever()
            await self.send(self.identification)
            buffer.clear()
            while not buffer.endswith(b"\r\n"):
                buffer += await self.receive()
            self.sign_on_seen.append(bytes(buffer))
        await run_hdlc_links(self.receive, self.send, [self.link])


@asynccontextmanager
async def pty_meter(
    link: HdlcLink, identification: bytes | None = IDENTIFICATION, mode_e: bool = True
) -> AsyncIterator[tuple[str, PtyMeter]]:
    master, slave = os.openpty()
    meter = PtyMeter(master, link, identification, mode_e)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(meter.run)
            # The slave fd stays open so the master never sees a hang-up while the port is reopened.
            yield os.ttyname(slave), meter
            tg.cancel_scope.cancel()
    finally:
        os.close(master)
        os.close(slave)


async def test_mode_e_sign_on_then_session_over_hdlc(tmp_path: Path) -> None:
    link = HdlcLink(FakeMeter(block_size=300), physical=17)
    async with pty_meter(link) as (port, meter):
        transport = OpticalTransport("optical-1", port, server_physical_address=17, settle_s=0.05, link_timeout_s=1)
        async with DlmsSession(transport, invocation_counters=FileInvocationCounterStore(tmp_path), timeout_s=1) as s:
            assert await s.get(ENERGY) == bytes.fromhex("060001e240")
            assert await s.get(PROFILE) == profile_rows(96)
    assert meter.sign_on_seen == [b"/?!\r\n", b"\x0625" + b"2\r\n"]
    assert transport.identification == IDENTIFICATION[:-2]
    assert link.meter.errors == 0


async def test_direct_hdlc_without_sign_on(tmp_path: Path) -> None:
    link = HdlcLink(FakeMeter(), physical=17)
    async with pty_meter(link, mode_e=False) as (port, meter):
        transport = OpticalTransport("optical-2", port, mode_e=False, server_physical_address=17, link_timeout_s=1)
        async with DlmsSession(transport, timeout_s=1) as s:
            assert await s.get(ENERGY) == bytes.fromhex("060001e240")
    assert meter.sign_on_seen == []


async def test_silent_probe_is_meter_timeout() -> None:
    async with pty_meter(HdlcLink(FakeMeter()), identification=None) as (port, _meter):
        transport = OpticalTransport("optical-3", port, sign_on_timeout_s=0.3)
        with pytest.raises(MeterTimeout) as timeout:
            await transport.open()
    assert "optical-3" in str(timeout.value)


async def test_identification_without_baud_character_is_frame_error() -> None:
    async with pty_meter(HdlcLink(FakeMeter()), identification=b"/FAKX\\2BROKEN\r\n") as (port, _meter):
        transport = OpticalTransport("optical-4", port, sign_on_timeout_s=1)
        with pytest.raises(FrameError):
            await transport.open()
