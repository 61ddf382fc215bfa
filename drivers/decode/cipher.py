"""Ciphered xDLMS APDUs (Green Book 9.2.7): parse the security header and decipher with AES-GCM.

dlms-cosem only parses general-glo-ciphering; service-specific glo-/ded- APDUs (tag 0xCC, 0xCF, ...) and
general-ded-ciphering fail there, so the security header is parsed here and the AES-GCM work is done by
``cryptography``. Security suite 0/1/2: IV = system title (8) || invocation counter (4), 12-byte tag,
AAD = SC || AK (|| plaintext when only authenticated). Keys live only in ``SecurityKeys``, whose repr
hides them; no error message mentions key bytes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from drivers.decode.axdr import decode_length
from drivers.errors import ConfigError
from drivers.decode.errors import DecodeError, DecryptionError

TAG_LENGTH = 12

GENERAL_GLO_CIPHERING = 0xDB
GENERAL_DED_CIPHERING = 0xDC

# Service-specific ciphered APDUs: tag -> (name, dedicated key?)
SERVICE_SPECIFIC: dict[int, tuple[str, bool]] = {
    0x21: ("glo-initiate-request", False), 0x28: ("glo-initiate-response", False),
    0x2E: ("glo-confirmed-service-error", False), 0xC8: ("glo-get-request", False),
    0xC9: ("glo-set-request", False), 0xCA: ("glo-event-notification-request", False),
    0xCB: ("glo-action-request", False), 0xCC: ("glo-get-response", False),
    0xCD: ("glo-set-response", False), 0xCF: ("glo-action-response", False),
    0x41: ("ded-initiate-request", True), 0x48: ("ded-initiate-response", True),
    0x4E: ("ded-confirmed-service-error", True), 0xD0: ("ded-get-request", True),
    0xD1: ("ded-set-request", True), 0xD2: ("ded-event-notification-request", True),
    0xD3: ("ded-action-request", True), 0xD4: ("ded-get-response", True),
    0xD5: ("ded-set-response", True), 0xD7: ("ded-action-response", True),
}
CIPHERED_TAGS = frozenset(SERVICE_SPECIFIC) | {GENERAL_GLO_CIPHERING, GENERAL_DED_CIPHERING}


@dataclass(frozen=True)
class SecurityKeys:
    """Keys for one meter. ``system_title`` is the peer's, needed for service-specific APDUs (not carried)."""

    encryption_key: bytes | None = field(default=None, repr=False)
    authentication_key: bytes | None = field(default=None, repr=False)
    dedicated_key: bytes | None = field(default=None, repr=False)
    system_title: bytes | None = None

    def __post_init__(self) -> None:
        for name in ("encryption_key", "authentication_key", "dedicated_key"):
            key = getattr(self, name)
            if key is not None and len(key) not in (16, 32):
                raise ConfigError(None, f"{name.replace('_', ' ')} must be 16 or 32 bytes, got {len(key)}")
        if self.system_title is not None and len(self.system_title) != 8:
            raise ConfigError(None, f"system title must be 8 bytes, got {len(self.system_title)}")


@dataclass(frozen=True)
class CipheredApdu:
    """The security header and ciphered payload of a ciphered APDU (not yet deciphered)."""

    tag: int
    name: str
    system_title: bytes | None  # None for service-specific APDUs: the title came with the association
    security_control: int
    invocation_counter: int
    payload: bytes  # ciphertext (|| tag) or plaintext || tag, depending on the security control

    @property
    def authenticated(self) -> bool:
        return bool(self.security_control & 0x10)

    @property
    def encrypted(self) -> bool:
        return bool(self.security_control & 0x20)

    @property
    def broadcast_key(self) -> bool:
        return bool(self.security_control & 0x40)

    @property
    def compressed(self) -> bool:
        return bool(self.security_control & 0x80)

    @property
    def suite(self) -> int:
        return self.security_control & 0x0F

    @property
    def dedicated(self) -> bool:
        return self.tag == GENERAL_DED_CIPHERING or SERVICE_SPECIFIC.get(self.tag, ("", False))[1]


def parse_ciphered(apdu: bytes) -> tuple[CipheredApdu, int]:
    """Parse a ciphered APDU's header; returns it and the number of bytes the APDU occupies."""
    if not apdu:
        raise DecodeError("empty APDU")
    tag = apdu[0]
    pos = 1
    system_title: bytes | None = None
    if tag in (GENERAL_GLO_CIPHERING, GENERAL_DED_CIPHERING):
        name = "general-glo-ciphering" if tag == GENERAL_GLO_CIPHERING else "general-ded-ciphering"
        size, pos = decode_length(apdu, pos)
        system_title = bytes(apdu[pos:pos + size])
        if len(system_title) != size:
            raise DecodeError("truncated system title")
        if size != 8:
            raise DecodeError(f"system title must be 8 bytes, got {size}")
        pos += size
    elif tag in SERVICE_SPECIFIC:
        name = SERVICE_SPECIFIC[tag][0]
    else:
        raise DecodeError(f"0x{tag:02X} is not a ciphered APDU tag")
    size, pos = decode_length(apdu, pos)
    end = pos + size
    if end > len(apdu):
        raise DecodeError(f"truncated {name}: {size} bytes declared, {len(apdu) - pos} present")
    if size < 5:
        raise DecodeError(f"{name} too short for its security header")
    sc = apdu[pos]
    ic = int.from_bytes(apdu[pos + 1:pos + 5], "big")
    payload = bytes(apdu[pos + 5:end])
    return CipheredApdu(tag, name, system_title, sc, ic, payload), end


def _iv(system_title: bytes, invocation_counter: int) -> bytes:
    return system_title + invocation_counter.to_bytes(4, "big")


def decipher(ciphered: CipheredApdu, keys: SecurityKeys | None) -> tuple[bytes, bool]:
    """Return (plaintext APDU, tag verified?).

    The tag is verified whenever an authentication key is given; without one, an encrypted payload is
    deciphered without verification (AES-GCM = AES-CTR from counter 2) and reported as unverified.
    """
    if ciphered.compressed:
        raise DecryptionError(f"{ciphered.name}: compressed APDUs are not supported")
    if ciphered.suite > 2:
        raise DecryptionError(f"{ciphered.name}: unknown security suite {ciphered.suite}")
    if keys is None:
        raise DecryptionError(f"{ciphered.name}: no keys given for this meter")
    key = keys.dedicated_key if ciphered.dedicated else keys.encryption_key
    if key is None:
        which = "dedicated" if ciphered.dedicated else "encryption (global unicast)"
        raise DecryptionError(f"{ciphered.name}: the {which} key is needed")
    title = ciphered.system_title or keys.system_title
    if title is None:
        raise DecryptionError(f"{ciphered.name}: the server system title is needed (it is not in the APDU)")
    iv = _iv(title, ciphered.invocation_counter)
    ak = keys.authentication_key
    sc = bytes([ciphered.security_control])
    payload = ciphered.payload
    if ciphered.authenticated and len(payload) < TAG_LENGTH:
        raise DecryptionError(f"{ciphered.name}: payload shorter than the authentication tag")
    if ciphered.encrypted and ciphered.authenticated:
        body, tag = payload[:-TAG_LENGTH], payload[-TAG_LENGTH:]
        if ak is None:
            return _ctr(key, iv, body), False
        decryptor = Cipher(algorithms.AES(key), modes.GCM(iv, tag, min_tag_length=TAG_LENGTH)).decryptor()
        decryptor.authenticate_additional_data(sc + ak)
        plain = decryptor.update(body)
        _finalize(decryptor, ciphered.name)
        return plain, True
    if ciphered.encrypted:
        return _ctr(key, iv, payload), False
    if ciphered.authenticated:
        body, tag = payload[:-TAG_LENGTH], payload[-TAG_LENGTH:]
        if ak is None:
            return body, False
        decryptor = Cipher(algorithms.AES(key), modes.GCM(iv, tag, min_tag_length=TAG_LENGTH)).decryptor()
        decryptor.authenticate_additional_data(sc + ak + body)
        _finalize(decryptor, ciphered.name)
        return body, True
    return payload, False


def _finalize(decryptor: object, name: str) -> None:
    try:
        decryptor.finalize()  # type: ignore[attr-defined]
    except InvalidTag:
        raise DecryptionError(f"{name}: authentication tag mismatch (wrong key or corrupted APDU)") from None


def _ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    # GCM encrypts with counter blocks starting at inc32(J0) = IV || 00000002.
    decryptor = Cipher(algorithms.AES(key), modes.CTR(iv + b"\x00\x00\x00\x02")).decryptor()
    return decryptor.update(data) + decryptor.finalize()


def keystream_decipher(data: bytes, *, key: bytes, system_title: bytes, invocation_counter: int) -> bytes:
    """Decipher without any tag check (the AES-CTR half of GCM): for truncated captures and diagnostics."""
    if len(key) not in (16, 32) or len(system_title) != 8:
        raise DecryptionError("key must be 16 or 32 bytes and the system title 8 bytes")
    return _ctr(key, _iv(system_title, invocation_counter), data)


def encipher(plaintext: bytes, *, key: bytes, system_title: bytes, invocation_counter: int,
             security_control: int = 0x30, authentication_key: bytes = b"") -> bytes:
    """SC || IC || ciphertext || tag for ``plaintext`` (used by the simulator and tests)."""
    iv = _iv(system_title, invocation_counter)
    header = bytes([security_control]) + invocation_counter.to_bytes(4, "big")
    encryptor = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()
    if security_control & 0x30 == 0x30:
        encryptor.authenticate_additional_data(header[:1] + authentication_key)
        body = encryptor.update(plaintext) + encryptor.finalize()
        return header + body + encryptor.tag[:TAG_LENGTH]
    if security_control & 0x20:
        return header + _ctr(key, iv, plaintext)
    if security_control & 0x10:
        encryptor.authenticate_additional_data(header[:1] + authentication_key + plaintext)
        encryptor.finalize()
        return header + plaintext + encryptor.tag[:TAG_LENGTH]
    return header + plaintext


def gmac(data: bytes, *, key: bytes, authentication_key: bytes, system_title: bytes, invocation_counter: int,
         security_control: int = 0x10) -> bytes:
    """HLS-GMAC tag (mechanism 5) over ``data`` (e.g. the StoC challenge), 12 bytes."""
    encryptor = Cipher(algorithms.AES(key), modes.GCM(_iv(system_title, invocation_counter))).encryptor()
    encryptor.authenticate_additional_data(bytes([security_control]) + authentication_key + data)
    encryptor.finalize()
    return encryptor.tag[:TAG_LENGTH]
