"""A-XDR encoded COSEM ``Data`` (IEC 61334-6 / Blue Book 4.1.5) decoded into a typed, immutable tree.

Own decoder rather than dlms-cosem's ``DlmsDataParser``: that one discards the wire type (u16 vs u32
matters for scaling checks), raises bare IndexError/KeyError on truncated input, and its profile parser
drops null cells. Here every element keeps its type, nulls stay in place, the nesting depth is bounded,
and any malformed input ends in ``DecodeError``.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Union

from drivers.decode.cosem_time import CosemDateTime
from drivers.decode.errors import DecodeError

MAX_DEPTH = 32  # real push lists nest 3-4 levels; the bound keeps hostile input from recursing away


class DataType(IntEnum):
    NULL = 0
    ARRAY = 1
    STRUCTURE = 2
    BOOLEAN = 3
    BIT_STRING = 4
    DOUBLE_LONG = 5
    DOUBLE_LONG_UNSIGNED = 6
    OCTET_STRING = 9
    VISIBLE_STRING = 10
    UTF8_STRING = 12
    BCD = 13
    INTEGER = 15
    LONG = 16
    UNSIGNED = 17
    LONG_UNSIGNED = 18
    COMPACT_ARRAY = 19
    LONG64 = 20
    LONG64_UNSIGNED = 21
    ENUM = 22
    FLOAT32 = 23
    FLOAT64 = 24
    DATE_TIME = 25
    DATE = 26
    TIME = 27
    DONT_CARE = 255


SHORT_NAMES = {
    DataType.NULL: "null", DataType.ARRAY: "array", DataType.STRUCTURE: "struct", DataType.BOOLEAN: "bool",
    DataType.BIT_STRING: "bits", DataType.DOUBLE_LONG: "i32", DataType.DOUBLE_LONG_UNSIGNED: "u32",
    DataType.OCTET_STRING: "oct", DataType.VISIBLE_STRING: "vis", DataType.UTF8_STRING: "utf8",
    DataType.BCD: "bcd", DataType.INTEGER: "i8", DataType.LONG: "i16", DataType.UNSIGNED: "u8",
    DataType.LONG_UNSIGNED: "u16", DataType.LONG64: "i64", DataType.LONG64_UNSIGNED: "u64",
    DataType.ENUM: "enum", DataType.FLOAT32: "f32", DataType.FLOAT64: "f64", DataType.DATE_TIME: "date-time",
    DataType.DATE: "date", DataType.TIME: "time", DataType.DONT_CARE: "dont-care",
}

# Fixed-size types: struct format (None = raw bytes of that size).
_FIXED: dict[int, tuple[int, str | None]] = {
    DataType.NULL: (0, None), DataType.DONT_CARE: (0, None), DataType.BOOLEAN: (1, None),
    DataType.DOUBLE_LONG: (4, ">i"), DataType.DOUBLE_LONG_UNSIGNED: (4, ">I"), DataType.BCD: (1, None),
    DataType.INTEGER: (1, ">b"), DataType.LONG: (2, ">h"), DataType.UNSIGNED: (1, ">B"),
    DataType.LONG_UNSIGNED: (2, ">H"), DataType.LONG64: (8, ">q"), DataType.LONG64_UNSIGNED: (8, ">Q"),
    DataType.ENUM: (1, ">B"), DataType.FLOAT32: (4, ">f"), DataType.FLOAT64: (8, ">d"),
    DataType.DATE_TIME: (12, None), DataType.DATE: (5, None), DataType.TIME: (4, None),
}

Value = Union[None, bool, int, float, bytes, str, CosemDateTime, tuple["Data", ...]]


@dataclass(frozen=True, slots=True)
class Data:
    """One COSEM data element: its wire type and its value (a tuple of ``Data`` for array/structure)."""

    type: DataType
    value: Value

    @property
    def type_name(self) -> str:
        name = SHORT_NAMES[self.type]
        if self.type in (DataType.ARRAY, DataType.STRUCTURE, DataType.OCTET_STRING):
            return f"{name}[{len(self.value)}]"  # type: ignore[arg-type]
        if self.type is DataType.BIT_STRING:
            return f"{name}[{len(self.value)}]"  # type: ignore[arg-type]
        return name

    @property
    def items(self) -> tuple[Data, ...]:
        if not isinstance(self.value, tuple):
            raise DecodeError(f"{self.type_name} has no items")
        return self.value


def decode_length(buf: bytes, pos: int, *, max_bytes: int = 4) -> tuple[int, int]:
    """A-XDR variable-length integer (the same form as a BER definite length) at ``pos``; returns
    (value, position after it). ``max_bytes`` bounds the long form: 4 for A-XDR, 2 for ACSE's BER."""
    if pos >= len(buf):
        raise DecodeError("truncated: length byte missing")
    first = buf[pos]
    if first < 0x80:
        return first, pos + 1
    count = first & 0x7F
    if count == 0 or count > max_bytes:
        raise DecodeError(f"A-XDR length with {count} length bytes is not supported")
    end = pos + 1 + count
    if end > len(buf):
        raise DecodeError("truncated: length bytes missing")
    return int.from_bytes(buf[pos + 1:end], "big"), end


_TYPES = {int(t): t for t in DataType}
# Fixed-size decoders: tag -> (size, struct unpacker or None); precomputed because this loop is the
# hot path of profile-buffer decoding (hundreds of elements per response).
_UNPACK = {tag: (size, struct.Struct(fmt).unpack_from if fmt else None) for tag, (size, fmt) in _FIXED.items()}
_STRINGS = (DataType.OCTET_STRING, DataType.VISIBLE_STRING, DataType.UTF8_STRING)


def decode_data(buf: bytes, pos: int = 0, depth: int = 0) -> tuple[Data, int]:
    """Decode one tagged data element at ``pos``; returns it and the position after it."""
    if depth > MAX_DEPTH:
        raise DecodeError(f"data nested deeper than {MAX_DEPTH} levels")
    if pos >= len(buf):
        raise DecodeError("truncated: data tag missing")
    tag = buf[pos]
    pos += 1
    kind = _TYPES.get(tag)
    if kind is None:
        raise DecodeError(f"unknown data tag 0x{tag:02X}")
    fixed = _UNPACK.get(tag)
    if fixed is not None:
        size, unpack = fixed
        end = pos + size
        if end > len(buf):
            raise DecodeError(f"truncated {SHORT_NAMES[kind]}: needs {size} bytes, {len(buf) - pos} left")
        if unpack is not None:
            return Data(kind, unpack(buf, pos)[0]), end
        if size == 0:
            return Data(kind, None), end
        if kind is DataType.BOOLEAN:
            return Data(kind, buf[pos] != 0), end
        if kind is DataType.BCD:
            return Data(kind, buf[pos]), end
        if kind is DataType.DATE_TIME:
            return Data(kind, CosemDateTime.from_bytes(bytes(buf[pos:end]))), end
        return Data(kind, bytes(buf[pos:end])), end
    if kind is DataType.ARRAY or kind is DataType.STRUCTURE:
        count, pos = decode_length(buf, pos)
        if count > len(buf) - pos:  # every element needs at least its tag byte
            raise DecodeError(f"truncated: {count} elements announced, {len(buf) - pos} bytes left")
        elements = []
        for _ in range(count):
            element, pos = decode_data(buf, pos, depth + 1)
            elements.append(element)
        return Data(kind, tuple(elements)), pos
    if kind in _STRINGS:
        size, pos = decode_length(buf, pos)
        end = pos + size
        if end > len(buf):
            raise DecodeError(f"truncated {SHORT_NAMES[kind]}: needs {size} bytes, {len(buf) - pos} left")
        raw = bytes(buf[pos:end])
        if kind is DataType.OCTET_STRING:
            return Data(kind, raw), end
        if kind is DataType.VISIBLE_STRING:
            return Data(kind, raw.decode("latin-1")), end
        try:
            return Data(kind, raw.decode("utf-8")), end
        except UnicodeDecodeError:
            raise DecodeError("utf8-string is not valid UTF-8") from None
    if kind is DataType.BIT_STRING:
        bits, pos = decode_length(buf, pos)
        end = pos + (bits + 7) // 8
        if end > len(buf):
            raise DecodeError("truncated bit-string")
        return Data(kind, "".join(f"{b:08b}" for b in buf[pos:end])[:bits]), end
    raise DecodeError("compact-array data is not supported")


def decode_data_exact(buf: bytes) -> Data:
    """Decode a buffer that holds exactly one data element (trailing bytes are an error)."""
    data, pos = decode_data(buf)
    if pos != len(buf):
        raise DecodeError(f"{len(buf) - pos} bytes left after the data element")
    return data


def encode_length(value: int) -> bytes:
    if value < 0x80:
        return bytes([value])
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def encode_data(data: Data) -> bytes:
    """A-XDR encoding of ``data`` (used by fixtures, the simulator and benchmarks)."""
    tag = data.type
    value = data.value
    fixed = _FIXED.get(tag)
    if fixed is not None:
        size, fmt = fixed
        if fmt is not None:
            return bytes([tag]) + struct.pack(fmt, value)
        if tag == DataType.BOOLEAN:
            return bytes([tag, 1 if value else 0])
        if tag == DataType.BCD:
            return bytes([tag, value])  # type: ignore[list-item]
        if tag == DataType.DATE_TIME:
            return bytes([tag]) + value.raw  # type: ignore[union-attr]
        return bytes([tag]) + (value or b"")  # type: ignore[operator]
    if tag in (DataType.ARRAY, DataType.STRUCTURE):
        items = value  # type: ignore[assignment]
        return bytes([tag]) + encode_length(len(items)) + b"".join(encode_data(i) for i in items)  # type: ignore
    if tag == DataType.OCTET_STRING:
        return bytes([tag]) + encode_length(len(value)) + value  # type: ignore[arg-type,operator]
    if tag == DataType.VISIBLE_STRING:
        raw = value.encode("latin-1")  # type: ignore[union-attr]
        return bytes([tag]) + encode_length(len(raw)) + raw
    if tag == DataType.UTF8_STRING:
        raw = value.encode("utf-8")  # type: ignore[union-attr]
        return bytes([tag]) + encode_length(len(raw)) + raw
    if tag == DataType.BIT_STRING:
        bits = value  # type: ignore[assignment]
        padded = bits.ljust((len(bits) + 7) // 8 * 8, "0")  # type: ignore[union-attr]
        raw = int(padded, 2).to_bytes(len(padded) // 8, "big") if padded else b""
        return bytes([tag]) + encode_length(len(bits)) + raw  # type: ignore[arg-type]
    raise DecodeError(f"cannot encode {tag.name}")
