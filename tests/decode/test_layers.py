"""Layer behaviour not covered by a single trace: published GCM vectors, HDLC segmentation, several APDUs
per frame, stream framing, date-time quirks, error typing."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from drivers.decode import (ChecksumError, CosemDateTime, DateTimeError, DecodeError, DecryptionError, FrameError,
                            HdlcFrameReader, SecurityKeys, decode_message, encipher, encode_frame, gmac, parse_ciphered,
                            parse_frame, split_frames)
from drivers.decode.apdu import AcseApdu, Ciphered, DataNotification, GetRequest, decode_apdu_exact
from drivers.decode.cipher import decipher
from drivers.decode.hdlc import encode_address
from drivers.decode.axdr import encode_length
from drivers.decode.errors import BlockTransferError
from drivers.decode.message import Reassembled, ReassembledData
from drivers.decode.text import render_text
from drivers.decode.tracefile import parse_trace
from gateway.bench.dlms import profile_response

from tests.decode import trace

GREEN_BOOK = trace("gcm_hls_test_vectors_published_keys_NOT_PHYSICAL.txt")
EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
KAMSTRUP = trace("kamstrup_han_2017_old_firmware_amstomqttbridge.txt")


def test_green_book_gcm_vector_both_ways() -> None:
    plain, ciphered = GREEN_BOOK.frame(1).data, GREEN_BOOK.frame(2).data
    title = bytes.fromhex("4D4D4D0000BC614E")
    wire = encipher(plain, key=EK, authentication_key=AK, system_title=title, invocation_counter=0x01234567)
    assert wire[5:] == ciphered
    # As a service-specific glo-get-request (0xC8) the system title comes from the association.
    apdu = bytes([0xC8, len(wire)]) + wire
    keys = SecurityKeys(encryption_key=EK, authentication_key=AK, system_title=title)
    decoded = decode_apdu_exact(apdu, keys)
    assert isinstance(decoded, Ciphered) and decoded.tag_verified and decoded.plaintext == plain
    assert isinstance(decoded.inner, GetRequest) and str(decoded.inner.attributes[0].obis) == "0-0:1.0.0.255"
    with pytest.raises(DecryptionError, match="system title"):
        decode_apdu_exact(apdu, SecurityKeys(encryption_key=EK, authentication_key=AK))
    wrong = SecurityKeys(encryption_key=EK, authentication_key=bytes(16), system_title=title)
    with pytest.raises(DecryptionError, match="tag mismatch"):
        decode_apdu_exact(apdu, wrong)


def test_green_book_hls_gmac_tag() -> None:
    tag = gmac(bytes.fromhex("503677524A323146"), key=EK, authentication_key=AK,
               system_title=bytes.fromhex("4D4D4D0000000001"), invocation_counter=1)
    assert tag == GREEN_BOOK.frame(3).data


def test_library_general_glo_ciphering_vector() -> None:
    key = b"MYDUMMYGLOBALKEY"
    decoded = decode_apdu_exact(GREEN_BOOK.frame(4).data, SecurityKeys(encryption_key=key, authentication_key=key))
    assert isinstance(decoded, Ciphered) and decoded.tag_verified
    expected = next(x for x in GREEN_BOOK.frame(4).transcriber_expected if x.startswith("plaintext"))
    assert decoded.plaintext == bytes.fromhex(expected.split()[1])
    assert isinstance(decoded.inner, DataNotification) and decoded.inner.invoke_id == 0x1DB
    assert decoded.inner.date_time is None


def test_service_specific_glo_get_response_0xcc_deciphers() -> None:
    # dlms-cosem fails on these (KeyError: Tag 207); here the header is parsed and AESGCM does the rest.
    title = bytes.fromhex("4D4D4D0000BC614E")
    plain = bytes.fromhex("C40181000600001234")
    for tag in (0xCC, 0xCF, 0xD4):
        wire = encipher(plain if tag != 0xCF else bytes.fromhex("C701810000"), key=EK, authentication_key=AK,
                        system_title=title, invocation_counter=7)
        keys = SecurityKeys(encryption_key=EK, authentication_key=AK, dedicated_key=EK, system_title=title)
        decoded = decode_apdu_exact(bytes([tag, len(wire)]) + wire, keys)
        assert isinstance(decoded, Ciphered) and decoded.tag_verified


def test_green_book_aare_examples() -> None:
    hls = decode_apdu_exact(GREEN_BOOK.frame(5).data)
    assert isinstance(hls, AcseApdu) and hls.name == "aare"
    assert hls.fields["result"] == "accepted" and hls.fields["authentication"] == "hls_gmac"
    assert hls.fields["authentication_value"] == "503677524A323146"
    plain = decode_apdu_exact(GREEN_BOOK.frame(6).data)
    assert plain.fields["user_information"]["content"]["server_max_receive_pdu_size"] == 0x1F4  # type: ignore


def test_secret_never_in_repr_or_errors() -> None:
    keys = SecurityKeys(encryption_key=EK, authentication_key=AK)
    assert EK.hex() not in repr(keys).lower() and AK.hex() not in repr(keys).lower()
    with pytest.raises(DecryptionError) as info:
        decode_apdu_exact(GREEN_BOOK.frame(4).data, keys)
    assert EK.hex() not in str(info.value).lower()


def test_hdlc_segmentation_reassembles_information_field() -> None:
    original = parse_frame(KAMSTRUP.frame(39).data)
    info = original.info
    parts = [info[:70], info[70:150], info[150:]]
    raw = b"".join(encode_frame(original.dst.raw, original.src.raw, 0x13, part, segmented=i < 2)
                   for i, part in enumerate(parts))
    message = decode_message(raw)
    assert [f.frame.segmented for f in message.frames] == [True, True, False]
    assert message.final_apdus() == decode_message(KAMSTRUP.frame(39).data).final_apdus()
    with pytest.raises(FrameError):
        parse_frame(raw[:-1])
    incomplete = decode_message(raw[:len(raw) - len(encode_frame(original.dst.raw, original.src.raw, 0x13, parts[2]))])
    assert incomplete.apdus == () and incomplete.incomplete


def test_several_apdus_in_one_frame() -> None:
    lg = trace("lg_gbt_push_annotated_amsreader.txt")
    gbt1, gbt2 = parse_frame(lg.frame(1).data).info[3:], parse_frame(lg.frame(2).data).info
    single = parse_frame(lg.frame(3).data).info[3:]
    frame = encode_frame(b"\xCE\xFF", b"\x03", 0x13, b"\xE6\xE7\x00" + single + gbt1 + gbt2)
    message = decode_message(frame)
    assert [type(a).__name__ for a in message.apdus] == [
        "DataNotification", "GeneralBlockTransfer", "GeneralBlockTransfer", "Reassembled"]
    assert isinstance(message.apdus[3], Reassembled)


def test_stream_reader_with_noise_shared_flags_and_bad_frame() -> None:
    a, b = KAMSTRUP.frame(1).data, KAMSTRUP.frame(39).data
    corrupt = bytearray(a)
    corrupt[100] ^= 0x01
    reader = HdlcFrameReader()
    reader.feed(b"\x00\x13noise" + a + b[1:] + bytes(corrupt) + b)  # b shares a's closing flag
    assert reader.next_frame().raw == a  # type: ignore[union-attr]
    assert reader.next_frame().raw == b  # type: ignore[union-attr]
    with pytest.raises(ChecksumError):
        reader.next_frame()
    frames = []
    while True:
        try:
            frame = reader.next_frame()
        except FrameError:
            continue
        if frame is None:
            break
        frames.append(frame)
    assert [f.raw for f in frames] == [b]
    assert reader.discarded >= 7


def test_split_frames_rejects_trailing_garbage() -> None:
    with pytest.raises(FrameError):
        split_frames(KAMSTRUP.frame(39).data + b"\x01\x02")
    assert len(split_frames(KAMSTRUP.frame(1).data + KAMSTRUP.frame(39).data)) == 2


def test_four_byte_address_round_trip() -> None:
    raw = encode_frame(encode_address(1, 2836), encode_address(0x10), 0x93)
    frame = parse_frame(raw)
    assert (frame.dst.upper, frame.dst.lower, frame.src.upper, frame.kind.value) == (1, 2836, 0x10, "SNRM")


def test_wrapper_pdu() -> None:
    apdu = GREEN_BOOK.frame(1).data
    wrapped = bytes.fromhex("0001 0010 0001") + len(apdu).to_bytes(2, "big") + apdu
    message = decode_message(wrapped)
    assert message.transport == "wrapper" and message.wrappers[0].source_wport == 0x10
    with pytest.raises(FrameError):
        decode_message(wrapped[:-1])


def _dt(hexstr: str) -> CosemDateTime:
    return CosemDateTime.from_bytes(bytes.fromhex(hexstr))


def test_date_time_unspecified_deviation_needs_meter_timezone() -> None:
    value = _dt("07E1 0A 14 05 03 2B 1E FF 8000 00")  # Kamstrup NO push, 2017-10-20 03:43:30 local
    with pytest.raises(DateTimeError):
        value.to_utc()
    assert value.to_utc(ZoneInfo("Europe/Oslo")) == dt.datetime(2017, 10, 20, 1, 43, 30, tzinfo=dt.timezone.utc)


def test_date_time_deviation_sign_and_status() -> None:
    # COSEM deviation: minutes from local time to UTC, so CET (UTC+1) is -60.
    value = _dt("07E8 09 15 06 13 00 00 00 FFC4 80")
    assert value.deviation == -60 and value.status is not None and value.status.daylight_saving_active
    assert value.to_utc() == dt.datetime(2024, 9, 21, 18, 0, tzinfo=dt.timezone.utc)  # 19:00 local - 1 h
    assert _dt("07E8 09 15 06 13 00 00 FF 0000 00").to_utc() == dt.datetime(2024, 9, 21, 19, 0, tzinfo=dt.timezone.utc)


def test_date_time_dst_status_bit_picks_the_repeated_hour() -> None:
    oslo = ZoneInfo("Europe/Oslo")
    summer = _dt("07E8 0A 1B 00 02 1E 00 00 8000 80")  # 2024-10-27 02:30, DST still active
    winter = _dt("07E8 0A 1B 00 02 1E 00 00 8000 00")  # same wall time, an hour later
    assert summer.to_utc(oslo) == dt.datetime(2024, 10, 27, 0, 30, tzinfo=dt.timezone.utc)
    assert winter.to_utc(oslo) == dt.datetime(2024, 10, 27, 1, 30, tzinfo=dt.timezone.utc)


def test_date_time_not_specified_fields() -> None:
    value = _dt("FFFF FF FF FF FF FF FF FF 8000 FF")
    assert (value.year, value.month, value.hour, value.deviation, value.status) == (None, None, None, None, None)
    assert str(value) == "????-??-?? ??:??:?? dev=unspec st=FF"
    with pytest.raises(DateTimeError):
        value.local()
    with pytest.raises(DateTimeError):
        _dt("07E8 02 1E FF 00 00 00 00 0000 00").local()  # 30 February
    with pytest.raises(DateTimeError):
        CosemDateTime.from_bytes(b"\x07\xe8")


def test_ciphered_without_key_reports_header_only() -> None:
    e450 = trace("lg_e450_encrypted_with_keys_unidentified_repo.txt").frame(1).data
    apdu = decode_message(e450).apdus[0]
    assert isinstance(apdu, Ciphered) and apdu.inner is None and apdu.header.system_title == b"LGZgst]\xdd"
    header, _ = parse_ciphered(parse_frame(e450).info[3:])
    with pytest.raises(DecryptionError, match="no keys"):
        decipher(header, None)


def test_unknown_apdu_and_empty_input_are_decode_errors() -> None:
    with pytest.raises(DecodeError):
        decode_message(b"")
    with pytest.raises(DecodeError, match="0x42") as info:
        decode_message(b"\x42\x00", meter="KAM-0042")
    assert info.value.meter_id == "KAM-0042" and str(info.value).startswith("meter KAM-0042: ")


def test_errors_are_driver_errors() -> None:
    from drivers import errors

    with pytest.raises(errors.FrameError):
        decode_message(KAMSTRUP.frame(8).data)
    with pytest.raises(errors.AuthenticationFailed):
        decode_apdu_exact(GREEN_BOOK.frame(4).data, SecurityKeys(encryption_key=EK, authentication_key=AK))
    with pytest.raises(errors.ConfigError):
        SecurityKeys(encryption_key=b"short")


def _get_blocks(data: bytes, sizes: list[int], order: list[int] | None = None) -> bytes:
    chunks, pos = [], 0
    for size in sizes:
        chunks.append(data[pos:pos + size])
        pos += size
    chunks.append(data[pos:])
    frames = []
    for number in order or range(1, len(chunks) + 1):
        chunk = chunks[number - 1]
        apdu = (bytes([0xC4, 0x02, 0xC1, 1 if number == len(chunks) else 0]) + number.to_bytes(4, "big") + b"\x00"
                + encode_length(len(chunk)) + chunk)
        frames.append(encode_frame(b"\x03", encode_address(1, 17), 0x30 | (number % 8) << 1, b"\xE6\xE7\x00" + apdu))
    return b"".join(frames)


def test_get_response_data_blocks_are_joined_into_the_profile_buffer() -> None:
    buffer = profile_response()[4:]  # the A-XDR array of 96 rows
    message = decode_message(_get_blocks(buffer, [200, 1000]))
    joined = [item for item in message.apdus if isinstance(item, ReassembledData)]
    assert len(joined) == 1 and joined[0].blocks == 3 and joined[0].raw == buffer
    rows = joined[0].data.items
    assert len(rows) == 96 and rows[95].items[2].value > rows[0].items[2].value
    assert "data joined from 3 get-response data block(s)" in render_text(message)
    with pytest.raises(BlockTransferError):
        decode_message(_get_blocks(buffer, [200, 1000], order=[1, 3, 2]))
    frames = split_frames(_get_blocks(buffer, [200, 1000]))
    partial = decode_message(b"".join(frame.raw for frame in frames[:2]))
    assert partial.incomplete == ("get-response data blocks incomplete: 2 block(s) without the last",)


def test_trace_file_parser_checks_lengths() -> None:
    good = "# meter_make:  Test\n#   continued\n\n[frame 1]\ndir = meter->host\nlen = 2\nhex =\n  0F 00\n"
    parsed = parse_trace(good)
    assert parsed.header["meter_make"] == "Test continued" and parsed.frame(1).data == b"\x0f\x00"
    with pytest.raises(DecodeError, match="len = 3"):
        parse_trace(good.replace("len = 2", "len = 3"))
    with pytest.raises(DecodeError, match="not hexadecimal"):
        parse_trace(good.replace("0F 00", "0G 00"))
