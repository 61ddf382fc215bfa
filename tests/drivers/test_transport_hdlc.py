"""HdlcTransport (IEC 62056-46) over TCP against the independent HDLC peer, alone and under DlmsSession.

Covers segmentation both ways, block transfer inside segmented frames, physical addresses on both
sides of 127, several meters on one bus behind one lock, corrupt FCS (recovered by RR, or a typed
FrameError when it persists), lost frames (recovered by retransmission), disconnects, and a
property test that the frame parser only ever raises ValueError.
"""
from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from hypothesis import given, settings, strategies as st

from drivers.errors import ConfigError, ConnectionLost, FrameError, MeterTimeout
from drivers.security import HlsGmacSecurity, LowLevelSecurity
from drivers.session import DlmsSession, FileInvocationCounterStore
from drivers.transport.hdlc import HdlcTcpTransport, HdlcTransport, fcs, split_frame

try:
    from .test_session_peer import AK, EK, ENERGY, PROFILE, SERIAL, FakeMeter, HdlcLink, profile_rows, serve_hdlc
except ImportError:
    from test_session_peer import AK, EK, ENERGY, PROFILE, SERIAL, FakeMeter, HdlcLink, profile_rows, serve_hdlc

ENERGY_BYTES = bytes.fromhex("060001e240")


def hdlc_session(port: int, tmp_path: Path, physical: int | None = 17, security: object = None,
                 bus_lock: anyio.Lock | None = None, meter_id: str = "bus-meter", **kwargs: object) -> DlmsSession:
    transport = HdlcTcpTransport(
        meter_id, "127.0.0.1", port, server_physical_address=physical, bus_lock=bus_lock,
        link_timeout_s=kwargs.pop("link_timeout_s", 0.5),  # type: ignore[arg-type]
        connect_timeout_s=2,
    )
    return DlmsSession(
        transport, security=security, invocation_counters=FileInvocationCounterStore(tmp_path),  # type: ignore[arg-type]
        timeout_s=kwargs.pop("timeout_s", 0.5), **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.anyio
@pytest.mark.parametrize("physical", [17, 300, None])
async def test_session_over_hdlc_reads_segmented_block_transfer(tmp_path: Path, physical: int | None) -> None:
    meter = FakeMeter(block_size=400)
    link = HdlcLink(meter, physical=physical)
    async with serve_hdlc(link) as port:
        async with hdlc_session(port, tmp_path, physical) as session:
            assert await session.get(ENERGY) == ENERGY_BYTES
            assert await session.get(PROFILE) == profile_rows(96)
            listed = await session.get_with_list([ENERGY, SERIAL] * 12)  # request > 128 bytes: segmented
    assert listed[0] == ENERGY_BYTES and len(listed) == 24
    assert meter.errors == 0 and link.retransmissions == 0


@pytest.mark.anyio
@pytest.mark.parametrize("level", ["lls", "hls"])
async def test_secured_sessions_over_hdlc(tmp_path: Path, level: str) -> None:
    meter = FakeMeter(level=level, password=b"pw-1234", authentication_key=AK, encryption_key=EK, block_size=500)
    security = LowLevelSecurity(b"pw-1234") if level == "lls" else HlsGmacSecurity(authentication_key=AK, encryption_key=EK)
    async with serve_hdlc(HdlcLink(meter, physical=17)) as port:
        async with hdlc_session(port, tmp_path, security=security) as session:
            assert await session.get(PROFILE) == profile_rows(96)
    assert meter.errors == 0


@pytest.mark.anyio
async def test_meters_on_one_bus_take_turns_under_the_bus_lock(tmp_path: Path) -> None:
    first, second = FakeMeter(), FakeMeter()
    first.objects[("1-0:1.8.0.255", 2)] = bytes.fromhex("0600000001")
    stats: dict[str, int] = {}
    bus = anyio.Lock()
    results: dict[str, bytes] = {}

    async def poll(physical: int, name: str) -> None:
        async with hdlc_session(port, tmp_path, physical, bus_lock=bus, meter_id=name) as session:
            results[name] = await session.get(ENERGY)

    async with serve_hdlc(HdlcLink(first, physical=17), HdlcLink(second, physical=18), stats=stats) as port:
        async with anyio.create_task_group() as tg:
            tg.start_soon(poll, 17, "first")
            tg.start_soon(poll, 18, "second")
    assert results == {"first": bytes.fromhex("0600000001"), "second": ENERGY_BYTES}
    assert stats["max_active"] == 1  # never two sessions on the bus at once
    assert not bus.locked()


@pytest.mark.anyio
async def test_one_corrupt_fcs_is_recovered_by_rr(tmp_path: Path) -> None:
    link = HdlcLink(FakeMeter(), physical=17, faults={2: "corrupt"})  # 0: UA, 1: AARE, 2: first GET answer
    async with serve_hdlc(link) as port:
        async with hdlc_session(port, tmp_path) as session:
            assert await session.get(ENERGY) == ENERGY_BYTES
    assert link.retransmissions == 1


@pytest.mark.anyio
async def test_persistent_corruption_is_frame_error_and_next_poll_succeeds(tmp_path: Path) -> None:
    link = HdlcLink(FakeMeter(), physical=17, faults={n: "corrupt" for n in range(2, 12)})
    async with serve_hdlc(link) as port:
        with anyio.fail_after(5):  # guard only; the error must come from the transport's own bounds
            with pytest.raises(FrameError):
                async with hdlc_session(port, tmp_path, retries=0) as session:
                    await session.get(ENERGY)
        link.faults.clear()
        async with hdlc_session(port, tmp_path) as session:
            assert await session.get(ENERGY) == ENERGY_BYTES


@pytest.mark.anyio
async def test_lost_answer_is_recovered_by_retransmitting_the_i_frame(tmp_path: Path) -> None:
    link = HdlcLink(FakeMeter(), physical=17, faults={2: "drop"})
    async with serve_hdlc(link) as port:
        async with hdlc_session(port, tmp_path, retries=1, timeout_s=0.2) as session:
            assert await session.get(ENERGY) == ENERGY_BYTES
    assert link.retransmissions == 1


@pytest.mark.anyio
async def test_nobody_at_the_address_is_meter_timeout_and_the_right_address_answers(tmp_path: Path) -> None:
    link = HdlcLink(FakeMeter(), physical=17)
    async with serve_hdlc(link) as port:
        with pytest.raises(MeterTimeout):
            async with hdlc_session(port, tmp_path, physical=99, link_timeout_s=0.1):  # nobody at 99
                pass
        async with hdlc_session(port, tmp_path, physical=17) as session:
            assert await session.get(ENERGY) == ENERGY_BYTES


@pytest.mark.anyio
async def test_disconnect_mid_block_transfer_is_connection_lost(tmp_path: Path) -> None:
    meter = FakeMeter(block_size=200, faults={3: "close"})
    async with serve_hdlc(HdlcLink(meter, physical=17)) as port:
        with pytest.raises(ConnectionLost):
            async with hdlc_session(port, tmp_path) as session:
                await session.get(PROFILE)


def test_frame_with_flag_bytes_inside_parses_by_length() -> None:
    # An I-frame whose information and FCS region contain 0x7E: no byte stuffing in IEC 62056-46.
    header = bytes([0xA0, 0x00, 0x21, 0x02, 0x23, 0x10])
    info = b"\xe6\xe7\x00\x7e\x7e\x01"
    length = len(header) + 2 + len(info) + 2
    header = bytes([0xA0, length]) + header[2:]
    body = header + fcs(header) + info
    body += fcs(body)
    frame = split_frame(body)
    assert frame.information == info and frame.source == b"\x02\x23" and frame.destination == b"\x21"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_frame_parser_raises_only_value_error(data: bytes) -> None:
    try:
        split_frame(data)
    except ValueError:
        pass


def test_bad_addresses_are_config_errors() -> None:
    async def never() -> object:
        raise AssertionError

    with pytest.raises(ConfigError):
        HdlcTransport("m", never, client_address=0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        HdlcTransport("m", never, server_physical_address=20000)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_negotiated_max_information_length_bounds_our_segments(tmp_path: Path) -> None:
    link = HdlcLink(FakeMeter(), physical=17, ua_max_receive=64)
    async with serve_hdlc(link) as port:
        transport = HdlcTcpTransport("neg", "127.0.0.1", port, server_physical_address=17, negotiate=True,
                                     max_info_length=256, link_timeout_s=0.5)
        async with DlmsSession(transport, timeout_s=0.5) as session:
            listed = await session.get_with_list([ENERGY, SERIAL] * 10)  # ~200-byte request
    assert len(listed) == 20
    assert link.snrm_information[0].startswith(b"\x81\x80") and b"\x05\x02\x01\x00" in link.snrm_information[0]
    assert link.largest_info_received == 64


@pytest.mark.anyio
async def test_without_negotiation_snrm_is_bare_and_segments_are_128(tmp_path: Path) -> None:
    link = HdlcLink(FakeMeter(), physical=17, ua_max_receive=64)
    async with serve_hdlc(link) as port:
        async with hdlc_session(port, tmp_path) as session:
            await session.get_with_list([ENERGY, SERIAL] * 10)
    assert link.snrm_information == [b""] and link.largest_info_received == 128
