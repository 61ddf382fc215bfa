"""Wire-level pieces of xDLMS the simulator encodes or parses itself, because dlms-cosem 25.1.0 can't.

- GetResponseNormal.to_bytes crashes (appends bytes to a bytearray), so GET responses are built
  here; GET requests are parsed here because its parser rejects class ids it has no enum for
  and entry_descriptor access.
- general-glo-ciphering and ExceptionResponse with an invocation counter: dlms-cosem writes a
  single-byte length / value, wrong beyond 127 bytes / 255.
"""
from __future__ import annotations

from dlms_cosem.enumerations import ServiceException, StateException

from drivers.decode import axdr
from drivers.decode.errors import DecodeError

TAG_GLO = 0xDB
SECURITY_CONTROL_ENCRYPTED_AUTHENTICATED = 0x30  # suite 0, authenticated and encrypted


class ProtocolViolation(Exception):
    """A request the simulator cannot decode; the association answers with an exception-response."""


def exception_response(service: ServiceException, state: StateException = StateException.SERVICE_NOT_ALLOWED) -> bytes:
    return bytes((0xD8, state, service))


def general_glo_cipher(system_title: bytes, invocation_counter: int, ciphered_text: bytes) -> bytes:
    content = bytes((SECURITY_CONTROL_ENCRYPTED_AUTHENTICATED,)) + invocation_counter.to_bytes(4, "big") + ciphered_text
    return bytes((TAG_GLO, len(system_title))) + system_title + axdr.encode_length(len(content)) + content


def decode_length(data: bytes, offset: int) -> tuple[int, int]:
    """The decode layer's A-XDR length decoder; a malformed length is the client's protocol violation."""
    try:
        return axdr.decode_length(data, offset)
    except DecodeError as exc:
        raise ProtocolViolation(exc.message) from exc


def _skip_data(data: bytes, offset: int) -> int:
    """Offset just past one A-XDR Data element (only the types access parameters use)."""
    if offset >= len(data):
        raise ProtocolViolation("truncated access parameters")
    tag = data[offset]
    offset += 1
    if tag in (0x01, 0x02):
        count, offset = decode_length(data, offset)
        for _ in range(count):
            offset = _skip_data(data, offset)
        return offset
    fixed = {0x00: 0, 0x03: 1, 0x05: 4, 0x06: 4, 0x0F: 1, 0x10: 2, 0x11: 1, 0x12: 2, 0x14: 8,
             0x15: 8, 0x16: 1, 0x17: 4, 0x18: 8, 0x19: 12, 0x1A: 5, 0x1B: 4}
    if tag in fixed:
        end = offset + fixed[tag]
    elif tag in (0x09, 0x0A, 0x0C, 0x0D):
        length, offset = decode_length(data, offset)
        end = offset + length
    elif tag == 0x04:
        bits, offset = decode_length(data, offset)
        end = offset + (bits + 7) // 8
    else:
        raise ProtocolViolation(f"unsupported data tag {tag}")
    if end > len(data):
        raise ProtocolViolation("truncated access parameters")
    return end


def parse_attribute_descriptor(data: bytes, offset: int) -> tuple[int, str, int, int | None, bytes, int]:
    """(class_id, obis, attribute, selector, params, next offset) of a Cosem-Attribute-Descriptor-With-Selection."""
    if offset + 10 > len(data):
        raise ProtocolViolation("truncated attribute descriptor")
    class_id = int.from_bytes(data[offset:offset + 2], "big")
    obis = ".".join(str(b) for b in data[offset + 2:offset + 8])
    attribute = int.from_bytes(data[offset + 8:offset + 9], "big", signed=True)
    has_selection = data[offset + 9]
    offset += 10
    if not has_selection:
        return class_id, obis, attribute, None, b"", offset
    if offset >= len(data):
        raise ProtocolViolation("missing access selector")
    selector = data[offset]
    end = _skip_data(data, offset + 1)
    return class_id, obis, attribute, selector, bytes(data[offset + 1:end]), end
