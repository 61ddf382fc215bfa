"""Field-level encryption of personal data: AES-256-GCM per field, under the assignment's data key.

Each field gets its own random 96-bit nonce; the associated data binds the ciphertext to its
assignment and field name, so a ciphertext copied into another assignment or swapped with another
field fails authentication instead of decrypting as someone else's data. Stored as base64 inside an
``EncryptedField`` with the key id (the key lives only in the key store).

Reading a field whose key was destroyed gives ``ERASED``, a typed marker, never an exception: after
``gateway forget`` every reader (event loads, projections rebuilding views) sees the same "erased".
A ciphertext that fails authentication with a live key is a different matter (corruption or
tampering) and raises ``FieldTampered``.
"""
from __future__ import annotations

import base64
import binascii
import enum
import os
from typing import Final, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.personal.events import EncryptedField
from gateway.personal.keys import DataKey, KeyDestroyed, KeyStore

NONCE_BYTES: Final[int] = 12  # NIST SP 800-38D §8.2: 96-bit random nonces
_AAD_PREFIX: Final[bytes] = b"meter-gateway/personal/v1"


class Erased(enum.Enum):
    """The value of a personal field whose key was destroyed."""

    ERASED = "erased"

    def __repr__(self) -> str:
        return "ERASED"

    def __str__(self) -> str:
        return "<erased>"


ERASED: Final[Literal[Erased.ERASED]] = Erased.ERASED

PersonalValue = str | Erased


class PersonalDataError(Exception):
    """Base of the errors of personal-data handling."""


class FieldTampered(PersonalDataError):
    """A ciphertext did not authenticate under its (live) key: corrupted or tampered with."""

    def __init__(self, assignment_id: str, field_name: str, reason: str = "authentication failed") -> None:
        self.assignment_id = assignment_id
        self.field_name = field_name
        super().__init__(f"assignment {assignment_id!r}, field {field_name!r}: {reason}")


def _aad(assignment_id: str, field_name: str) -> bytes:
    return b"\x00".join((_AAD_PREFIX, assignment_id.encode(), field_name.encode()))


def encrypt_field(key: DataKey, field_name: str, plaintext: str) -> EncryptedField:
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(key.material).encrypt(
        nonce, plaintext.encode("utf-8"), _aad(key.assignment_id, field_name)
    )
    return EncryptedField(
        key_id=key.key_id,
        nonce=base64.b64encode(nonce).decode("ascii"),
        ciphertext=base64.b64encode(ciphertext).decode("ascii"),
    )


def decrypt_field(key: DataKey, field_name: str, value: EncryptedField) -> str:
    """The plaintext of ``value``; FieldTampered if it does not authenticate under ``key``."""
    if value.key_id != key.key_id:
        raise FieldTampered(key.assignment_id, field_name, f"encrypted under another key {value.key_id!r}")
    try:
        nonce = base64.b64decode(value.nonce, validate=True)
        ciphertext = base64.b64decode(value.ciphertext, validate=True)
    except (binascii.Error, ValueError):
        raise FieldTampered(key.assignment_id, field_name, "nonce or ciphertext is not base64") from None
    if len(nonce) != NONCE_BYTES:
        raise FieldTampered(key.assignment_id, field_name, f"nonce is not {NONCE_BYTES} bytes")
    try:
        plain = AESGCM(key.material).decrypt(nonce, ciphertext, _aad(key.assignment_id, field_name))
    except InvalidTag:
        raise FieldTampered(key.assignment_id, field_name) from None
    return plain.decode("utf-8")


async def reveal(keys: KeyStore, field_name: str, value: EncryptedField,
                 assignment_id: str | None = None) -> PersonalValue:
    """The plaintext of a stored field, or ERASED if its key was destroyed.

    ``assignment_id``, when given, must be the key's: a field moved into another assignment's event
    is refused (FieldTampered) before any decryption is tried.
    """
    try:
        key = await keys.get(value.key_id)
    except KeyDestroyed:
        return ERASED
    if assignment_id is not None and key.assignment_id != assignment_id:
        raise FieldTampered(assignment_id, field_name, f"key {value.key_id!r} belongs to another assignment")
    return decrypt_field(key, field_name, value)


__all__ = [
    "ERASED", "NONCE_BYTES", "Erased", "FieldTampered", "PersonalDataError", "PersonalValue",
    "decrypt_field", "encrypt_field", "reveal",
]
