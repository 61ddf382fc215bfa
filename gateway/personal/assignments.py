"""Command handling for customer assignments: assign a meter (personal fields encrypted), forget.

``assign`` reserves the meter id and the activation code in the unique index, makes the
assignment's data key, encrypts postal code, house number and activation code with it, appends one
``MeterAssigned`` event to the new stream ``Assignment:<assignment id>`` and confirms the
reservation; if the append fails the reservation is released and the unused key destroyed (unless
the event turns out to be stored after all, then it is confirmed; see ``unique_index``).

``forget`` destroys the key first and only then appends ``PersonalDataErased``: once the key is
gone nothing can bring the fields back, and a crash between the two steps is repaired by running
``forget`` again (both steps are idempotent). It then frees the assignment's unique-index rows.

``load`` gives the assignment with its fields decrypted, or ``ERASED`` once forgotten. The meter's
own streams (its readings) are never touched.
"""
from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Final

import anyio

from gateway.domain.mapper import decode, to_new_event
from gateway.personal.crypto import ERASED, PersonalDataError, PersonalValue, encrypt_field, reveal
from gateway.personal.events import (
    PERSONAL_FIELDS,
    MeterAssigned,
    PersonalDataErased,
    assignment_stream_id,
    validate_assignment_id,
)
from gateway.personal.keys import KeyStore, KeyStoreError
from gateway.personal.unique_index import (
    UniqueIndexError,
    Reservation,
    UniqueIndex,
    UniqueValue,

)
from gateway.store import (
    NO_STREAM,
    EventMetadata,
    EventStore,
    StoreError,
    StreamNotFound,
    WrongExpectedVersion,
)
from gateway.domain.streams import validate_meter_id

# Without 0/O and 1/I/L: a code is read aloud and typed in by a customer.
_CODE_ALPHABET: Final[str] = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
GENERATED_CODE_LENGTH: Final[int] = 12
_POSTAL_CODE: Final = re.compile(r"^[A-Z0-9][A-Z0-9 -]{0,15}$")
_HOUSE_NUMBER: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 /-]{0,15}$")
_ACTIVATION_CODE: Final = re.compile(r"^[A-Z0-9]{6,32}$")


class AssignmentError(PersonalDataError):
    """Base of the errors of assignment commands."""


class InvalidPersonalData(AssignmentError, ValueError):
    """A personal field does not have its expected form. The value itself is not repeated (errors
    end up in logs; personal data must not)."""

    def __init__(self, field_name: str, rule: str) -> None:
        self.field_name = field_name
        super().__init__(f"invalid {field_name.replace('_', ' ')}: {rule}")


class AssignmentNotFound(AssignmentError):
    def __init__(self, assignment_id: str) -> None:
        self.assignment_id = assignment_id
        super().__init__(f"no assignment {assignment_id!r} in the event store")


def normalize_postal_code(text: str) -> str:
    value = " ".join(text.split()).upper()
    if not _POSTAL_CODE.match(value):
        raise InvalidPersonalData("postal_code", "1-16 letters, digits, spaces or '-'")
    return value


def normalize_house_number(text: str) -> str:
    value = " ".join(text.split())
    if not _HOUSE_NUMBER.match(value):
        raise InvalidPersonalData("house_number", "1-16 letters, digits, spaces, '/' or '-'")
    return value


def normalize_activation_code(text: str) -> str:
    value = "".join(text.split()).upper()
    if not _ACTIVATION_CODE.match(value):
        raise InvalidPersonalData("activation_code", "6-32 letters or digits")
    return value


def generate_activation_code() -> str:
    return "".join(secrets.choice(_CODE_ALPHABET) for _ in range(GENERATED_CODE_LENGTH))


@dataclass(frozen=True, slots=True)
class Assigned:
    assignment_id: str
    stream_id: str
    meter_id: str
    activation_code: str = field(repr=False)  # to hand to the customer; personal data
    code_generated: bool


@dataclass(frozen=True, slots=True)
class Assignment:
    assignment_id: str
    meter_id: str
    assigned_at: datetime
    postal_code: PersonalValue
    house_number: PersonalValue
    activation_code: PersonalValue
    erased_at: datetime | None  # when PersonalDataErased was recorded

    @property
    def erased(self) -> bool:
        return self.erased_at is not None


@dataclass(frozen=True, slots=True)
class Forgotten:
    assignment_id: str
    key_destroyed_now: bool  # False: the key was already gone (a repeated forget)
    erasure_recorded_now: bool  # False: PersonalDataErased was already in the stream
    index_entries_released: int


class Assignments:
    """Assign meters to customers and forget customers, on one store, key store and index."""

    def __init__(self, store: EventStore, keys: KeyStore, index: UniqueIndex, gateway_id: str,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.store = store
        self.keys = keys
        self.index = index
        self.gateway_id = gateway_id
        self._clock = clock

    def _metadata(self, assignment_id: str) -> EventMetadata:
        return EventMetadata(
            gateway_id=self.gateway_id, recorded_at=self._clock(), correlation_id=assignment_id
        )

    async def assign(self, meter_id: str, postal_code: str, house_number: str,
                     activation_code: str | None = None, assignment_id: str | None = None) -> Assigned:
        validate_meter_id(meter_id)
        fields = {
            "postal_code": normalize_postal_code(postal_code),
            "house_number": normalize_house_number(house_number),
            "activation_code": (
                generate_activation_code() if activation_code is None
                else normalize_activation_code(activation_code)
            ),
        }
        assignment_id = validate_assignment_id(assignment_id or str(uuid.uuid4()))
        stream = assignment_stream_id(assignment_id)
        event_id = MeterAssigned.id_for(meter_id, assignment_id)

        await self.index.sweep(self.store)  # expired reservations of crashed commands first
        reservation = await self.index.reserve(
            (UniqueValue("meter_id", meter_id), UniqueValue("activation_code", fields["activation_code"])),
            owner=assignment_id, stream_id=stream, event_id=event_id,
        )
        key_made = False
        try:
            key = await self.keys.create(assignment_id)
            key_made = True
            event = MeterAssigned(
                meter_id=meter_id,
                assignment_id=assignment_id,
                assigned_at=self._clock(),
                **{name: encrypt_field(key, name, value) for name, value in fields.items()},
            )
            await self.index.hold(reservation)
            await self.store.append(stream, [to_new_event(event, self._metadata(assignment_id))], NO_STREAM)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._undo(reservation, key_made)
            raise
        await self.index.confirm(reservation)
        return Assigned(assignment_id, stream, meter_id, fields["activation_code"],
                        code_generated=activation_code is None)

    async def _undo(self, reservation: Reservation, key_made: bool) -> None:
        """After a failed append: confirm if the event is stored after all, else release."""
        try:
            events = await self.store.load(reservation.stream_id)
        except StreamNotFound:
            events = []
        except StoreError:
            return  # cannot tell now; the reservation expires and the sweeper decides
        if any(e.event_id == reservation.event_id for e in events):
            await self.index.confirm(reservation)
            return
        await self.index.release(reservation)
        if key_made:
            await self.keys.destroy(reservation.owner)

    async def _events(self, assignment_id: str) -> tuple[int, MeterAssigned, PersonalDataErased | None]:
        """(stream head, the assignment event, the erasure event if any)."""
        stream = assignment_stream_id(assignment_id)
        try:
            recorded = await self.store.load(stream)
        except StreamNotFound:
            raise AssignmentNotFound(assignment_id) from None
        decoded = [decode(r) for r in recorded]
        assigned = next((e for e in decoded if isinstance(e, MeterAssigned)), None)
        if assigned is None:
            raise AssignmentNotFound(assignment_id)
        erased = next((e for e in decoded if isinstance(e, PersonalDataErased)), None)
        return recorded[-1].version, assigned, erased

    async def load(self, assignment_id: str) -> Assignment:
        _, assigned, erased = await self._events(assignment_id)
        values: dict[str, PersonalValue] = {}
        for name in PERSONAL_FIELDS:
            # Once erasure is recorded the key is gone (it is destroyed first): no need to ask.
            values[name] = ERASED if erased is not None else await reveal(
                self.keys, name, getattr(assigned, name), assignment_id
            )
        return Assignment(
            assignment_id=assignment_id,
            meter_id=assigned.meter_id,
            assigned_at=assigned.assigned_at,
            erased_at=None if erased is None else erased.erased_at,
            **values,
        )

    async def forget(self, assignment_id: str) -> Forgotten:
        """Destroy the assignment's key, record PersonalDataErased, free its unique values."""
        head, assigned, erased = await self._events(assignment_id)
        destroyed_now = await self.keys.destroy(assignment_id)
        recorded_now = False
        if erased is None:
            event = PersonalDataErased(
                meter_id=assigned.meter_id,
                assignment_id=assignment_id,
                key_id=assigned.postal_code.key_id,
                erased_at=self._clock(),
                fields=PERSONAL_FIELDS,
            )
            try:
                result = await self.store.append(
                    assignment_stream_id(assignment_id),
                    [to_new_event(event, self._metadata(assignment_id))],
                    head,
                )
                recorded_now = not result.already_done
            except WrongExpectedVersion:
                # Another forget (or a later event) got in first; fine if the erasure is recorded.
                _, _, erased = await self._events(assignment_id)
                if erased is None:
                    raise
        released = await self.index.release_owner(assignment_id)
        return Forgotten(assignment_id, destroyed_now, recorded_now, released)



PERSONAL_DATA_FAILURES = (AssignmentError, PersonalDataError, KeyStoreError, UniqueIndexError, StoreError)
"""What an operation on assignments may fail with (a command reports it and exits 1)."""

__all__ = [
    "GENERATED_CODE_LENGTH", "Assigned", "Assignment", "AssignmentError", "AssignmentNotFound",
    "Assignments", "Forgotten", "InvalidPersonalData", "PERSONAL_DATA_FAILURES",
    "generate_activation_code", "normalize_activation_code",
    "normalize_house_number", "normalize_postal_code",
]
