"""One entry point for "here are some bytes from a meter, what do they say?".

``decode_message`` auto-detects HDLC frames (leading 0x7E), DLMS wrapper PDUs (IEC 62056-47, version
0x0001) or bare APDUs, then walks the layers: frame checks, segment reassembly, LLC, the APDUs of each
information field, general block transfer reassembly, deciphering. The result keeps every layer so a
field engineer (``gateway decode``) or a test can look at any of them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from drivers.decode.apdu import Apdu, Ciphered, GetResponse, decode_apdu_exact, decode_apdus
from drivers.decode.axdr import Data, decode_data_exact
from drivers.decode.cipher import SecurityKeys
from drivers.decode.errors import BlockTransferError, DecodeError, DecodeLayerError, FrameError
from drivers.decode.gbt import GbtReassembler, GeneralBlockTransfer
from drivers.decode.hdlc import FLAG, FrameKind, HdlcFrame, SegmentReassembler, parse_parameters, split_frames, strip_llc

WRAPPER_VERSION = 1


@dataclass(frozen=True)
class WrapperHeader:
    version: int
    source_wport: int
    destination_wport: int
    length: int


@dataclass(frozen=True)
class Reassembled:
    """An APDU rebuilt from ``blocks`` general-block-transfer blocks."""

    blocks: int
    raw: bytes
    apdu: Apdu


@dataclass(frozen=True)
class ReassembledData:
    """The data of a GET.response-with-datablock series, joined and decoded (e.g. a profile buffer)."""

    blocks: int
    raw: bytes
    data: Data


@dataclass(frozen=True)
class FrameInfo:
    """A frame and what its information field carried (LLC, HDLC parameters, or nothing)."""

    frame: HdlcFrame
    llc: bytes | None = None
    parameters: dict[str, int] | None = None


@dataclass(frozen=True)
class DecodedMessage:
    transport: str  # "hdlc" | "wrapper" | "apdu"
    frames: tuple[FrameInfo, ...] = ()
    wrappers: tuple[WrapperHeader, ...] = ()
    apdus: tuple[Union[Apdu, Reassembled, ReassembledData], ...] = ()
    incomplete: tuple[str, ...] = field(default=())

    def final_apdus(self) -> list[Apdu]:
        """The application-level APDUs: reassembled ones replace their blocks, ciphered ones their inner APDU."""
        out: list[Apdu] = []
        for item in self.apdus:
            if isinstance(item, ReassembledData):
                continue
            apdu = item.apdu if isinstance(item, Reassembled) else item
            if isinstance(apdu, GeneralBlockTransfer):
                continue
            while isinstance(apdu, Ciphered) and apdu.inner is not None:
                apdu = apdu.inner
            out.append(apdu)
        return out


def looks_like_wrapper(data: bytes) -> bool:
    return len(data) >= 8 and int.from_bytes(data[:2], "big") == WRAPPER_VERSION


def _split_wrappers(data: bytes) -> list[tuple[WrapperHeader, bytes]]:
    out = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 8:
            raise FrameError(f"{len(data) - pos} trailing bytes are too short for a wrapper header")
        version = int.from_bytes(data[pos:pos + 2], "big")
        if version != WRAPPER_VERSION:
            raise FrameError(f"wrapper version {version} (expected 1)")
        length = int.from_bytes(data[pos + 6:pos + 8], "big")
        if pos + 8 + length > len(data):
            raise FrameError(f"wrapper declares {length} bytes, {len(data) - pos - 8} present")
        header = WrapperHeader(version, int.from_bytes(data[pos + 2:pos + 4], "big"),
                               int.from_bytes(data[pos + 4:pos + 6], "big"), length)
        out.append((header, data[pos + 8:pos + 8 + length]))
        pos += 8 + length
    return out


class _ApduCollector:
    def __init__(self, keys: SecurityKeys | None) -> None:
        self.keys = keys
        self.gbt = GbtReassembler()
        self.blocks = 0
        self.items: list[Union[Apdu, Reassembled, ReassembledData]] = []
        self.get_blocks: list[bytes] = []

    def add_payload(self, payload: bytes) -> None:
        for apdu in decode_apdus(payload, self.keys):
            self.items.append(apdu)
            inner = apdu
            while isinstance(inner, Ciphered) and inner.inner is not None:
                inner = inner.inner
            if isinstance(inner, GetResponse) and inner.raw_data is not None:
                self._get_block(inner)
            if isinstance(apdu, GeneralBlockTransfer):
                self.blocks += 1
                whole = self.gbt.feed(apdu)
                if whole is not None:
                    self.items.append(Reassembled(self.blocks, whole, decode_apdu_exact(whole, self.keys)))
                    self.blocks = 0

    def _get_block(self, response: GetResponse) -> None:
        if response.block_number != len(self.get_blocks) + 1:
            expected = len(self.get_blocks) + 1
            self.get_blocks = []
            raise BlockTransferError(f"get-response data block {response.block_number} arrived, expected {expected}")
        self.get_blocks.append(response.raw_data or b"")
        if response.last_block:
            raw = b"".join(self.get_blocks)
            self.items.append(ReassembledData(len(self.get_blocks), raw, decode_data_exact(raw)))
            self.get_blocks = []

    def incomplete(self) -> list[str]:
        notes = []
        if self.gbt.in_progress:
            notes.append(f"general block transfer incomplete: {self.blocks} block(s) without the last block")
        if self.get_blocks:
            notes.append(f"get-response data blocks incomplete: {len(self.get_blocks)} block(s) without the last")
        return notes


def decode_message(data: bytes, keys: SecurityKeys | None = None, *, meter: str | None = None) -> DecodedMessage:
    """Decode HDLC frame(s), wrapper PDU(s) or bare APDU(s); raises FrameError/DecodeError subclasses.

    ``meter`` (the meter id, when the caller knows it) is attached to any error raised.
    """
    try:
        return _decode(bytes(data), keys)
    except DecodeLayerError as exc:
        if meter is not None and exc.meter_id is None:
            exc.meter_id = meter
        raise


def _decode(data: bytes, keys: SecurityKeys | None) -> DecodedMessage:
    if not data:
        raise DecodeError("no bytes to decode")
    collector = _ApduCollector(keys)
    if data[0] == FLAG:
        infos: list[FrameInfo] = []
        segments = SegmentReassembler()
        for frame in split_frames(data):
            if frame.kind in (FrameKind.SNRM, FrameKind.UA) and frame.info:
                infos.append(FrameInfo(frame, parameters=parse_parameters(frame.info)))
                continue
            if frame.kind not in (FrameKind.I, FrameKind.UI) or not frame.info:
                infos.append(FrameInfo(frame))
                continue
            payload = segments.feed(frame)
            if payload is None:
                infos.append(FrameInfo(frame))
                continue
            llc, body = strip_llc(payload)
            infos.append(FrameInfo(frame, llc=llc))
            collector.add_payload(body)
        notes = collector.incomplete()
        if segments.in_progress:
            notes.append("HDLC segmentation incomplete: the last frame has the segmentation bit set")
        return DecodedMessage("hdlc", frames=tuple(infos), apdus=tuple(collector.items), incomplete=tuple(notes))
    if looks_like_wrapper(data):
        wrappers = []
        for header, payload in _split_wrappers(data):
            wrappers.append(header)
            collector.add_payload(payload)
        return DecodedMessage("wrapper", wrappers=tuple(wrappers), apdus=tuple(collector.items),
                              incomplete=tuple(collector.incomplete()))
    collector.add_payload(data)
    return DecodedMessage("apdu", apdus=tuple(collector.items), incomplete=tuple(collector.incomplete()))

