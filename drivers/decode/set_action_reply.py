"""Plaintext SET and ACTION responses split into what a client needs, with the bounds of this layer.

As with GET (``get_reply``), the session reads these answers here and never through dlms-cosem's
parsers: every field is checked against the bytes present, an optional return value is walked by
``decode_data`` (each step consumes input, nesting is bounded), and trailing bytes are an error, so a
malformed answer ends in ``DecodeError`` in time proportional to its length.

IEC 62056-5-3 (Green Book 9.3) encodings read here::

    C5 01 iid result                              Set-Response-Normal
    C5 02 iid block-number(4)                     Set-Response-Datablock (ack of one block)
    C5 03 iid result block-number(4)              Set-Response-Last-Datablock
    C7 01 iid result 00                           Action-Response-Normal, no return parameters
    C7 01 iid result 01 00 <Data>                 ... with data
    C7 01 iid result 01 01 <data-access-result>   ... with a data-access result
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from drivers.decode.axdr import decode_data
from drivers.decode.errors import DecodeError

SET_RESPONSE_TAG = 0xC5
ACTION_RESPONSE_TAG = 0xC7


@dataclass(frozen=True, slots=True)
class SetReply:
    """One SET response. ``result`` is the data-access-result code (0: success); a block
    acknowledgement (``kind == "block"``) carries none."""

    invoke_id: int  # the whole invoke-id-and-priority byte
    kind: Literal["normal", "block", "last_block"]
    result: int | None = None
    block_number: int = 0


@dataclass(frozen=True, slots=True)
class ActionReply:
    """One ACTION-Response-Normal: the action-result code (0: success) and the optional return
    parameters, as the A-XDR bytes of a Data (``data``) or a data-access-result code (``data_result``)."""

    invoke_id: int
    result: int
    data: bytes | None = None
    data_result: int | None = None


def parse_set_reply(apdu: bytes) -> SetReply:
    """Parse a plaintext SET response that fills ``apdu`` exactly."""
    if len(apdu) < 3 or apdu[0] != SET_RESPONSE_TAG:
        raise DecodeError("not a SET response")
    choice, invoke_id = apdu[1], apdu[2]
    if choice == 1:
        _expect_size(apdu, 4, "Set-Response-Normal")
        return SetReply(invoke_id, "normal", result=apdu[3])
    if choice == 2:
        _expect_size(apdu, 7, "Set-Response-Datablock")
        return SetReply(invoke_id, "block", block_number=int.from_bytes(apdu[3:7], "big"))
    if choice == 3:
        _expect_size(apdu, 8, "Set-Response-Last-Datablock")
        return SetReply(invoke_id, "last_block", result=apdu[3], block_number=int.from_bytes(apdu[4:8], "big"))
    raise DecodeError(f"SET response choice {choice} not understood (we never send SET with list)")


def parse_action_reply(apdu: bytes) -> ActionReply:
    """Parse a plaintext ACTION-Response-Normal that fills ``apdu`` exactly (other choices, used
    only for ACTION block transfer and lists, which we never ask for, are errors)."""
    if len(apdu) < 3 or apdu[0] != ACTION_RESPONSE_TAG:
        raise DecodeError("not an ACTION response")
    choice, invoke_id = apdu[1], apdu[2]
    if choice != 1:
        raise DecodeError(f"ACTION response choice {choice} not understood (we ask only ACTION normal)")
    if len(apdu) < 5:
        raise DecodeError("truncated Action-Response-Normal")
    result, present, pos = apdu[3], apdu[4], 5
    data = data_result = None
    if present == 1:
        if pos >= len(apdu):
            raise DecodeError("truncated return parameters")
        kind, pos = apdu[pos], pos + 1
        if kind == 0:
            _, end = decode_data(apdu, pos)
            data, pos = bytes(apdu[pos:end]), end
        elif kind == 1:
            if pos >= len(apdu):
                raise DecodeError("truncated return parameters: data-access result missing")
            data_result, pos = apdu[pos], pos + 1
        else:
            raise DecodeError(f"unknown get-data-result choice {kind} in return parameters")
    elif present != 0:
        raise DecodeError(f"return-parameters presence flag {present}, expected 0 or 1")
    if pos != len(apdu):
        raise DecodeError(f"{len(apdu) - pos} bytes left after the ACTION response")
    return ActionReply(invoke_id, result, data, data_result)


def _expect_size(apdu: bytes, size: int, what: str) -> None:
    if len(apdu) != size:
        raise DecodeError(f"{what} of {len(apdu)} bytes, expected {size}")
