"""What bytes that are not the expected framing look like, for the operator's error message.

A meter port that answers with something else than DLMS is a configuration problem (wrong host or
port, wrong ``framing``), and the bytes say which: an HTTP or TLS server, a text banner, HDLC frames
on a port configured for the wrapper, wrapper PDUs on one configured for HDLC. Pure functions, bytes
in, a short phrase out (never more than a few dozen bytes of the peer's data, printable only).
"""
from __future__ import annotations

HDLC_FLAG = 0x7E
_TLS_CONTENT_TYPES = {0x14: "change-cipher-spec", 0x15: "alert", 0x16: "handshake", 0x17: "application-data"}
_HTTP_STARTS = (b"HTTP/", b"GET ", b"POST ", b"HEAD ", b"PUT ", b"<!DOCTYPE", b"<html", b"<HTML", b"<?xml")
_SHOWN = 40  # bytes of the peer's data quoted at most


def looks_like_hdlc(data: bytes) -> bool:
    """An HDLC frame (IEC 62056-46): flag 7E, then a frame format type 3 byte (A0..A7)."""
    index = data.find(bytes([HDLC_FLAG]))
    while 0 <= index < len(data) - 1:
        if data[index + 1] & 0xF8 == 0xA0:
            return True
        index = data.find(bytes([HDLC_FLAG]), index + 1)
    return False


def looks_like_wrapper(data: bytes) -> bool:
    """A DLMS wrapper header (IEC 62056-47): version 0001, two wPorts, a length."""
    return len(data) >= 8 and data[:2] == b"\x00\x01"


def looks_like_tls(data: bytes) -> bool:
    return len(data) >= 3 and data[0] in _TLS_CONTENT_TYPES and data[1] == 0x03 and data[2] <= 0x04


def _printable(data: bytes) -> bool:
    return bool(data) and sum(32 <= b < 127 or b in b"\r\n\t" for b in data) >= 0.9 * len(data)


def _first_line(data: bytes) -> str:
    line = data.split(b"\n", 1)[0].rstrip(b"\r")[:_SHOWN]
    return "".join(chr(b) if 32 <= b < 127 else "." for b in line)


def describe_bytes(data: bytes) -> str:
    """A phrase for what ``data`` (the start of an unexpected answer) looks like."""
    if not data:
        return "nothing"
    if any(data.startswith(start) for start in _HTTP_STARTS):
        return f"HTTP ({_first_line(data)!r}): a web server, not a DLMS endpoint"
    if looks_like_tls(data):
        kind = _TLS_CONTENT_TYPES[data[0]]
        return f"TLS (a TLS {kind} record, {data[:5].hex(' ')}): a TLS server, not a DLMS endpoint"
    if looks_like_wrapper(data):
        return f"DLMS wrapper PDUs ({data[:8].hex(' ')})"
    if data[0] == HDLC_FLAG and looks_like_hdlc(data):
        return f"HDLC frames ({data[:8].hex(' ')})"
    if _printable(data):
        return f"text ({_first_line(data)!r}): not a DLMS endpoint"
    return f"unrecognised bytes ({data[:16].hex(' ')}{' ...' if len(data) > 16 else ''})"


__all__ = ["describe_bytes", "looks_like_hdlc", "looks_like_tls", "looks_like_wrapper"]
