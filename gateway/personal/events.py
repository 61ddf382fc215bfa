"""The event types of personal data: a meter assigned to a customer, and that customer forgotten.

Both live in the assignment's own stream ``Assignment:<assignment id>`` (never in a meter year
stream), so deleting or shredding an assignment never touches the meter's readings. Personal fields
are stored only as ``EncryptedField`` values (see ``gateway.personal.crypto``); the events carry no
plaintext and no key. ``gateway.domain.mapper`` registers the types (``EVENT_CLASSES``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Final

from gateway.domain.events import DomainEvent, Payload, event_id

ASSIGNMENT_CATEGORY: Final[str] = "Assignment"
PERSONAL_FIELDS: Final[tuple[str, ...]] = ("postal_code", "house_number", "activation_code")
AES_256_GCM: Final[str] = "AES-256-GCM"

# The same alphabet as meter ids (gateway.domain.streams): safe in a stream id and a Cosmos DB item id.
_ASSIGNMENT_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class InvalidAssignmentId(ValueError):
    def __init__(self, assignment_id: object) -> None:
        self.assignment_id = assignment_id
        super().__init__(
            f"invalid assignment id {assignment_id!r}: 1-64 characters of letters, digits, '.', '_',"
            " '-', starting with a letter or digit"
        )


def validate_assignment_id(assignment_id: str) -> str:
    if not isinstance(assignment_id, str) or not _ASSIGNMENT_ID.match(assignment_id):
        raise InvalidAssignmentId(assignment_id)
    return assignment_id


def assignment_stream_id(assignment_id: str) -> str:
    return f"{ASSIGNMENT_CATEGORY}:{validate_assignment_id(assignment_id)}"


@dataclass(frozen=True, slots=True)
class EncryptedField(Payload):
    """One personal field as stored: AES-GCM ciphertext (with its tag) and nonce, both base64."""

    key_id: str  # the data key in the key store; the key itself is never in an event
    nonce: str
    ciphertext: str
    algorithm: str = AES_256_GCM

    def _check(self) -> None:
        if self.algorithm != AES_256_GCM:
            self._fail(f"unsupported algorithm {self.algorithm!r} (this code reads {AES_256_GCM})")
        if not self.key_id:
            self._fail("key_id must not be empty")


@dataclass(frozen=True, slots=True)
class MeterAssigned(DomainEvent):
    """A meter was assigned to a customer; the customer's fields are encrypted (crypto-shreddable)."""

    TYPE: ClassVar[str] = "MeterAssigned"
    SCHEMA_VERSION: ClassVar[int] = 1

    meter_id: str
    assignment_id: str
    assigned_at: datetime
    postal_code: EncryptedField
    house_number: EncryptedField
    activation_code: EncryptedField

    def _check(self) -> None:
        DomainEvent._check(self)
        validate_assignment_id(self.assignment_id)

    @classmethod
    def id_for(cls, meter_id: str, assignment_id: str) -> str:
        """The event id of the assignment, known before its fields are encrypted."""
        return event_id(cls.TYPE, meter_id, assignment_id)

    def _id_parts(self) -> tuple[str, ...]:
        return (self.assignment_id,)


@dataclass(frozen=True, slots=True)
class PersonalDataErased(DomainEvent):
    """The data key of an assignment was destroyed: its personal fields read as erased from now on.

    Records that the right to erasure was honoured, and when; it names the erased fields, never
    their values.
    """

    TYPE: ClassVar[str] = "PersonalDataErased"
    SCHEMA_VERSION: ClassVar[int] = 1

    meter_id: str
    assignment_id: str
    key_id: str
    erased_at: datetime
    fields: tuple[str, ...]

    def _id_parts(self) -> tuple[str, ...]:
        # One erasure per assignment: a retried forget is the same fact.
        return (self.assignment_id,)


EVENT_CLASSES: tuple[type[DomainEvent], ...] = (MeterAssigned, PersonalDataErased)
"""The event types of assignment streams; ``gateway.domain.mapper`` registers them."""

__all__ = [
    "AES_256_GCM", "ASSIGNMENT_CATEGORY", "EVENT_CLASSES", "PERSONAL_FIELDS", "EncryptedField",
    "InvalidAssignmentId", "MeterAssigned", "PersonalDataErased", "assignment_stream_id", "validate_assignment_id",
]
