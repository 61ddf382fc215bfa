"""DlmsSession, the I/O edge, over the TCP wrapper against the independent scripted meter
(tests/drivers/test_session_peer.py): timeouts, retransmission, disconnects, the invocation counter
store. What an answer means is tested byte-fed against the sans-IO core in test_session_core.py.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from dlms_cosem import dlms_data

from drivers.errors import ConfigError, ConnectionLost, DriverError, MeterTimeout
from drivers.security import HlsGmacSecurity, LowLevelSecurity, NoSecurity
from drivers.session import DlmsSession, FileInvocationCounterStore
from drivers.transport.wrapper import WrapperTransport

try:
    from .test_session_peer import AK, EK, ENERGY, PROFILE, SERIAL, FakeMeter, profile_rows, serve_wrapper
except ImportError:
    from test_session_peer import AK, EK, ENERGY, PROFILE, SERIAL, FakeMeter, profile_rows, serve_wrapper

pytestmark = pytest.mark.anyio

PASSWORD = b"Lls-Pw-77"
ENERGY_BYTES = dlms_data.DoubleLongUnsignedData(123456).to_bytes()


def session(port: int, tmp_path: Path, security: object = None, **kwargs: object) -> DlmsSession:
    transport = WrapperTransport("meter-7", "127.0.0.1", port, connect_timeout_s=2)
    return DlmsSession(
        transport,
        security=security,  # type: ignore[arg-type]
        invocation_counters=FileInvocationCounterStore(tmp_path / "ic"),
        timeout_s=kwargs.pop("timeout_s", 0.5),  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )


async def test_hls_gmac_reads_ciphered_blocks_and_counter_never_goes_back(tmp_path: Path) -> None:
    meter = FakeMeter(level="hls", authentication_key=AK, encryption_key=EK, block_size=300)
    security = HlsGmacSecurity(authentication_key=AK, encryption_key=EK)
    store = FileInvocationCounterStore(tmp_path / "ic")
    async with serve_wrapper(meter) as port:
        async with session(port, tmp_path, security) as s:
            assert await s.get(ENERGY) == ENERGY_BYTES
            assert await s.get(PROFILE) == profile_rows(96)
            used = s.client_invocation_counter
        stored = await store.load("meter-7")
        assert stored is not None and used is not None and stored >= used
        # A second run starts above every counter the meter has seen; the meter enforces it.
        async with session(port, tmp_path, security) as s:
            assert await s.get(ENERGY) == ENERGY_BYTES
    assert meter.errors == 0
    document = json.loads(next((tmp_path / "ic").glob("*.json")).read_text())
    assert document["meter_id"] == "meter-7" and document["next_unused"] >= meter.last_client_ic + 1


async def test_hls_lost_counter_file_fails_once_then_recovers_from_meter_hint(tmp_path: Path) -> None:
    meter = FakeMeter(level="hls", authentication_key=AK, encryption_key=EK)
    meter.last_client_ic = 5000  # the meter has seen counters we no longer remember
    security = HlsGmacSecurity(authentication_key=AK, encryption_key=EK)
    async with serve_wrapper(meter) as port:
        with pytest.raises(DriverError):
            async with session(port, tmp_path, security):
                pass
        async with session(port, tmp_path, security) as s:
            assert await s.get(ENERGY) == ENERGY_BYTES


async def test_hls_needs_a_counter_store() -> None:
    with pytest.raises(ConfigError):
        DlmsSession(
            WrapperTransport("m", "127.0.0.1", 1), security=HlsGmacSecurity(authentication_key=AK, encryption_key=EK)
        )


async def test_silent_meter_times_out_within_deadline_and_next_session_succeeds(tmp_path: Path) -> None:
    meter = FakeMeter(faults={1: "silent", 2: "silent"})  # request 0 is the AARQ
    async with serve_wrapper(meter) as port:
        with anyio.fail_after(5):  # guard only: MeterTimeout must come from the session's own deadline
            with pytest.raises(MeterTimeout):
                async with session(port, tmp_path, retries=1, timeout_s=0.2) as s:
                    await s.get(ENERGY)
        async with session(port, tmp_path) as s:
            assert await s.get(ENERGY) == ENERGY_BYTES


async def test_one_lost_answer_is_recovered_by_retransmission(tmp_path: Path) -> None:
    meter = FakeMeter(faults={1: "silent"})
    async with serve_wrapper(meter) as port:
        async with session(port, tmp_path, retries=1, timeout_s=0.2) as s:
            assert await s.get(ENERGY) == ENERGY_BYTES
    assert meter.requests[1] == meter.requests[2]  # the same request went out twice


async def test_closed_link_ends_in_connection_lost_and_session_refuses_further_use(tmp_path: Path) -> None:
    # The decisions on garbage and exception answers are tested byte-fed in test_session_core.py.
    meter = FakeMeter(faults={1: "close"})
    async with serve_wrapper(meter) as port:
        with pytest.raises(ConnectionLost):
            async with session(port, tmp_path) as s:
                try:
                    await s.get(ENERGY)
                finally:
                    broken = s
        with pytest.raises(ConnectionLost):
            await broken.get(ENERGY)
        async with session(port, tmp_path) as s:
            assert await s.get(ENERGY) == ENERGY_BYTES


async def test_disconnect_in_the_middle_of_a_block_transfer_is_connection_lost(tmp_path: Path) -> None:
    meter = FakeMeter(block_size=100, faults={4: "close"})
    async with serve_wrapper(meter) as port:
        with pytest.raises(ConnectionLost):
            async with session(port, tmp_path) as s:
                await s.get(PROFILE)
        async with session(port, tmp_path) as s:
            assert await s.get(PROFILE) == profile_rows(96)


async def test_nobody_listening_is_connection_lost(tmp_path: Path) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    with pytest.raises(ConnectionLost) as lost:
        async with session(port, tmp_path):
            pass
    assert "meter-7" in str(lost.value)


async def test_profile_range_needs_aware_datetimes(tmp_path: Path) -> None:
    meter = FakeMeter()
    async with serve_wrapper(meter) as port:
        async with session(port, tmp_path) as s:
            with pytest.raises(ConfigError):
                await s.get_profile_range(PROFILE, datetime(2026, 1, 1), datetime(2026, 1, 2))


def test_security_reprs_hide_secrets_and_bad_keys_are_config_errors() -> None:
    text = repr(HlsGmacSecurity(authentication_key=AK, encryption_key=EK)) + repr(LowLevelSecurity(PASSWORD))
    assert AK.hex() not in text and EK.hex() not in text and "Lls-Pw" not in text
    assert repr(NoSecurity()) == "NoSecurity()"
    with pytest.raises(ConfigError):
        HlsGmacSecurity(authentication_key=b"short", encryption_key=EK)
    with pytest.raises(ConfigError):
        LowLevelSecurity(b"")


class ScriptedTransport:
    """Answers with given APDUs in order: the AARE of a real association, then the bytes under test."""

    def __init__(self, answers: list[bytes]) -> None:
        self.meter_id = "fuzz-meter"
        self.answers = list(answers)

    async def open(self) -> None:
        pass

    async def send(self, apdu: bytes) -> None:
        pass

    async def receive(self, timeout_s: float) -> bytes:
        if not self.answers:
            raise MeterTimeout(self.meter_id, "script exhausted")
        return self.answers.pop(0)

    async def retransmit(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def _aare() -> bytes:
    meter = FakeMeter()
    from dlms_cosem.connection import DlmsConnection
    from dlms_cosem.security import NoSecurityAuthentication

    aare = meter.handle(DlmsConnection(authentication=NoSecurityAuthentication(), client_system_title=None).get_aarq().to_bytes())
    assert isinstance(aare, bytes)
    return aare


AARE = _aare()
GET_RESPONSE_PREFIXES = [b"", b"\xc4", b"\xc4\x01", b"\xc4\x01\xc1", b"\xc4\x02\xc1\x00", b"\xc4\x03\xc1", b"\xd8", b"\xdb", b"\x61"]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=st.sampled_from(GET_RESPONSE_PREFIXES), tail=st.binary(max_size=40))
async def test_random_answers_end_in_bytes_or_typed_errors_only(prefix: bytes, tail: bytes) -> None:
    transport = ScriptedTransport([AARE, prefix + tail, prefix + tail])
    try:
        async with DlmsSession(transport, timeout_s=1, retries=0) as s:  # type: ignore[arg-type]
            result = await s.get_with_list([ENERGY, SERIAL]) if prefix == b"\xc4\x03\xc1" else await s.get(ENERGY)
            assert isinstance(result, (bytes, list))
    except DriverError:
        pass


async def test_counter_store_never_goes_back_and_rejects_a_damaged_file(tmp_path: Path) -> None:
    store = FileInvocationCounterStore(tmp_path)
    assert await store.load("meter/1") == 0
    await store.save("meter/1", 500)
    await store.save("meter/1", 200)  # a lower value is ignored
    assert await store.load("meter/1") == 500
    assert await FileInvocationCounterStore(tmp_path).load("meter/1") == 500  # survives a restart
    assert [p.name for p in tmp_path.iterdir()] == ["meter_1.invocation-counter.json"]  # no temp files left
    (tmp_path / "meter_1.invocation-counter.json").write_text("{not json")
    with pytest.raises(ConfigError):
        await store.load("meter/1")


@pytest.mark.parametrize("level", ["none", "hls"])
async def test_late_duplicate_answer_is_not_taken_for_the_next_request(tmp_path: Path, level: str) -> None:
    # The meter answers the first GET late: the client retransmits, and both answers arrive.
    meter = FakeMeter(level=level, authentication_key=AK, encryption_key=EK, block_size=100)
    first_get = 1 if level == "none" else 2  # after the AARQ (and the HLS reply)
    meter.delays = {first_get: 0.3}
    security = HlsGmacSecurity(authentication_key=AK, encryption_key=EK) if level == "hls" else None
    async with serve_wrapper(meter) as port:
        async with session(port, tmp_path, security, retries=1, timeout_s=0.2) as s:
            assert await s.get(ENERGY) == ENERGY_BYTES
            assert await s.get(SERIAL) == dlms_data.OctetStringData(b"57123456").to_bytes()
            assert await s.get(PROFILE) == profile_rows(96)


class ForeignInvokeIds(FakeMeter):
    """Answers every GET under another invoke-id than the request's (a concentrator mixing up sessions)."""

    def handle(self, apdu: bytes) -> bytes | str | None:
        answer = super().handle(apdu)
        if isinstance(answer, bytes) and answer[:1] == b"\xc4" and len(answer) > 2:
            answer = answer[:2] + bytes([(answer[2] & 0xF0) | ((answer[2] & 0x0F) % 15 + 1)]) + answer[3:]
        return answer


async def test_answers_under_foreign_invoke_ids_are_a_warning_with_counts_not_silence(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.WARNING, logger="drivers.session")
    async with serve_wrapper(ForeignInvokeIds()) as port:
        async with session(port, tmp_path, retries=1, timeout_s=0.2) as s:
            with pytest.raises(MeterTimeout) as raised:
                await s.get(ENERGY)
    message = str(raised.value)
    assert "no wrapper PDU within 0.2 s" in message
    assert "2 answer(s) during get carried invoke-id(s) [2], not ours (1), and were dropped as stale or foreign" in message
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("carried invoke-id(s) [2], not ours (1)" in w and "within 2 attempt(s)" in w for w in warnings), warnings
