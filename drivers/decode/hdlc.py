"""HDLC (IEC 62056-46, frame format type 3) framing as pure functions and a sans-IO stream reader.

The one HDLC codec of the drivers: the client transport, the simulated meters and ``gateway decode``
all encode, check and split frames and negotiate parameters here, and only add their own link state.

Frames are delimited by their 11-bit length field, never by searching for the 0x7E flag: DLMS HDLC has
no byte stuffing, so 0x7E legitimately occurs inside an information field or an FCS (Kamstrup HAN
pushes, dlms-cosem issue #97). ``HdlcFrameReader`` takes bytes as they arrive from any transport and
hands out whole, checked frames; ``SegmentReassembler`` joins segmented information fields (S bit).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from drivers.decode.errors import ChecksumError, FrameError

FLAG = 0x7E
LLC_COMMAND = b"\xE6\xE6\x00"
LLC_RESPONSE = b"\xE6\xE7\x00"
MAX_FRAME_LENGTH = 0x7FF  # 11-bit length field


def _x25_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_X25 = _x25_table()


def crc16_x25(data: bytes) -> int:
    """CRC-16/X.25 as used for HCS and FCS (IEC 62056-46 §6.4.4.4; transmitted least significant byte first).

    Table-driven here because dlms-cosem's bit-reversing implementation costs ~1 µs per byte, which
    would dominate the decoding cost of every frame.
    """
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _X25[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFF


def fcs(data: bytes) -> bytes:
    """HCS/FCS of ``data`` in wire order (least significant byte first)."""
    return crc16_x25(data).to_bytes(2, "little")


class FrameKind(str, Enum):
    I = "I"
    RR = "RR"
    RNR = "RNR"
    SNRM = "SNRM"
    DISC = "DISC"
    UA = "UA"
    DM = "DM"
    FRMR = "FRMR"
    UI = "UI"


_U_FRAMES = {0x83: FrameKind.SNRM, 0x43: FrameKind.DISC, 0x63: FrameKind.UA, 0x0F: FrameKind.DM,
             0x87: FrameKind.FRMR, 0x03: FrameKind.UI}


@dataclass(frozen=True)
class HdlcAddress:
    """A 1-, 2- or 4-byte HDLC address; ``lower`` (physical) is None for 1-byte addresses."""

    raw: bytes
    upper: int
    lower: int | None

    def __str__(self) -> str:
        return self.raw.hex().upper()


@dataclass(frozen=True)
class CheckedFrame:
    """A frame whose length, addresses, HCS and FCS are verified, its control byte not yet interpreted:
    a station acts on the control values it knows and ignores (or answers) the others itself."""

    segmented: bool
    length: int
    dst: HdlcAddress
    src: HdlcAddress
    control: int
    info: bytes
    raw: bytes


@dataclass(frozen=True)
class HdlcFrame:
    """One checked HDLC frame; ``info`` is the information field as sent (LLC header included, if any)."""

    segmented: bool
    length: int
    dst: HdlcAddress
    src: HdlcAddress
    control: int
    kind: FrameKind
    poll_final: bool
    send_seq: int | None
    recv_seq: int | None
    info: bytes
    raw: bytes


def _parse_address(data: bytes, pos: int, end: int, which: str) -> tuple[HdlcAddress, int]:
    for size in range(1, 5):
        if pos + size > end:
            break
        if data[pos + size - 1] & 1:
            if size == 3:
                raise FrameError(f"{which} address is 3 bytes long; HDLC allows 1, 2 or 4")
            raw = bytes(data[pos:pos + size])
            parts = [b >> 1 for b in raw]
            if size == 1:
                return HdlcAddress(raw, parts[0], None), pos + size
            if size == 2:
                return HdlcAddress(raw, parts[0], parts[1]), pos + size
            return HdlcAddress(raw, parts[0] << 7 | parts[1], parts[2] << 7 | parts[3]), pos + size
    raise FrameError(f"{which} address has no end bit within 4 bytes")


def _control(control: int) -> tuple[FrameKind, int | None, int | None]:
    if control & 0x01 == 0:
        return FrameKind.I, (control >> 1) & 0x07, control >> 5
    if control & 0x03 == 0x01:
        kind = {0x01: FrameKind.RR, 0x05: FrameKind.RNR}.get(control & 0x0F)
        if kind is None:
            raise FrameError(f"unknown HDLC supervisory control byte 0x{control:02X}")
        return kind, None, control >> 5
    kind = _U_FRAMES.get(control & 0xEF)
    if kind is None:
        raise FrameError(f"unknown HDLC control byte 0x{control:02X}")
    return kind, None, None


def check_frame(raw: bytes) -> CheckedFrame:
    """Check exactly one frame, opening and closing flag included; raise ``FrameError`` otherwise."""
    raw = bytes(raw)
    if len(raw) < 9:
        raise FrameError(f"HDLC frame too short ({len(raw)} bytes)")
    if raw[0] != FLAG or raw[-1] != FLAG:
        raise FrameError("HDLC frame does not start and end with the 0x7E flag")
    if raw[1] & 0xF0 != 0xA0:
        raise FrameError(f"not an HDLC frame format type 3 (format byte 0x{raw[1]:02X})")
    length = (raw[1] & 0x07) << 8 | raw[2]
    if length != len(raw) - 2:
        raise FrameError(f"HDLC length field says {length} bytes but {len(raw) - 2} are between the flags")
    end = len(raw) - 3  # index of the first FCS byte
    dst, pos = _parse_address(raw, 3, end, "destination")
    src, pos = _parse_address(raw, pos, end, "source")
    if pos >= end:
        raise FrameError("HDLC frame has no control byte")
    control = raw[pos]
    pos += 1
    if raw[-3:-1] != fcs(raw[1:-3]):
        raise ChecksumError("HDLC FCS mismatch")
    if pos == end:
        info = b""
    else:
        if pos + 2 > end:
            raise FrameError("HDLC frame too short for its HCS")
        if raw[pos:pos + 2] != fcs(raw[1:pos]):
            raise ChecksumError("HDLC HCS mismatch")
        info = raw[pos + 2:end]
    return CheckedFrame(segmented=bool(raw[1] & 0x08), length=length, dst=dst, src=src, control=control,
                        info=info, raw=raw)


def _interpret(frame: CheckedFrame) -> HdlcFrame:
    kind, send_seq, recv_seq = _control(frame.control)
    return HdlcFrame(
        segmented=frame.segmented, length=frame.length, dst=frame.dst, src=frame.src, control=frame.control,
        kind=kind, poll_final=bool(frame.control & 0x10), send_seq=send_seq, recv_seq=recv_seq, info=frame.info,
        raw=frame.raw,
    )


def parse_frame(raw: bytes) -> HdlcFrame:
    """Parse exactly one frame, opening and closing flag included; raise ``FrameError`` otherwise
    (an unknown control byte included)."""
    return _interpret(check_frame(raw))


def encode_address(upper: int, lower: int | None = None, size: int | None = None) -> bytes:
    """Encode an HDLC address; ``size`` forces 2 or 4 bytes (servers with physical addresses > 127)."""
    if lower is None:
        if not 0 <= upper < 0x80:
            raise FrameError("1-byte HDLC address out of range")
        return bytes([upper << 1 | 1])
    size = size or (2 if upper < 0x80 and lower < 0x80 else 4)
    if size == 2:
        if not (0 <= upper < 0x80 and 0 <= lower < 0x80):
            raise FrameError("2-byte HDLC address out of range")
        return bytes([upper << 1, lower << 1 | 1])
    if not (0 <= upper < 0x4000 and 0 <= lower < 0x4000):
        raise FrameError("4-byte HDLC address out of range")
    return bytes([(upper >> 7) << 1, (upper & 0x7F) << 1, (lower >> 7) << 1, (lower & 0x7F) << 1 | 1])


def encode_frame(dst: bytes, src: bytes, control: int, info: bytes = b"", *, segmented: bool = False) -> bytes:
    """Build one frame (flags included) from encoded addresses, a control byte and an information field."""
    header_len = 2 + len(dst) + len(src) + 1
    length = header_len + (2 + len(info) if info else 0) + 2
    if length > MAX_FRAME_LENGTH:
        raise FrameError(f"HDLC frame of {length} bytes exceeds the 11-bit length field")
    header = bytes([0xA0 | (0x08 if segmented else 0) | length >> 8, length & 0xFF]) + dst + src + bytes([control])
    body = header
    if info:
        body += fcs(header) + info
    body += fcs(body)
    return bytes([FLAG]) + body + bytes([FLAG])


class HdlcFrameReader:
    """Sans-IO HDLC receiver: ``feed()`` bytes as they arrive, then call ``next_frame()`` until None.

    ``next_frame()`` raises ``FrameError`` for a frame that fails its checks; the reader has then already
    skipped past it, so the caller may keep calling it: a frame whose closing flag sits where its length
    field says is skipped whole (a 0x7E inside a corrupt frame opens no phantom frame), anything else
    only up to its opening flag. Bytes before a flag (line noise, an IR echo tail) are skipped and
    counted in ``discarded``. ``next_checked()`` is the same without interpreting the control byte.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.discarded = 0

    def feed(self, data: bytes) -> None:
        self._buffer += data

    @property
    def pending(self) -> bytes:
        """Bytes received but not yet part of a returned frame."""
        return bytes(self._buffer)

    def reset(self) -> None:
        """Forget buffered bytes (after a timeout, so a half frame cannot swallow the next answer)."""
        self.discarded += len(self._buffer)
        self._buffer.clear()

    def _drop(self, count: int) -> None:
        del self._buffer[:count]
        self.discarded += count

    def next_frame(self) -> HdlcFrame | None:
        frame = self.next_checked()
        return None if frame is None else _interpret(frame)

    def next_checked(self) -> CheckedFrame | None:
        buf = self._buffer
        while True:
            start = buf.find(FLAG)
            if start < 0:
                self._drop(len(buf))
                return None
            if start:
                self._drop(start)
            # Back-to-back flags: the closing flag of one frame may be followed by the next opening flag.
            while len(buf) > 1 and buf[1] == FLAG:
                del buf[:1]
            if len(buf) < 3:
                return None
            if buf[1] & 0xF0 != 0xA0:
                self._drop(1)
                continue
            length = (buf[1] & 0x07) << 8 | buf[2]
            if len(buf) < length + 2:
                return None
            candidate = bytes(buf[:length + 2])
            try:
                frame = check_frame(candidate)
            except FrameError:
                self._drop(length + 1 if candidate[-1] == FLAG and length else 1)
                raise
            # Keep the closing flag: it may double as the next frame's opening flag.
            del buf[:length + 1]
            return frame


def split_frames(data: bytes) -> list[HdlcFrame]:
    """Split a complete capture of back-to-back frames; every byte must belong to a valid frame."""
    reader = HdlcFrameReader()
    reader.feed(data)
    frames: list[HdlcFrame] = []
    while (frame := reader.next_frame()) is not None:
        frames.append(frame)
    if reader.discarded or reader.pending.strip(bytes([FLAG])):
        raise FrameError(f"{len(data) - sum(len(f.raw) for f in frames)} bytes do not form complete HDLC frames")
    if not frames:
        raise FrameError("no HDLC frame found")
    return frames


def strip_llc(info: bytes) -> tuple[bytes | None, bytes]:
    """Split the LLC header (E6 E6 00 command / E6 E7 00 response) off an information field, if present."""
    if info[:3] in (LLC_COMMAND, LLC_RESPONSE):
        return info[:3], info[3:]
    return None, info


class SegmentReassembler:
    """Joins information fields of segmented frames (S bit set on all but the last segment)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    @property
    def in_progress(self) -> bool:
        return bool(self._parts)

    def feed(self, frame: HdlcFrame) -> bytes | None:
        """Return the whole information field when ``frame`` completes it, else None."""
        self._parts.append(frame.info)
        if frame.segmented:
            return None
        whole = b"".join(self._parts)
        self._parts = []
        return whole


HDLC_PARAMETER_NAMES = {0x05: "max_info_tx", 0x06: "max_info_rx", 0x07: "window_tx", 0x08: "window_rx"}
MAX_INFO_TX, MAX_INFO_RX, WINDOW_TX, WINDOW_RX = 0x05, 0x06, 0x07, 0x08
DEFAULT_MAX_INFO = 128  # IEC 62056-46 default when SNRM/UA carry no parameters


def parse_parameters(info: bytes) -> dict[str, int]:
    """HDLC parameter negotiation field of SNRM/UA (IEC 62056-46 §6.4.4.4.3.2): 81 80 len {id len value}.

    Strict, for showing what is on the wire: anything malformed is a ``FrameError``."""
    if len(info) < 3 or info[0] != 0x81 or info[1] != 0x80:
        raise FrameError("not an HDLC parameter negotiation field (expected 81 80)")
    end = 3 + info[2]
    if end != len(info):
        raise FrameError(f"HDLC parameter field declares {info[2]} bytes, has {len(info) - 3}")
    return {HDLC_PARAMETER_NAMES.get(ident, f"param_0x{ident:02X}"): value
            for ident, value in _parameter_items(info, end, strict=True)}


def read_parameters(info: bytes) -> dict[int, int]:
    """The parameters a station can take from an SNRM/UA information field, by identifier (05..08).

    Lenient, as a link partner must be: no field (or not 81 80) means none, so the defaults apply; a
    value cut short by the group length is read as far as it goes."""
    if len(info) < 3 or info[0] != 0x81 or info[1] != 0x80:
        return {}
    return dict(_parameter_items(info, min(len(info), 3 + info[2]), strict=False))


def _parameter_items(info: bytes, end: int, *, strict: bool) -> list[tuple[int, int]]:
    items = []
    pos = 3
    while pos + 2 <= end:
        ident, size = info[pos], info[pos + 1]
        if strict and (pos + 2 + size > end or size > 4):
            raise FrameError(f"bad HDLC parameter 0x{ident:02X} of {size} bytes")
        items.append((ident, int.from_bytes(info[pos + 2:pos + 2 + size], "big")))
        pos += 2 + size
    if strict and pos != end:
        raise FrameError("truncated HDLC parameter")
    return items


def encode_parameters(max_info_tx: int, max_info_rx: int, window_tx: int = 1, window_rx: int = 1) -> bytes:
    """SNRM/UA parameter negotiation field; windows are sent as 4 bytes, as meters expect."""
    def item(ident: int, value: int, width: int | None = None) -> bytes:
        size = width or (1 if value < 0x100 else 2)
        return bytes((ident, size)) + value.to_bytes(size, "big")

    body = (item(MAX_INFO_TX, max_info_tx) + item(MAX_INFO_RX, max_info_rx)
            + item(WINDOW_TX, window_tx, 4) + item(WINDOW_RX, window_rx, 4))
    return b"\x81\x80" + bytes((len(body),)) + body
