"""The decoding layer against real Kamstrup / Landis+Gyr (and Aidon, Kaifa) meter bytes.

Every frame of every adopted trace is checked: HDLC header fields against the transcriber's ``check``,
BAD frames end in FrameError and verify once re-joined with their continuation, and every decoded
DataNotification must reproduce the trace's date-time, invoke-id and full A-XDR dump. Source-stated
values (OBIS -> value tables, plaintexts, rejections) get their own explicit tests below.
"""
from __future__ import annotations

import re

import pytest

from drivers.decode import (BlockTransferError, DataType, DecodeError, DecryptionError, FrameError, HdlcFrameReader,
                            SecurityKeys, decode_data, decode_data_exact, decode_message, encode_data, parse_frame)
from drivers.decode.apdu import Ciphered, DataNotification, decode_apdu_exact
from drivers.decode.axdr import Data
from drivers.decode.message import Reassembled
from drivers.decode.text import data_lines
from drivers.decode.tracefile import TraceFile, TraceFrame

from tests.decode import TRACES, trace

HDLC_FILES = sorted(p.name for p in TRACES.glob("*.txt") if not p.name.startswith("gcm_"))

E450 = "lg_e450_encrypted_with_keys_unidentified_repo.txt"
# Keys exactly as stated in the E450 file's header (see its 'encryption' line).
E450_KEYS = {
    "a": SecurityKeys(encryption_key=bytes.fromhex("4475D2230289243A4AE7732E2396C572")),
    "b": SecurityKeys(encryption_key=bytes(16)),
    "c": SecurityKeys(encryption_key=bytes.fromhex("7340BC1501143C498CD677811D771921")),
}
E450_FRAME_KEYS = {1: "a", 2: "a", 3: "a", 4: "a", 5: "a", 6: "b", 7: "b", 8: "b", 9: "b", 10: "c"}

_CHECK = re.compile(r"len_field=(\d+), dst=(\w+) src=(\w+) ctrl=(\w+), HCS ok, info_len=(\d+), FCS ok")
_DUMP_LINE = re.compile(r"^\s*(struct|array|u8|u16|u32|u64|i8|i16|i32|i64|oct|vis|utf8|enum|null|bool|bits|bcd|f32|"
                        r"f64|date|time|dont)")


def _frames(kind: str) -> list[tuple[str, int]]:
    out = []
    for name in HDLC_FILES:
        for frame in trace(name).frames:
            good = _CHECK.search(frame.check) and not frame.check_bad
            if (kind == "good" and good) or (kind == "bad" and frame.check_bad):
                out.append((name, frame.number))
    return out


def _assert_header(frame_bytes: bytes, check: str) -> None:
    match = _CHECK.search(check)
    assert match, check
    length, dst, src, ctrl, info_len = match.groups()
    frame = parse_frame(frame_bytes)
    assert frame.length == int(length)
    assert str(frame.dst) == dst and str(frame.src) == src
    assert frame.control == int(ctrl, 16)
    assert len(frame.info) == int(info_len)


@pytest.mark.parametrize(("name", "number"), _frames("good"))
def test_good_frame_header_matches_transcriber_check(name: str, number: int) -> None:
    frame = trace(name).frame(number)
    _assert_header(frame.data, frame.check)


@pytest.mark.parametrize(("name", "number"), _frames("bad"))
def test_bad_frame_is_a_frame_error_and_rejoins_with_its_continuation(name: str, number: int) -> None:
    t = trace(name)
    frame = t.frame(number)
    with pytest.raises(FrameError):
        parse_frame(frame.data)
    # The capture tool cut the frame at an unescaped 0x7E; fed as a stream with the next chunk, the
    # length field (not the flag) delimits it and it verifies.
    reader = HdlcFrameReader()
    reader.feed(frame.data)
    assert reader.next_frame() is None  # still waiting for the rest
    reader.feed(t.frame(number + 1).data)
    joined = reader.next_frame()
    assert joined is not None
    joined_line = next(line for line in frame.transcriber_expected if line.startswith("joined frame"))
    assert f"({len(joined.raw)} bytes)" in joined_line
    _assert_header(joined.raw, joined_line)


def _dump(lines: tuple[str, ...]) -> list[str]:
    """The A-XDR dump that follows a 'body parses' line, annotations after the value removed."""
    start = next(i for i, line in enumerate(lines) if "body parses" in line) + 1
    out = []
    for line in lines[start:]:
        if not _DUMP_LINE.match(line):
            break
        out.append(_normalise(line))
    return out


def _normalise(line: str) -> str:
    indent = line[:len(line) - len(line.lstrip())]
    tokens = line.split()
    if tokens[0].startswith("oct["):
        return indent + " ".join(tokens[:2])
    return line.rstrip()


def _message_bytes(t: TraceFile, frame: TraceFrame) -> bytes:
    """The bytes that make up the message the frame's expectations describe."""
    if frame.check_bad:
        return frame.data + t.frame(frame.number + 1).data
    blocks = sum(1 for line in frame.transcriber_expected if line.startswith("GBT block"))
    if blocks > 1:
        return b"".join(t.frame(n).data for n in range(frame.number - blocks + 1, frame.number + 1))
    return frame.data


def _notification_cases() -> list[tuple[str, int]]:
    return [(name, f.number) for name in HDLC_FILES for f in trace(name).frames
            if any(line.startswith(("data-notification", "A-XDR body parses")) for line in f.transcriber_expected)
            and not any("CTR-decrypted" in line for line in f.transcriber_expected)]


def _decoded_body(name: str, t: TraceFile, frame: TraceFrame) -> tuple[DataNotification | None, Data]:
    if any(line.startswith("A-XDR body parses") for line in frame.transcriber_expected):
        return None, decode_data_exact(frame.data)  # a notification body on its own (Tasmota dumps)
    stated = [line for line in frame.source_expected if line.startswith("source-stated decrypted APDU:")]
    if stated:  # key not published: the source's plaintext is what we can decode
        apdu = decode_apdu_exact(bytes.fromhex(stated[0].split(":", 1)[1].strip()))
    elif frame.data[:1] != b"\x7e":
        apdu = decode_apdu_exact(frame.data)
    else:
        keys = E450_KEYS[E450_FRAME_KEYS[frame.number]] if name == E450 else None
        apdu = decode_message(_message_bytes(t, frame), keys).final_apdus()[-1]
    assert isinstance(apdu, DataNotification)
    return apdu, apdu.body


@pytest.mark.parametrize(("name", "number"), _notification_cases())
def test_data_notification_matches_trace(name: str, number: int) -> None:
    t = trace(name)
    frame = t.frame(number)
    apdu, body = _decoded_body(name, t, frame)
    if apdu is not None:
        line = next(line for line in frame.transcriber_expected if line.startswith("data-notification"))
        match = re.match(r"data-notification invoke-id=([0-9A-F]{8}) datetime=(absent|\S+ \S+ dev=\S+ st=\S+)", line)
        assert match, line
        assert apdu.long_invoke_id_and_priority == int(match.group(1), 16)
        assert (str(apdu.date_time) if apdu.date_time else "absent") == match.group(2)
        assert apdu.date_time_tagged == ("QUIRK: date-time carried as A-XDR tagged" in line)
    expected = _dump(frame.transcriber_expected)
    assert expected, "trace frame has no dump to compare"
    assert [_normalise(line) for line in data_lines(body)] == expected


def _flat_obis_values(body: Data) -> dict[str, Data]:
    """Kamstrup lists are a flat structure: OBIS octet-string followed by its value."""
    items = body.items
    out = {}
    for key, value in zip(items, items[1:]):
        if key.type is DataType.OCTET_STRING and len(key.value) == 6:  # type: ignore[arg-type]
            out[".".join(str(b) for b in key.value)] = value  # type: ignore[union-attr]
    return out


def test_kamstrup_2017_frame_1_source_values() -> None:
    frame = trace("kamstrup_han_2017_old_firmware_amstomqttbridge.txt").frame(1)
    apdu = decode_message(frame.data).final_apdus()[0]
    assert isinstance(apdu, DataNotification) and apdu.date_time is not None
    # source: date-time 2017-10-20 (Fri) 03:43:30
    assert apdu.date_time.local().isoformat() == "2017-10-20T03:43:30"
    assert apdu.date_time.weekday == 5 and apdu.date_time_tagged
    values = _flat_obis_values(apdu.body)
    assert apdu.body.items[0].value == "Kamstrup_V0001"
    assert values["1.1.0.0.5.255"].value == "5706567274389702"
    assert values["1.1.96.1.1.255"].value == "6841121BN243101040"
    stated = {"1.1.1.7.0.255": 1468, "1.1.2.7.0.255": 0, "1.1.3.7.0.255": 0, "1.1.4.7.0.255": 462,
              "1.1.31.7.0.255": 564, "1.1.51.7.0.255": 202, "1.1.71.7.0.255": 511,  # 5.64 / 2.02 / 5.11 A
              "1.1.32.7.0.255": 232, "1.1.52.7.0.255": 228, "1.1.72.7.0.255": 233}
    assert {k: values[k].value for k in stated} == stated


def test_kamstrup_2018_firmware_has_untagged_date_time() -> None:
    frame = trace("kamstrup_han_2017_old_firmware_amstomqttbridge.txt").frame(39)
    apdu = decode_message(frame.data).final_apdus()[0]
    assert isinstance(apdu, DataNotification)
    assert not apdu.date_time_tagged and str(apdu.date_time) == "2018-03-04 20:52:00 dev=unspec st=00"


def test_kamstrup_voltage_x100_source_values() -> None:
    frame = trace("kamstrup_voltage_x100_amsreader_issue814.txt").frame(1)
    apdu = decode_message(frame.data).final_apdus()[0]
    values = _flat_obis_values(apdu.body)  # type: ignore[union-attr]
    assert [values[f"1.1.{c}.7.0.255"].value for c in (32, 52, 72)] == [23593, 23343, 23507]


def test_kamstrup_dk_annotated_plaintext_source_table() -> None:
    t = trace("kamstrup_omnipower_dk_encrypted_annotated_amsreader.txt")
    apdu = decode_apdu_exact(t.frame(2).data)
    assert isinstance(apdu, DataNotification)
    values = _flat_obis_values(apdu.body)
    rows = [line for line in t.frame(2).source_expected if line.startswith("09 06")]
    assert len(rows) == 32
    for row in rows:
        left, _ = row.split(" - ", 1)
        raw = bytes.fromhex(left)
        obis, value = raw[2:8], raw[8:]
        assert encode_data(values[".".join(str(b) for b in obis)]) == value, row


def test_kamstrup_dk_ciphered_headers_match() -> None:
    t = trace("kamstrup_omnipower_dk_encrypted_amsreader.txt")
    for frame in t.frames:
        line = next(x for x in frame.transcriber_expected if x.startswith("general-glo-ciphering"))
        apdu = decode_message(frame.data).apdus[0]
        assert isinstance(apdu, Ciphered) and apdu.inner is None  # no key published: header only
        h = apdu.header
        assert f"system-title={h.system_title.hex().upper()}" in line  # type: ignore[union-attr]
        assert f"SC={h.security_control:02X} IC={h.invocation_counter:08X}" in line
        assert f"len-declared={len(h.payload) + 5}" in line


def test_lg_plaintext_push_source_values() -> None:
    t = trace("lg_encrypted_push_with_plaintext_amsreader.txt")
    apdu = decode_apdu_exact(t.frame(2).data)
    assert isinstance(apdu, DataNotification)
    v = [item.value for item in apdu.body.items]
    assert v[0:3] == [236, 236, 236]  # U1..U3 = 236 V
    assert v[3:6] == [0, 46, 26]  # I1..I3 = 0.00, 0.46, 0.26 A
    assert v[6:10] == [125, 0, 27881149, 7619]  # W, W, Wh (27881.149 kWh), Wh (7.619 kWh)
    assert v[10:13] == [400, 3, 288]
    assert apdu.body.items[13].value == b"30137181"
    wire = decode_message(t.frame(1).data).apdus[0]
    assert isinstance(wire, Ciphered) and wire.header.invocation_counter == 0x002180F7


def test_lg_gbt_push_source_values() -> None:
    t = trace("lg_gbt_push_annotated_amsreader.txt")
    message = decode_message(t.frame(1).data + t.frame(2).data)
    reassembled = [item for item in message.apdus if isinstance(item, Reassembled)]
    assert len(reassembled) == 1 and reassembled[0].blocks == 2
    apdu = reassembled[0].apdu
    assert isinstance(apdu, DataNotification)
    items = apdu.body.items
    # source: last block: OBIS 0-8:25.9.0 / Device ID '601109' / import 0x28 (40) / export 0
    assert items[1].value == bytes([0, 8, 25, 9, 0, 255])
    assert items[2].value == b"601109"
    assert (items[3].value, items[4].value) == (40, 0)
    # source: date and time 0C07E604020607220FFF800000
    assert apdu.date_time is not None and apdu.date_time.raw.hex().upper() == "07E604020607220FFF800000"


def test_lg_single_frame_push_source_values() -> None:
    frame = trace("lg_gbt_push_annotated_amsreader.txt").frame(3)
    apdu = decode_message(frame.data).final_apdus()[0]
    items = apdu.body.items  # type: ignore[union-attr]
    assert items[2].value == b"43094351"
    assert [i.value for i in items[3:]] == [11, 0, 16, 4, 0, 8, 0, 1]


def test_e450_gbt_ciphered_push_gives_source_stated_plaintext() -> None:
    t = trace(E450)
    message = decode_message(b"".join(t.frame(n).data for n in (6, 7, 8, 9)), E450_KEYS["b"])
    (reassembled,) = [item for item in message.apdus if isinstance(item, Reassembled)]
    assert reassembled.blocks == 4
    ciphered = reassembled.apdu
    assert isinstance(ciphered, Ciphered) and not ciphered.tag_verified
    stated = next(x for x in t.frame(9).source_expected if x.startswith("source-stated decrypted APDU"))
    assert ciphered.plaintext == bytes.fromhex(stated.split(":", 1)[1].strip())
    inner = ciphered.inner
    assert isinstance(inner, DataNotification) and inner.invoke_id == 0xB1CE27
    assert inner.body.items[2].value == b"56815930"


@pytest.mark.parametrize("number", [1, 2, 3, 4, 5])
def test_e450_single_frame_pushes_decipher_to_transcriber_plaintext(number: int) -> None:
    frame = trace(E450).frame(number)
    (apdu,) = decode_message(frame.data, E450_KEYS["a"]).apdus
    assert isinstance(apdu, Ciphered) and apdu.header.security_control == 0x20 and not apdu.tag_verified
    stated = next(x for x in frame.transcriber_expected if x.startswith("plaintext APDU hex:"))
    assert apdu.plaintext == bytes.fromhex(stated.split(":", 1)[1].strip())


def test_e450_placeholder_authentication_key_fails_tag_check() -> None:
    t = trace(E450)
    keys = SecurityKeys(encryption_key=bytes(16), authentication_key=bytes(16))
    with pytest.raises(DecryptionError) as info:
        decode_message(b"".join(t.frame(n).data for n in (6, 7, 8, 9)), keys)
    assert "00000000" not in str(info.value)


def test_e450_orphan_block_is_rejected() -> None:
    # source asserts the decoder rejects an isolated continuation block
    with pytest.raises(BlockTransferError):
        decode_message(trace(E450).frame(11).data)


def test_e450_truncated_apdu_prefix_gives_source_values() -> None:
    frame = trace(E450).frame(10)
    with pytest.raises(DecodeError):
        decode_message(frame.data)
    from drivers.decode.cipher import keystream_decipher

    ciphertext = frame.data[18:18 + 101]
    plain = keystream_decipher(ciphertext, key=bytes.fromhex("7340BC1501143C498CD677811D771921"),
                               system_title=frame.data[2:10], invocation_counter=0x0038DB9C)
    stated = next(x for x in frame.transcriber_expected if x.startswith("CTR-decrypted"))
    assert plain.hex().upper() == stated.split(":", 1)[1].strip()
    # source asserts WirkenergieP=15685460 (1-0:1.8.0) and MomentanleistungP=0 (1-0:1.7.0)
    values = {}
    pos = plain.index(bytes.fromhex("0906010001"))
    while pos + 8 < len(plain) and plain[pos] == 0x09:
        obis, pos = decode_data(plain, pos)
        value, pos = decode_data(plain, pos)
        values[bytes(obis.value)] = value.value  # type: ignore[arg-type]
    assert values[bytes.fromhex("0100010800FF")] == 15685460
    assert values[bytes.fromhex("0100010700FF")] == 0


def test_poll_edge_cases() -> None:
    t = trace("hdlc_poll_edge_cases_dlms_cosem_issues.txt")
    request = decode_message(t.frame(1).data).final_apdus()[0]
    assert request.attributes[0].class_id == 1 and str(request.attributes[0].obis) == "1-0:32.32.0.255"  # type: ignore
    # #97: the FCS is 7E 8C; a flag search would cut the frame there, the length field does not.
    reader = HdlcFrameReader()
    frames = []
    for byte in t.frame(2).data:
        reader.feed(bytes([byte]))
        while (frame := reader.next_frame()) is not None:
            frames.append(frame)
    assert len(frames) == 1 and frames[0].raw == t.frame(2).data
    response = decode_message(t.frame(2).data).final_apdus()[0]
    assert response.results[0].value == bytes.fromhex("0100202000FF")  # type: ignore[union-attr]
    ua = decode_message(t.frame(3).data).frames[0]
    assert ua.parameters == {"max_info_tx": 242, "max_info_rx": 242, "window_tx": 1, "window_rx": 1}
    assert (ua.frame.src.upper, ua.frame.src.lower) == (1, 2836)  # 4-byte address: physical 2836
    rlre = decode_message(t.frame(4).data).final_apdus()[0]
    assert rlre.name == "rlre" and rlre.fields["user_information"]["content"]["server_max_receive_pdu_size"] == 239  # type: ignore
    # #62: what came back is the SNRM itself (optical echo), byte for byte
    assert parse_frame(t.frame(6).data) == parse_frame(t.frame(5).data)
