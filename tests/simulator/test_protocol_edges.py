"""Protocol paths dlms-cosem's client never takes, driven through the sans-IO cores with its frames.

HDLC: SNRM parameter negotiation, segmented requests acknowledged by RR, retransmission of a
lost reply, silence towards other addresses, 0x7E inside frames. COSEM: entry_descriptor and
selected columns on the profile, GET-Request-Next misuse, services before association.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from dlms_cosem.connection import DlmsConnection
from dlms_cosem.crc import CRCCCITT
from dlms_cosem.dlms_data import DlmsDataParser
from dlms_cosem.hdlc import frames
from dlms_cosem.hdlc.address import HdlcAddress
from dlms_cosem.security import NoSecurityAuthentication
from hypothesis import given, settings, strategies as st

from drivers.simulator import MeterConfig, SimulatedMeter, expected_profile_rows
from drivers.simulator.cosem import CosemAssociation
from drivers.simulator.hdlc import HdlcBus, split_frames

NOW = datetime(2026, 3, 2, 10, 7, 30, tzinfo=timezone.utc)
CRC = CRCCCITT()
SERVER = HdlcAddress(1, 300, "server", extended_addressing=True)
CLIENT = HdlcAddress(16, None, "client")


def meter() -> SimulatedMeter:
    return SimulatedMeter(MeterConfig("m", "e450", "35000009", seed=3, hdlc_address=300), NOW)


def bus_with(mt: SimulatedMeter) -> HdlcBus:
    return HdlcBus({300: mt}, lambda: NOW)


def aarq() -> bytes:
    return DlmsConnection(authentication=NoSecurityAuthentication(), client_system_title=None).get_aarq().to_bytes()


def snrm_with_parameters(tx: int, rx: int) -> bytes:
    params = bytes((0x05, 2)) + tx.to_bytes(2, "big") + bytes((0x06, 2)) + rx.to_bytes(2, "big") \
        + bytes((0x07, 4, 0, 0, 0, 1, 0x08, 4, 0, 0, 0, 1))
    info = b"\x81\x80" + bytes((len(params),)) + params
    addresses = SERVER.to_bytes() + CLIENT.to_bytes() + b"\x93"
    length = 2 + len(addresses) + 2 + len(info) + 2
    header = (0xA000 | length).to_bytes(2, "big") + addresses
    body = header + CRC.calculate_for(header) + info
    return b"\x7e" + body + CRC.calculate_for(body) + b"\x7e"


def information(payload: bytes, ssn: int, rsn: int, segmented: bool = False) -> bytes:
    return frames.InformationFrame(SERVER, CLIENT, payload, send_sequence_number=ssn,
                                   receive_sequence_number=rsn, segmented=segmented).to_bytes()


def test_snrm_parameters_are_negotiated_and_long_replies_use_the_agreed_size() -> None:
    bus = bus_with(meter())
    (out,) = bus.feed(snrm_with_parameters(tx=1024, rx=300))
    ua = frames.UnNumberedAcknowledgmentFrame.from_bytes(out.frames[0])
    # Meter transmits at most what the client can receive (300) and receives at most its own 512.
    assert ua.payload == b"\x81\x80\x14\x05\x02\x01\x2c\x06\x02\x02\x00\x07\x04\x00\x00\x00\x01\x08\x04\x00\x00\x00\x01"
    (out,) = bus.feed(information(b"\xe6\xe6\x00" + aarq(), 0, 0))
    reply = frames.InformationFrame.from_bytes(out.frames[0])
    assert reply.payload.startswith(b"\xe6\xe7\x00\x61")
    assert len(reply.payload) <= 300


def test_segmented_request_is_acknowledged_and_a_repeated_frame_gets_the_same_reply() -> None:
    bus = bus_with(meter())
    bus.feed(frames.SetNormalResponseModeFrame(SERVER, CLIENT).to_bytes())
    request = b"\xe6\xe6\x00" + aarq()
    (rr_out,) = bus.feed(information(request[:20], 0, 0, segmented=True))
    rr = frames.ReceiveReadyFrame.from_bytes(rr_out.frames[0])
    assert rr.receive_sequence_number == 1
    (out,) = bus.feed(information(request[20:], 1, 0))
    first = out.frames[0]
    assert frames.InformationFrame.from_bytes(first).payload[3] == 0x61  # AARE
    # The client did not get it and sends its frame again (same ssn): the meter repeats itself.
    (again,) = bus.feed(information(request[20:], 1, 0))
    assert again.frames[0] == first


def test_frames_for_another_address_and_corrupt_frames_get_silence() -> None:
    bus = bus_with(meter())
    other = HdlcAddress(1, 301, "server", extended_addressing=True)
    assert bus.feed(frames.SetNormalResponseModeFrame(other, CLIENT).to_bytes()) == []
    good = bytearray(frames.SetNormalResponseModeFrame(SERVER, CLIENT).to_bytes())
    good[-2] ^= 0xFF
    assert bus.feed(bytes(good)) == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=40), min_size=1, max_size=5), st.integers(1, 7))
def test_frames_split_correctly_whatever_their_content_and_chunking(payloads: list[bytes], chunk: int) -> None:
    encoded = [information(p, i % 8, 0) for i, p in enumerate(payloads)]
    stream = b"".join(encoded)
    buffer = bytearray()
    found: list[bytes] = []
    for i in range(0, len(stream), chunk):
        buffer += stream[i:i + chunk]
        found += split_frames(buffer)
    assert found == encoded


def associated() -> tuple[SimulatedMeter, CosemAssociation]:
    mt = meter()
    association = CosemAssociation(mt, lambda: NOW, 16)
    reply = association.handle(aarq())
    assert reply.apdu is not None and reply.apdu[0] == 0x61
    return mt, association


def test_entry_descriptor_with_selected_columns() -> None:
    mt, association = associated()
    # GET profile buffer, entry_descriptor: entries 2..3, columns 3..4 (the two energy registers)
    request = bytes.fromhex("c001c1" "0007" "0100630100ff" "02" "01" "02"
                            "0204" "0600000002" "0600000003" "120003" "120004")
    reply = association.handle(request)
    assert reply.apdu is not None and reply.apdu[:4] == b"\xc4\x01\xc1\x00"
    rows = DlmsDataParser().parse(reply.apdu[4:], limit=1)[0].to_python()
    held = expected_profile_rows(mt, NOW - timedelta(days=60), NOW + timedelta(days=1), now=NOW)
    assert rows == [[r.energy_import, r.energy_export] for r in held[1:3]]


def test_next_block_without_a_transfer_and_get_before_association() -> None:
    _, association = associated()
    reply = association.handle(bytes.fromhex("c002c100000001"))
    assert reply.apdu == bytes.fromhex("c402c101000000010110")  # no-long-get-in-progress
    fresh = CosemAssociation(meter(), lambda: NOW, 16)
    reply = fresh.handle(bytes.fromhex("c001c100030100010800ff0200"))
    assert reply.apdu is not None and reply.apdu[0] == 0xD8  # exception-response


def test_garbage_apdus_get_an_answer_and_never_crash_the_association() -> None:
    _, association = associated()
    for junk in (b"\xc0", b"\xc0\x01", b"\xc0\x01\xc1\x00", b"\x60\x05\x01", b"\xdb\x08", b"\xff\x00"):
        reply = association.handle(junk)
        assert reply.apdu is not None and not reply.disconnect


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80), st.sampled_from([b"", b"\xc0\x01\xc1", b"\xc0\x03\xc1", b"\x60", b"\x62", b"\xdb", b"\xc3\x01\xc1"]))
def test_random_apdus_never_raise_out_of_the_association(tail: bytes, head: bytes) -> None:
    _, association = associated()
    reply = association.handle(head + tail)
    assert reply.apdu is None or isinstance(reply.apdu, bytes)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes_never_raise_out_of_the_bus(data: bytes) -> None:
    bus = bus_with(meter())
    bus.feed(frames.SetNormalResponseModeFrame(SERVER, CLIENT).to_bytes())
    for out in bus.feed(b"\x7e\xa0" + data) + bus.feed(data):
        assert all(f.startswith(b"\x7e") and f.endswith(b"\x7e") for f in out.frames)
