"""General block transfer (Green Book 9.3.10, tag 0xE0): block parsing and sans-IO reassembly.

L+G IDIS meters push long DataNotifications (often ciphered) as a series of GBT blocks, one per HDLC
frame, the LLC header only on the first. A block's data is a slice of the complete APDU, cut anywhere
(even inside an OBIS code), so blocks are joined before anything is decoded.
"""
from __future__ import annotations

from dataclasses import dataclass

from drivers.decode.axdr import decode_length
from drivers.decode.errors import BlockTransferError, DecodeError

GBT_TAG = 0xE0
MAX_MESSAGE_BYTES = 1 << 20  # far above any meter's PDU; bounds memory on garbage input


@dataclass(frozen=True)
class GeneralBlockTransfer:
    last_block: bool
    streaming: bool
    window: int
    block_number: int
    block_number_ack: int
    data: bytes


def parse_gbt(apdu: bytes, pos: int = 0) -> tuple[GeneralBlockTransfer, int]:
    """Parse one GBT APDU at ``pos``; returns it and the position after it."""
    if len(apdu) - pos < 6:
        raise DecodeError("truncated general-block-transfer header")
    if apdu[pos] != GBT_TAG:
        raise DecodeError(f"0x{apdu[pos]:02X} is not a general-block-transfer APDU")
    control = apdu[pos + 1]
    block_number = int.from_bytes(apdu[pos + 2:pos + 4], "big")
    ack = int.from_bytes(apdu[pos + 4:pos + 6], "big")
    size, start = decode_length(apdu, pos + 6)
    end = start + size
    if end > len(apdu):
        raise DecodeError(f"truncated general-block-transfer block: {size} bytes declared, {len(apdu) - start} present")
    block = GeneralBlockTransfer(
        last_block=bool(control & 0x80), streaming=bool(control & 0x40), window=control & 0x3F,
        block_number=block_number, block_number_ack=ack, data=bytes(apdu[start:end]),
    )
    return block, end


class GbtReassembler:
    """Joins the blocks of one transfer; ``feed()`` returns the complete APDU on the last block."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self._next = 1

    @property
    def in_progress(self) -> bool:
        return bool(self._parts)

    def feed(self, block: GeneralBlockTransfer) -> bytes | None:
        if block.block_number != self._next:
            expected = self._next
            self._parts, self._size, self._next = [], 0, 1
            if expected == 1:
                raise BlockTransferError(
                    f"general-block-transfer block {block.block_number} arrived without block 1")
            raise BlockTransferError(
                f"general-block-transfer block {block.block_number} arrived, expected {expected}")
        self._size += len(block.data)
        if self._size > MAX_MESSAGE_BYTES:
            self._parts, self._size, self._next = [], 0, 1
            raise BlockTransferError("general-block-transfer message exceeds 1 MiB")
        self._parts.append(block.data)
        self._next += 1
        if not block.last_block:
            return None
        whole = b"".join(self._parts)
        self._parts, self._size, self._next = [], 0, 1
        return whole
