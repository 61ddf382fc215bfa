"""xDLMS and ACSE APDU identification and decoding into frozen values.

``decode_apdu(buf, pos)`` identifies the APDU at ``pos`` by its tag, decodes it and says where it ends,
so several APDUs in one information field decode in sequence. xDLMS APDUs (DataNotification, GET,
SET/ACTION responses, EventNotification, ExceptionResponse) are decoded here because their A-XDR bodies
need our typed data tree and quirk handling (e.g. old Kamstrup firmware's ``09 0C`` DataNotification
date-time); ACSE APDUs (AARQ/AARE/RLRQ/RLRE, BER-encoded) go through dlms-cosem's classes, with any
library exception turned into ``DecodeError`` and the library's ``print`` calls silenced. Ciphered
APDUs are deciphered when keys are given.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Union

import attr
from dlms_cosem.enumerations import DataAccessResult
from dlms_cosem.protocol import acse

from drivers.decode.axdr import Data, decode_data, decode_length
from drivers.decode.cipher import CIPHERED_TAGS, CipheredApdu, SecurityKeys, decipher, parse_ciphered
from drivers.decode.cosem_time import CosemDateTime
from drivers.decode.errors import DecodeError
from drivers.decode.gbt import GBT_TAG, GeneralBlockTransfer, parse_gbt
from drivers.logging import silence_dlms_cosem_prints

MAX_CIPHER_NESTING = 2


def access_result_name(code: int) -> str:
    try:
        return DataAccessResult(code).name.lower()
    except ValueError:
        return f"unknown-{code}"


@dataclass(frozen=True)
class Obis:
    a: int
    b: int
    c: int
    d: int
    e: int
    f: int

    @classmethod
    def from_bytes(cls, raw: bytes) -> Obis:
        if len(raw) != 6:
            raise DecodeError(f"an OBIS code is 6 bytes, got {len(raw)}")
        return cls(*raw)

    def __str__(self) -> str:
        return f"{self.a}-{self.b}:{self.c}.{self.d}.{self.e}.{self.f}"


@dataclass(frozen=True)
class AttributeDescriptor:
    class_id: int
    obis: Obis
    attribute: int
    selector: int | None = None
    selection: Data | None = None


@dataclass(frozen=True)
class DataNotification:
    long_invoke_id_and_priority: int  # as sent: flags in the top byte, invoke-id in the low 24 bits
    date_time: CosemDateTime | None
    body: Data
    # Old Kamstrup firmware (2017) tags the date-time as an A-XDR octet-string: 09 0C <12 bytes>.
    date_time_tagged: bool = False

    @property
    def invoke_id(self) -> int:
        return self.long_invoke_id_and_priority & 0xFFFFFF

    @property
    def priority_high(self) -> bool:
        return bool(self.long_invoke_id_and_priority & 0x80000000)

    @property
    def confirmed(self) -> bool:
        return bool(self.long_invoke_id_and_priority & 0x40000000)


@dataclass(frozen=True)
class EventNotification:
    time: CosemDateTime | None
    attribute: AttributeDescriptor
    value: Data


@dataclass(frozen=True)
class GetRequest:
    kind: str  # normal | next | with-list
    invoke_id: int
    attributes: tuple[AttributeDescriptor, ...] = ()
    block_number: int | None = None


@dataclass(frozen=True)
class GetResponse:
    """``results`` holds Data or an access-result name (str) per attribute; with-block carries raw bytes."""

    kind: str  # normal | with-block | with-list
    invoke_id: int
    results: tuple[Union[Data, str], ...] = ()
    last_block: bool | None = None
    block_number: int | None = None
    raw_data: bytes | None = None


@dataclass(frozen=True)
class SetResponse:
    kind: str
    invoke_id: int
    results: tuple[str, ...]


@dataclass(frozen=True)
class ActionResponse:
    invoke_id: int
    result: str
    return_data: Union[Data, str, None]


@dataclass(frozen=True)
class ExceptionResponse:
    state_error: int
    service_error: int

    @property
    def text(self) -> str:
        states = {1: "service-not-allowed", 2: "service-unknown"}
        services = {1: "operation-not-possible", 2: "service-not-supported", 3: "other-reason",
                    4: "pdu-too-long", 5: "deciphering-error", 6: "invocation-counter-error"}
        return (f"{states.get(self.state_error, f'state-{self.state_error}')}, "
                f"{services.get(self.service_error, f'service-{self.service_error}')}")


@dataclass(frozen=True)
class ConfirmedServiceError:
    service: int
    error_type: int
    error: int


@dataclass(frozen=True)
class AcseApdu:
    """An ACSE APDU as decoded by dlms-cosem, flattened to JSON-able fields.

    ``secrets`` lists the dotted paths of fields that hold a secret (``authentication_value`` when it
    is an LLS password, a dedicated key in a plain InitiateRequest), so renderings can mask them.
    """

    name: str
    fields: dict[str, Any]
    secrets: tuple[str, ...] = ()


@dataclass(frozen=True)
class Ciphered:
    """A ciphered APDU; ``inner`` is the deciphered APDU when keys were given, else None."""

    header: CipheredApdu
    plaintext: bytes | None
    tag_verified: bool
    inner: Apdu | None


Apdu = Union[DataNotification, EventNotification, GetRequest, GetResponse, SetResponse, ActionResponse,
             ExceptionResponse, ConfirmedServiceError, AcseApdu, Ciphered, GeneralBlockTransfer]


class _Reader:
    """Bounds-checked cursor over an APDU buffer: every read past the end is a DecodeError."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf = buf
        self.pos = pos

    def u8(self) -> int:
        if self.pos >= len(self.buf):
            raise DecodeError("truncated APDU")
        self.pos += 1
        return self.buf[self.pos - 1]

    def take(self, size: int) -> bytes:
        if self.pos + size > len(self.buf):
            raise DecodeError(f"truncated APDU: needs {size} more bytes, {len(self.buf) - self.pos} left")
        self.pos += size
        return bytes(self.buf[self.pos - size:self.pos])

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def length(self) -> int:
        value, self.pos = decode_length(self.buf, self.pos)
        return value

    def data(self) -> Data:
        value, self.pos = decode_data(self.buf, self.pos)
        return value

    def descriptor(self, with_selection: bool) -> AttributeDescriptor:
        class_id = self.uint(2)
        obis = Obis.from_bytes(self.take(6))
        attribute = self.u8()
        if with_selection and self.u8():
            selector = self.u8()
            return AttributeDescriptor(class_id, obis, attribute, selector, self.data())
        return AttributeDescriptor(class_id, obis, attribute)

    def optional_date_time(self) -> tuple[CosemDateTime | None, bool]:
        size = self.u8()
        tagged = False
        if size == 0x09 and self.pos < len(self.buf) and self.buf[self.pos] == 12:
            tagged = True
            size = self.u8()
        if size == 0:
            return None, False
        if size != 12:
            raise DecodeError(f"date-time of {size} bytes (expected 0 or 12)")
        return CosemDateTime.from_bytes(self.take(12)), tagged


def _data_notification(r: _Reader) -> DataNotification:
    long_invoke_id = r.uint(4)
    date_time, tagged = r.optional_date_time()
    return DataNotification(long_invoke_id, date_time, r.data(), tagged)


def _event_notification(r: _Reader) -> EventNotification:
    time = CosemDateTime.from_bytes(r.take(r.length())) if r.u8() else None
    return EventNotification(time, r.descriptor(False), r.data())


def _get_request(r: _Reader) -> GetRequest:
    kind = r.u8()
    invoke_id = r.u8()
    if kind == 1:
        return GetRequest("normal", invoke_id, (r.descriptor(True),))
    if kind == 2:
        return GetRequest("next", invoke_id, block_number=r.uint(4))
    if kind == 3:
        return GetRequest("with-list", invoke_id, tuple(r.descriptor(True) for _ in range(r.length())))
    raise DecodeError(f"unknown get-request choice {kind}")


def _result(r: _Reader) -> Union[Data, str]:
    choice = r.u8()
    if choice == 0:
        return r.data()
    if choice == 1:
        return access_result_name(r.u8())
    raise DecodeError(f"unknown get-data-result choice {choice}")


def _get_response(r: _Reader) -> GetResponse:
    kind = r.u8()
    invoke_id = r.u8()
    if kind == 1:
        return GetResponse("normal", invoke_id, (_result(r),))
    if kind == 2:
        last = bool(r.u8())
        block = r.uint(4)
        choice = r.u8()
        if choice == 0:
            return GetResponse("with-block", invoke_id, (), last, block, r.take(r.length()))
        if choice == 1:
            return GetResponse("with-block", invoke_id, (access_result_name(r.u8()),), last, block)
        raise DecodeError(f"unknown datablock-g result choice {choice}")
    if kind == 3:
        count = r.length()
        if count > len(r.buf) - r.pos:
            raise DecodeError(f"truncated: {count} results announced")
        return GetResponse("with-list", invoke_id, tuple(_result(r) for _ in range(count)))
    raise DecodeError(f"unknown get-response choice {kind}")


def _set_response(r: _Reader) -> SetResponse:
    kind = r.u8()
    invoke_id = r.u8()
    if kind == 1:
        return SetResponse("normal", invoke_id, (access_result_name(r.u8()),))
    if kind in (2, 3):  # datablock ack: block number only
        return SetResponse("datablock" if kind == 2 else "last-datablock", invoke_id,
                           (f"block {r.uint(4)}",) if kind == 2 else (access_result_name(r.u8()), f"block {r.uint(4)}"))
    if kind == 5:
        count = r.length()
        if count > len(r.buf) - r.pos:
            raise DecodeError(f"truncated: {count} results announced")
        return SetResponse("with-list", invoke_id, tuple(access_result_name(r.u8()) for _ in range(count)))
    raise DecodeError(f"unsupported set-response choice {kind}")


def _action_response(r: _Reader) -> ActionResponse:
    kind = r.u8()
    invoke_id = r.u8()
    if kind != 1:
        raise DecodeError(f"unsupported action-response choice {kind}")
    result = access_result_name(r.u8())
    return_data = _result(r) if r.u8() else None
    return ActionResponse(invoke_id, result, return_data)


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.name.lower()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex().upper()
    if attr.has(type(value)):
        return {k: _plain(v) for k, v in attr.asdict(value, recurse=False).items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (int, str, bool, float)):
        return value
    return str(value)


_ACSE = {
    0x60: ("aarq", acse.ApplicationAssociationRequest),
    0x61: ("aare", acse.ApplicationAssociationResponse),
    0x62: ("rlrq", acse.ReleaseRequest),
    0x63: ("rlre", acse.ReleaseResponse),
}


def _acse(buf: bytes, pos: int) -> tuple[AcseApdu, int]:
    name, cls = _ACSE[buf[pos]]
    size, start = decode_length(buf, pos + 1, max_bytes=2)  # ACSE: BER length, 2 bytes at most here
    end = start + size
    if end > len(buf):
        raise DecodeError(f"truncated {name}: {size} bytes declared, {len(buf) - start} present")
    silence_dlms_cosem_prints()  # a malformed InitiateResponse in an AARE would print its bytes to stdout
    try:
        decoded = cls.from_bytes(bytes(buf[pos:end]))
        fields = _plain(decoded)
    except Exception as exc:  # library boundary: dlms-cosem raises bare ValueError/IndexError/KeyError
        raise DecodeError(f"malformed {name}: {type(exc).__name__}") from None
    return AcseApdu(name, fields, _secret_fields(fields)), end


def _secret_fields(fields: dict[str, Any]) -> tuple[str, ...]:
    paths = []
    # With HLS the authentication value is a challenge (CtoS in the AARQ, StoC in the AARE), sent in
    # the clear by design; with LLS (or a mechanism we cannot name) it is the password itself.
    mechanism = fields.get("authentication")
    if "authentication_value" in fields and not (isinstance(mechanism, str) and mechanism.startswith("hls")):
        paths.append("authentication_value")
    user_information = fields.get("user_information")
    content = user_information.get("content") if isinstance(user_information, dict) else None
    if isinstance(content, dict) and "dedicated_key" in content:
        paths.append("user_information.content.dedicated_key")
    return tuple(paths)


_XDLMS = {
    0x0F: _data_notification,
    0xC2: _event_notification,
    0xC0: _get_request,
    0xC4: _get_response,
    0xC5: _set_response,
    0xC7: _action_response,
}

APDU_NAMES = {
    0x0F: "data-notification", 0xC2: "event-notification-request", 0xC0: "get-request",
    0xC4: "get-response", 0xC5: "set-response", 0xC7: "action-response", 0xD8: "exception-response",
    0x0E: "confirmed-service-error", 0xE0: "general-block-transfer", 0x60: "aarq", 0x61: "aare",
    0x62: "rlrq", 0x63: "rlre",
}


def decode_apdu(buf: bytes, pos: int = 0, keys: SecurityKeys | None = None, *,
                _nesting: int = 0) -> tuple[Apdu, int]:
    """Decode the APDU starting at ``buf[pos]``; returns it and the position just after it."""
    if pos >= len(buf):
        raise DecodeError("empty APDU")
    tag = buf[pos]
    if tag in _XDLMS:
        reader = _Reader(buf, pos + 1)
        return _XDLMS[tag](reader), reader.pos
    if tag == GBT_TAG:
        return parse_gbt(buf, pos)
    if tag == 0xD8:
        reader = _Reader(buf, pos + 1)
        state, service = reader.u8(), reader.u8()
        if service == 6 and len(buf) - reader.pos >= 4:  # invocation-counter-error carries the expected IC
            reader.take(4)
        return ExceptionResponse(state, service), reader.pos
    if tag == 0x0E:
        reader = _Reader(buf, pos + 1)
        return ConfirmedServiceError(reader.u8(), reader.u8(), reader.u8()), reader.pos
    if tag in _ACSE:
        return _acse(buf, pos)
    if tag in CIPHERED_TAGS:
        header, size = parse_ciphered(bytes(buf[pos:]))
        if keys is None:
            return Ciphered(header, None, False, None), pos + size
        if _nesting >= MAX_CIPHER_NESTING:
            raise DecodeError("ciphered APDU nested inside ciphered APDUs too deeply")
        plaintext, verified = decipher(header, keys)
        inner = decode_apdu_exact(plaintext, keys, _nesting=_nesting + 1)
        return Ciphered(header, plaintext, verified, inner), pos + size
    raise DecodeError(f"unknown or unsupported APDU tag 0x{tag:02X}")


def decode_apdu_exact(buf: bytes, keys: SecurityKeys | None = None, *, _nesting: int = 0) -> Apdu:
    """Decode a buffer holding exactly one APDU."""
    apdu, end = decode_apdu(buf, 0, keys, _nesting=_nesting)
    if end != len(buf):
        raise DecodeError(f"{len(buf) - end} bytes left after the {type(apdu).__name__} APDU")
    return apdu


def decode_apdus(buf: bytes, keys: SecurityKeys | None = None) -> list[Apdu]:
    """Decode every APDU in ``buf`` (an information field may carry several back to back)."""
    apdus: list[Apdu] = []
    pos = 0
    while pos < len(buf):
        apdu, pos = decode_apdu(buf, pos, keys)
        apdus.append(apdu)
    if not apdus:
        raise DecodeError("no APDU in an empty payload")
    return apdus
