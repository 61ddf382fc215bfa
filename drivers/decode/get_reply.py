"""A plaintext GET response split into what a client needs, with the bounds of this layer.

The session reads every GET answer through here instead of through dlms-cosem's parser, which loops
forever on an array count larger than the bytes present (``C4 03 C1 01 00 01 84 FF FF FF FF``) and
raises ``NotImplementedError`` on a null-data result. Every count is checked against the bytes left and
every value is walked by ``decode_data`` (each step consumes input, nesting is bounded), so a malformed
answer ends in ``DecodeError`` in time proportional to its length. Values are handed on as the exact
A-XDR bytes the meter sent; the readers decode them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from drivers.decode.axdr import decode_data, decode_length
from drivers.decode.errors import DecodeError

GET_RESPONSE_TAG = 0xC4


@dataclass(frozen=True, slots=True)
class GetReply:
    """One GET response. ``results``: per attribute the A-XDR bytes of its value (``bytes``) or its
    data-access-result code (``int``); a block carries its raw ``block_data`` or, aborted, one code."""

    invoke_id: int  # the whole invoke-id-and-priority byte
    kind: Literal["normal", "block", "list"]
    results: tuple[bytes | int, ...] = ()
    block_number: int = 0
    last_block: bool = False
    block_data: bytes = b""


def parse_get_reply(apdu: bytes) -> GetReply:
    """Parse a plaintext GET response that fills ``apdu`` exactly (trailing bytes are an error)."""
    if len(apdu) < 3 or apdu[0] != GET_RESPONSE_TAG:
        raise DecodeError("not a GET response")
    choice, invoke_id, pos = apdu[1], apdu[2], 3
    if choice == 1:
        result, pos = _result(apdu, pos)
        reply = GetReply(invoke_id, "normal", (result,))
    elif choice == 2:
        if pos + 6 > len(apdu):
            raise DecodeError("truncated data block")
        last = apdu[pos] != 0
        number = int.from_bytes(apdu[pos + 1:pos + 5], "big")
        raw_choice, pos = apdu[pos + 5], pos + 6
        if raw_choice == 0:
            size, pos = decode_length(apdu, pos)
            if pos + size > len(apdu):
                raise DecodeError(f"truncated data block: {size} bytes announced, {len(apdu) - pos} present")
            reply = GetReply(invoke_id, "block", (), number, last, bytes(apdu[pos:pos + size]))
            pos += size
        elif raw_choice == 1:
            if pos >= len(apdu):
                raise DecodeError("truncated data block: access result missing")
            reply = GetReply(invoke_id, "block", (apdu[pos],), number, last)
            pos += 1
        else:
            raise DecodeError(f"unknown data-block result choice {raw_choice}")
    elif choice == 3:
        count, pos = decode_length(apdu, pos)
        results, pos = parse_list_results(apdu, pos, count)
        reply = GetReply(invoke_id, "list", results)
    else:
        raise DecodeError(f"unknown GET response choice {choice}")
    if pos != len(apdu):
        raise DecodeError(f"{len(apdu) - pos} bytes left after the GET response")
    return reply


def parse_list_results(buf: bytes, pos: int, count: int) -> tuple[tuple[bytes | int, ...], int]:
    """``count`` get-data-results from ``pos`` (the body of a with-list answer, also when it came in
    blocks); returns them and the position after them."""
    if count > (len(buf) - pos) // 2:  # each result takes at least a choice byte and one more
        raise DecodeError(f"{count} results announced, {len(buf) - pos} bytes present")
    results = []
    for _ in range(count):
        result, pos = _result(buf, pos)
        results.append(result)
    return tuple(results), pos


def _result(buf: bytes, pos: int) -> tuple[bytes | int, int]:
    if pos + 2 > len(buf):
        raise DecodeError("truncated get-data-result")
    choice = buf[pos]
    if choice == 0:
        _, end = decode_data(buf, pos + 1)
        return bytes(buf[pos + 1:end]), end
    if choice == 1:
        return buf[pos + 1], pos + 2
    raise DecodeError(f"unknown get-data-result choice {choice}")
