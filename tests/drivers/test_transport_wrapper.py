"""WrapperTransport (IEC 62056-47) against a raw TCP peer on 127.0.0.1 that sends scripted bytes."""
from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.abc import SocketStream

from drivers.errors import ConfigError, ConnectionLost, FrameError, MeterTimeout
from drivers.transport.wrapper import WrapperTransport, wrap

pytestmark = pytest.mark.anyio

Script = Callable[[SocketStream], Awaitable[None]]


@asynccontextmanager
async def peer(script: Script) -> AsyncIterator[int]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)

    async def handle(stream: SocketStream) -> None:
        async with stream:
            await script(stream)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield listener.extra(anyio.abc.SocketAttribute.local_port)
        tg.cancel_scope.cancel()


async def read_exactly(stream: SocketStream, count: int) -> bytes:
    data = b""
    while len(data) < count:
        data += await stream.receive(count - len(data))
    return data


async def test_request_is_wrapped_and_answer_split_into_single_bytes_is_reassembled() -> None:
    seen: list[bytes] = []

    async def script(stream: SocketStream) -> None:
        seen.append(await read_exactly(stream, 8 + 3))
        for byte in wrap(b"\xc4\x01\xc1\x00\x06\x00\x01\xe2\x40", 1, 16):
            await stream.send(bytes([byte]))
        await anyio.sleep(1)

    async with peer(script) as port:
        transport = WrapperTransport("m1", "127.0.0.1", port)
        await transport.open()
        await transport.send(b"\xc0\x01\xc1")
        assert await transport.receive(2) == b"\xc4\x01\xc1\x00\x06\x00\x01\xe2\x40"
        await transport.aclose()
        await transport.aclose()  # idempotent
    assert seen == [bytes.fromhex("0001 0010 0001 0003 c001c1")]


async def test_pdu_for_another_wport_is_skipped() -> None:
    async def script(stream: SocketStream) -> None:
        await stream.send(wrap(b"\x01\x02", 1, 17) + wrap(b"\x03\x04", 1, 16))
        await anyio.sleep(1)

    async with peer(script) as port:
        transport = WrapperTransport("m1", "127.0.0.1", port)
        await transport.open()
        assert await transport.receive(2) == b"\x03\x04"
        await transport.aclose()


async def test_wrong_wrapper_version_is_frame_error() -> None:
    async def script(stream: SocketStream) -> None:
        await stream.send(bytes.fromhex("0002 0001 0010 0001 00"))
        await anyio.sleep(1)

    async with peer(script) as port:
        transport = WrapperTransport("m1", "127.0.0.1", port)
        await transport.open()
        with pytest.raises(FrameError) as error:
            await transport.receive(2)
        await transport.aclose()
    assert error.value.meter_id == "m1"


async def test_deadline_fires_mid_pdu_and_the_late_body_still_parses_in_step() -> None:
    body_may_go = anyio.Event()

    async def script(stream: SocketStream) -> None:
        pdu = wrap(b"\xaa\xbb\xcc", 1, 16)
        await stream.send(pdu[:9])  # header and one byte of the body, then silence
        await body_may_go.wait()
        await stream.send(pdu[9:] + wrap(b"\xdd", 1, 16))
        await anyio.sleep(1)

    async with peer(script) as port:
        transport = WrapperTransport("m1", "127.0.0.1", port)
        await transport.open()
        with pytest.raises(MeterTimeout):
            await transport.receive(0.2)
        body_may_go.set()
        assert await transport.receive(2) == b"\xaa\xbb\xcc"
        assert await transport.receive(2) == b"\xdd"
        await transport.aclose()


async def test_peer_closing_is_connection_lost_and_closed_transport_refuses_use() -> None:
    async def script(stream: SocketStream) -> None:
        await read_exactly(stream, 9)

    async with peer(script) as port:
        transport = WrapperTransport("m1", "127.0.0.1", port)
        await transport.open()
        await transport.send(b"\x00")
        with pytest.raises(ConnectionLost):
            await transport.receive(2)
        await transport.aclose()
        with pytest.raises(ConnectionLost):
            await transport.send(b"\x00")


async def test_retransmit_resends_the_same_pdu() -> None:
    seen: list[bytes] = []

    async def script(stream: SocketStream) -> None:
        seen.append(await read_exactly(stream, 10))
        seen.append(await read_exactly(stream, 10))
        await stream.send(wrap(b"\x01", 1, 16))
        await anyio.sleep(1)

    async with peer(script) as port:
        transport = WrapperTransport("m1", "127.0.0.1", port)
        await transport.open()
        await transport.send(b"\xc0\x01")
        await transport.retransmit()
        assert await transport.receive(2) == b"\x01"
        await transport.aclose()
    assert seen[0] == seen[1] == wrap(b"\xc0\x01", 16, 1)


def test_wport_out_of_range_is_config_error() -> None:
    with pytest.raises(ConfigError):
        WrapperTransport("m1", "127.0.0.1", 4059, server_wport=70000)
