"""What a transport says when the port is not what the config claims: real bytes over localhost TCP.

A tiny HTTP server, a TLS server's first record, an SSH banner, HDLC frames on a port configured
for the wrapper and wrapper PDUs on one configured for HDLC, a simulated HDLC bus with nobody at the
address asked, and a line where not a byte comes back. Each message must name what the bytes look
like, so the operator knows whether to check host and port, ``framing`` or the HDLC address.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.abc import SocketStream

from drivers.decode.hdlc import encode_address, encode_frame
from drivers.errors import ConnectionLost, FrameError, MeterTimeout
from drivers.simulator import Framing, MeterSimulator, SimulatorConfig
from drivers.simulator.fleet import fleet
from drivers.transport import hdlc
from drivers.transport.hdlc import HdlcTcpTransport
from drivers.transport.sniff import describe_bytes
from drivers.transport.wrapper import WrapperTransport, wrap

pytestmark = pytest.mark.anyio

AARQ = bytes.fromhex("601da109060760857405080101be10040e01000000065f1f0400001e1dffff")
HTTP_400 = b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
TLS_ALERT = bytes.fromhex("15030300020232")  # alert record, TLS 1.2, fatal decode_error
HDLC_DM = encode_frame(encode_address(16), encode_address(1, 17), 0x1F)  # DM from a meter at 1/17


@asynccontextmanager
async def answering(answer: bytes, *, on_connect: bool = False, close: bool = False) -> AsyncIterator[int]:
    """A TCP server on localhost that sends ``answer`` (at once, or after the first bytes it reads)."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)

    async def handle(stream: SocketStream) -> None:
        async with stream:
            if not on_connect:
                await stream.receive()
            await stream.send(answer)
            if not close:
                await anyio.sleep(5)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield listener.extra(anyio.abc.SocketAttribute.local_port)
        tg.cancel_scope.cancel()


async def _wrapper_answer(port: int) -> Exception:
    transport = WrapperTransport("m1", "127.0.0.1", port, client_wport=16, server_wport=1, connect_timeout_s=1)
    await transport.open()
    try:
        await transport.send(AARQ)
        with pytest.raises((FrameError, MeterTimeout, ConnectionLost)) as raised:
            await transport.receive(0.5)
        return raised.value
    finally:
        await transport.aclose()


async def test_an_http_server_on_the_meters_port_is_named_as_such() -> None:
    async with answering(HTTP_400, close=True) as port:
        error = await _wrapper_answer(port)
    assert isinstance(error, FrameError)
    assert "HTTP ('HTTP/1.1 400 Bad Request')" in str(error) and "not a DLMS endpoint" in str(error)
    assert "check host and port" in str(error)


async def test_a_real_http_server_on_the_meters_port_is_named_as_such() -> None:
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        transport = WrapperTransport("m1", "127.0.0.1", server.server_address[1], connect_timeout_s=1)
        await transport.open()
        try:
            # An AARQ whose bytes happen to hold a line end: the server answers its "request line".
            await transport.send(AARQ + b"\r\n\r\n")
            with pytest.raises(FrameError) as raised:
                await transport.receive(1)
        finally:
            await transport.aclose()
    finally:
        server.shutdown()
        server.server_close()
    assert "HTTP (" in str(raised.value) and "not a DLMS endpoint" in str(raised.value)


async def test_a_tls_server_on_the_meters_port_is_named_as_such() -> None:
    # A TLS server sends its alert to a ClientHello it cannot parse and hangs up.
    async with answering(TLS_ALERT, close=True) as port:
        error = await _wrapper_answer(port)
    assert isinstance(error, ConnectionLost)
    assert "TLS (a TLS alert record, 15 03 03 00 02)" in str(error) and "not a DLMS endpoint" in str(error)


async def test_a_text_banner_is_quoted() -> None:
    async with answering(b"SSH-2.0-OpenSSH_9.6\r\n", on_connect=True) as port:
        error = await _wrapper_answer(port)
    assert isinstance(error, FrameError)
    assert "text ('SSH-2.0-OpenSSH_9.6')" in str(error)


async def test_a_short_text_answer_then_close_is_named() -> None:
    async with answering(b"busy\n", close=True) as port:
        error = await _wrapper_answer(port)
    assert isinstance(error, ConnectionLost)
    assert "closed the connection after answering with text ('busy')" in str(error)


async def test_hdlc_frames_on_a_wrapper_port_are_a_framing_mismatch() -> None:
    async with answering(HDLC_DM) as port:
        error = await _wrapper_answer(port)
    assert isinstance(error, FrameError)
    assert "framing mismatch: the port answers with HDLC frames" in str(error) and 'framing = "hdlc"' in str(error)


async def test_a_short_answer_that_is_no_pdu_is_described_at_the_timeout() -> None:
    async with answering(TLS_ALERT) as port:
        error = await _wrapper_answer(port)
    assert isinstance(error, MeterTimeout)
    assert "no wrapper PDU within 0.5 s; 7 bytes came that are no wrapper PDU: TLS" in str(error)


async def _hdlc_open(port: int, physical: int = 17) -> Exception:
    transport = HdlcTcpTransport("m1", "127.0.0.1", port, server_physical_address=physical, link_timeout_s=0.3,
                                 frame_retries=0, connect_timeout_s=1)
    with pytest.raises((MeterTimeout, ConnectionLost, FrameError)) as raised:
        await transport.open()
    return raised.value


async def test_wrapper_pdus_on_an_hdlc_port_are_a_framing_mismatch() -> None:
    async with answering(wrap(bytes.fromhex("6129a109060760857405080101a203020100"), 1, 16)) as port:
        error = await _hdlc_open(port)
    assert isinstance(error, MeterTimeout)
    assert "no answer to SNRM from HDLC address logical 1, physical 17" in str(error)
    assert "framing mismatch: the port answers with DLMS wrapper PDUs (00 01 00 01 00 10" in str(error)
    assert 'framing = "wrapper"' in str(error)


async def test_an_http_server_on_an_hdlc_port_is_named_as_such() -> None:
    async with answering(HTTP_400, close=True) as port:
        error = await _hdlc_open(port)
    assert isinstance(error, ConnectionLost)
    assert "after answering SNRM with HTTP ('HTTP/1.1 400 Bad Request'): a web server" in str(error)


async def test_a_silent_line_is_a_dead_line_or_nobody_there() -> None:
    async with answering(b"") as port:  # takes the SNRM, answers nothing
        hdlc._LINE_ANSWERED.pop(("127.0.0.1", port), None)  # a reused port number is a new line here
        error = await _hdlc_open(port)
    assert isinstance(error, MeterTimeout)
    assert "not a byte came back: a dead line" in str(error)


async def test_frames_of_other_stations_mean_nobody_at_this_address() -> None:
    other = encode_frame(encode_address(16), encode_address(1, 18), 0x73)  # UA from 1/18 to client 16
    async with answering(other) as port:
        error = await _hdlc_open(port, physical=17)
    assert isinstance(error, MeterTimeout)
    assert "the line is alive (frames from HDLC address(es) logical 1, physical 18)" in str(error)
    assert "nobody answers at this address: check physical_address and logical_address" in str(error)


async def test_an_address_nobody_answers_on_a_bus_that_answers_for_another() -> None:
    async with MeterSimulator(SimulatorConfig(meters=fleet(2), framing=Framing.HDLC, speed=0.0)) as simulator:
        endpoint = simulator.endpoint("sim-0001", Framing.HDLC)
        assert endpoint.physical_address is not None
        good = HdlcTcpTransport("m0", endpoint.host, endpoint.port, server_physical_address=endpoint.physical_address,
                                link_timeout_s=0.3, frame_retries=0)
        await good.open()
        await good.aclose()
        error = await _hdlc_open(endpoint.port, physical=99)
    assert isinstance(error, MeterTimeout)
    assert "physical 99" in str(error)
    assert (f"nobody answers at this address, though the line is alive (address logical 1, physical "
            f"{endpoint.physical_address} answered on it") in str(error)


def test_describe_bytes() -> None:
    assert describe_bytes(b"") == "nothing"
    assert describe_bytes(wrap(b"\x61\x00", 1, 16)).startswith("DLMS wrapper PDUs (00 01 00 01 00 10 00 02)")
    assert describe_bytes(HDLC_DM).startswith("HDLC frames (7e a0")
    assert describe_bytes(bytes(range(200, 232))).startswith("unrecognised bytes (c8 c9")
    assert "\x1b" not in describe_bytes(b"HTTP/1.1 200 \x1b[31mOK")  # the peer's bytes, printable only
