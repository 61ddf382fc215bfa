"""Property tests: random bytes and mutated real frames into every decode entry point.

The only exceptions allowed out are our typed ``DecodeLayerError`` subclasses (FrameError, DecodeError,
...): never IndexError, KeyError, ValueError, struct.error, RecursionError or a library's own error.
Mutated frames get a fresh, valid FCS as well, so the mutations reach the APDU and A-XDR decoders
instead of all stopping at the checksum.
"""
from __future__ import annotations

from typing import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.decode import (CosemDateTime, DecodeError, DecodeLayerError, HdlcFrameReader, SecurityKeys, decode_apdus,
                            decode_data_exact, decode_message, encipher, encode_frame, parse_frame, parse_gbt,
                            split_frames)
from drivers.decode.cipher import parse_ciphered
from drivers.decode.hdlc import parse_parameters

from gateway.bench.dlms import profile_response, register_response

from tests.decode import TRACES, trace

FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
KEY = bytes(range(16))
TITLE = b"KAMfuzz1"
KEYS = SecurityKeys(encryption_key=KEY, authentication_key=KEY, dedicated_key=KEY, system_title=TITLE)


def _corpus() -> tuple[list[bytes], list[bytes]]:
    frames: list[bytes] = []
    apdus: list[bytes] = []
    for path in sorted(TRACES.glob("*.txt")):
        for frame in trace(path.name).frames:
            if frame.data[:1] == b"\x7e" and not frame.check_bad and "FCS ok" in frame.check:
                frames.append(frame.data)
                info = parse_frame(frame.data).info
                if info[:3] in (b"\xe6\xe7\x00", b"\xe6\xe6\x00"):
                    apdus.append(info[3:])
            elif frame.data[:1] in (b"\x0f", b"\xc0", b"\x61", b"\xdb"):
                apdus.append(frame.data)
    return frames, apdus


FRAMES, APDUS = _corpus()
# Poll-mode shapes that push traces lack: a register GET response, data blocks of a profile read.
APDUS += [register_response(), profile_response(3), bytes.fromhex("C402C10000000001000A") + profile_response(3)[4:14]]


@st.composite
def mutated(draw: st.DrawFn, corpus: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(corpus)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "set"]))
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 8))]
        else:
            data[pos] = draw(st.sampled_from([0x00, 0x7E, 0x80, 0x81, 0x82, 0xFF, 0x01, 0x02, 0x09, 0x0C]))
    return bytes(data)


@st.composite
def refcs(draw: st.DrawFn) -> bytes:
    """A mutated information field re-framed with a valid HCS/FCS."""
    info = draw(mutated(APDUS))
    segmented = draw(st.booleans())
    frame = encode_frame(b"\xCE\xFF", b"\x03", 0x13, b"\xE6\xE7\x00" + info, segmented=segmented)
    tail = encode_frame(b"\xCE\xFF", b"\x03", 0x13, draw(mutated(APDUS))) if segmented else b""
    return frame + tail


@st.composite
def ciphered(draw: st.DrawFn) -> bytes:
    """A mutated plaintext correctly enciphered: decryption succeeds, the inner decoder gets garbage."""
    plain = draw(mutated(APDUS))
    sc = draw(st.sampled_from([0x10, 0x20, 0x30]))
    wire = encipher(plain, key=KEY, authentication_key=KEY, system_title=TITLE, invocation_counter=1,
                    security_control=sc)
    tag = draw(st.sampled_from([0xDB, 0xCC, 0xDC, 0xD4]))
    length = len(wire).to_bytes(2, "big")
    if tag in (0xDB, 0xDC):
        return bytes([tag, 8]) + TITLE + b"\x82" + length + wire
    return bytes([tag, 0x82]) + length + wire


def only_typed_errors(call: Callable[[bytes], object], data: bytes) -> None:
    try:
        call(data)
    except DecodeLayerError:
        pass


def _stream(data: bytes) -> None:
    reader = HdlcFrameReader()
    for i in range(0, len(data), 7):
        reader.feed(data[i:i + 7])
        while True:
            try:
                if reader.next_frame() is None:
                    break
            except DecodeLayerError:
                continue


ANY_BYTES = st.binary(max_size=300)


@FUZZ
@given(st.one_of(ANY_BYTES, mutated(FRAMES), refcs(), mutated(APDUS), ciphered()))
def test_decode_message(data: bytes) -> None:
    only_typed_errors(decode_message, data)
    only_typed_errors(lambda d: decode_message(d, KEYS), data)


@FUZZ
@given(st.one_of(ANY_BYTES, mutated(FRAMES), refcs()))
def test_hdlc_entry_points(data: bytes) -> None:
    only_typed_errors(parse_frame, data)
    only_typed_errors(split_frames, data)
    _stream(data)  # the stream reader may only raise typed errors, which _stream swallows
    only_typed_errors(parse_parameters, data)


@FUZZ
@given(st.one_of(ANY_BYTES, mutated(APDUS), ciphered()))
def test_apdu_entry_points(data: bytes) -> None:
    only_typed_errors(decode_apdus, data)
    only_typed_errors(lambda d: decode_apdus(d, KEYS), data)
    only_typed_errors(parse_gbt, data)
    only_typed_errors(parse_ciphered, data)


@FUZZ
@given(st.one_of(ANY_BYTES, mutated(APDUS), st.binary(min_size=12, max_size=12)))
def test_data_and_date_time(data: bytes) -> None:
    only_typed_errors(decode_data_exact, data)
    only_typed_errors(decode_data_exact, data[5:])

    def date_time(d: bytes) -> None:
        value = CosemDateTime.from_bytes(d[:12])
        str(value)
        value.to_utc(None)

    only_typed_errors(date_time, data)


def test_deep_nesting_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="nested"):
        decode_data_exact(b"\x01\x01" * 5000 + b"\x00")
    with pytest.raises(DecodeError, match="nested"):
        decode_message(b"\x0f\x00\x00\x00\x01\x00" + b"\x02\x01" * 5000 + b"\x00")
