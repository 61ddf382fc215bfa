"""The protocol decisions of a DLMS/COSEM client association, sans-IO: bytes in, events out.

``ClientAssociation`` holds dlms-cosem's ``DlmsConnection`` (APDU encoding, association state) and
our own state around it (invoke-ids, the block transfer under way, stale answers, whether the
association is still usable). Its request methods return the bytes to send; ``receive`` takes one
answer APDU and returns one ``Event`` or raises a typed ``DriverError``. It never awaits, never
touches a socket and reads no clock, so any I/O edge can drive it (``drivers.session.DlmsSession``
under anyio) and its tests are lists of bytes. The client invocation counter is read from it
(``client_invocation_counter``) by the edge, which reserves counters in its store before asking
for the next request.

No meter bytes reach a dlms-cosem parser unchecked: ciphered answers are deciphered here, once;
GET, SET and ACTION answers are parsed by our bounded decoding layer only; the other xDLMS answers
(HLS reply, errors) are validated by it before dlms-cosem parses them; ACSE answers (BER, parsed by dlms-cosem)
must fill exactly their announced length and stay under a size bound. What dlms-cosem still parses
runs under a CPU-time bound (``drivers.untrusted``).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from dlms_cosem import cosem, dlms_data, enumerations, exceptions as dlms_exceptions
from dlms_cosem import state as dlms_state
from dlms_cosem.connection import DlmsConnection, DlmsConnectionSettings, ProtectionError
from dlms_cosem.cosem.selective_access import RangeDescriptor
from dlms_cosem.protocol import acse, xdlms
from dlms_cosem.protocol.xdlms.base import AbstractXDlmsApdu
from dlms_cosem.protocol.xdlms.conformance import Conformance
from dlms_cosem.protocol.xdlms.invoke_id_and_priority import InvokeIdAndPriority
from dlms_cosem.security import (
    HighLevelSecurityGmacAuthentication,
    LowLevelSecurityAuthentication,
    NoSecurityAuthentication,
)

from drivers.decode import apdu as decode_layer
from drivers.decode.axdr import decode_length, encode_length
from drivers.decode.cipher import CIPHERED_TAGS, SecurityKeys, decipher, parse_ciphered
from drivers.decode.errors import DecodeLayerError, DecryptionError
from drivers.decode.get_reply import GetReply, parse_get_reply, parse_list_results
from drivers.decode.set_action_reply import ActionReply, SetReply, parse_action_reply, parse_set_reply
from drivers.errors import (
    AccessDenied,
    AssociationRejected,
    AuthenticationFailed,
    ConfigError,
    ConnectionLost,
    DataAccessRefused,
    DecodeError,
    DriverError,
    ServiceError,
    UnreadableAnswer,
)
from drivers.logging import redact
from drivers.security import HlsGmacSecurity, LowLevelSecurity, NoSecurity, SecuritySettings
from drivers.untrusted import cpu_bound

# Association LN "current association" object; method 1 is reply_to_HLS_authentication.
CURRENT_ASSOCIATION = cosem.Obis(0, 0, 40, 0, 0, 255)

_AUTH_DIAGNOSTICS = {
    enumerations.AcseServiceUserDiagnostics.AUTHENTICATION_FAILED,
    enumerations.AcseServiceUserDiagnostics.AUTHENTICATION_REQUIRED,
    enumerations.AcseServiceUserDiagnostics.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNIZED,
    enumerations.AcseServiceUserDiagnostics.AUTHENTICATION_MECHANISM_NAME_REQUIRED,
}

# Exceptions dlms-cosem raises on malformed or unexpected bytes (measured: IndexError on short or
# exception APDUs, KeyError on unknown tags, ValueError/AssertionError in field parsers).
_LIBRARY_DECODE_ERRORS = (
    ValueError,
    IndexError,
    KeyError,
    TypeError,
    AssertionError,
    AttributeError,
    NotImplementedError,
    dlms_exceptions.LocalDlmsProtocolError,
    dlms_exceptions.ApplicationAssociationError,
    dlms_exceptions.ConformanceError,
)
_LIBRARY_CIPHER_ERRORS = (
    InvalidTag,
    ProtectionError,
    dlms_exceptions.CryptographyError,
    dlms_exceptions.CipheringError,
)
MAX_STALE_ANSWERS = 8
_STALE = object()  # _decode's answer for a reply meant for an earlier request
_ACSE_ANSWERS = (acse.ApplicationAssociationResponse.TAG, acse.ReleaseResponse.TAG)
# An AARE/RLRE is a few dozen bytes (a ciphered AARE ~100); anything far larger is not one.
_MAX_ACSE_BYTES = 1024
# One GET's answer, all its blocks together. A day of one-minute load profile is ~100 KB; this bound
# only keeps a meter that never stops sending blocks from taking the box's memory.
DEFAULT_MAX_TRANSFER_BYTES = 4 * 1024 * 1024


# -- events ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Associated:
    """The association is ready for requests."""


@dataclass(frozen=True)
class NeedsHlsReply:
    """The AARE accepted an HLS association: send ``hls_reply()`` (it uses one invocation counter)."""


@dataclass(frozen=True)
class Value:
    """The A-XDR bytes of the attribute asked by ``get`` (all blocks together)."""

    data: bytes


@dataclass(frozen=True)
class ListValues:
    """Per attribute asked by ``get_with_list``, its A-XDR bytes or the meter's refusal."""

    values: tuple[bytes | AccessDenied, ...]


@dataclass(frozen=True)
class NeedNextBlock:
    """A block arrived in order and more follow: send ``next_block()``."""

    block_number: int


@dataclass(frozen=True)
class Refused:
    """The meter refused the whole request with a data-access (or action) result; the association
    stays usable."""

    error: DataAccessRefused


@dataclass(frozen=True)
class Stale:
    """An answer meant for an earlier request (a late duplicate): dropped, keep waiting.

    ``invoke_id`` is the answer's, ``expected`` ours (equal for an earlier block of our transfer);
    the edge counts them, since a meter that only ever answers with a foreign invoke-id looks like a
    silent one otherwise."""

    invoke_id: int | None = field(default=None, compare=False)
    expected: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Released:
    """The meter answered the RLRQ."""


@dataclass(frozen=True)
class Written:
    """The meter accepted the SET (all its blocks)."""


@dataclass(frozen=True)
class NeedNextSetBlock:
    """The meter acknowledged a block of a SET with block transfer: send ``next_set_block()``."""

    block_number: int


@dataclass(frozen=True)
class Acted:
    """The meter carried out the ACTION; ``data``: the A-XDR bytes of its return parameters, if any."""

    data: bytes | None = None


Event = (Associated | NeedsHlsReply | Value | ListValues | NeedNextBlock | Refused | Stale | Released | Written
         | NeedNextSetBlock | Acted)

# A refusal of a SET or ACTION with one of these results is about the client's rights.
_DENIED = frozenset({enumerations.DataAccessResult.READ_WRITE_DENIED, enumerations.DataAccessResult.SCOPE_OF_ACCESS_VIOLATED})
# Bytes a block of SET-Request-With-(First-)Datablock adds around its raw data: C1 02 iid, attribute
# descriptor (9), access selection (1), last-block, block number (4), length (up to 3).
_SET_BLOCK_HEADER = 22
# What general-glo-ciphering adds: tag, title length, title (8), length (up to 3), SC, IC (4), tag (12).
_CIPHER_OVERHEAD = 30


@dataclass
class _Pending:
    phase: str  # "association", "hls", "get" or "release": the word error messages use
    request: Any
    stale: int = 0
    stale_ids: set[int] = field(default_factory=set)  # invoke-ids of the stale answers


@dataclass
class _Transfer:
    """What a GET (or GET with list) asked for, and the blocks of its answer so far."""

    what: str
    attribute: str = ""  # the attribute a plain GET asked, as messages name it
    selections: tuple[cosem.CosemAttributeWithSelection, ...] | None = None  # None: a plain GET
    data: bytearray = field(default_factory=bytearray)
    expected_block: int = 1
    last: GetReply | None = None


@dataclass(frozen=True)
class SetRequestBlock(AbstractXDlmsApdu):
    """Set-Request-With-First-Datablock (``attribute`` given) or Set-Request-With-Datablock: one
    block of a SET value too large for one APDU (IEC 62056-5-3 9.3.9). dlms-cosem 25.1.0 declares
    these classes but cannot encode them."""

    invoke_id_and_priority: InvokeIdAndPriority
    block_number: int
    last_block: bool
    raw_data: bytes
    attribute: cosem.CosemAttribute | None = None

    TAG = 0xC1

    @classmethod
    def from_bytes(cls, source_bytes: bytes) -> SetRequestBlock:  # pragma: no cover - a client never parses it
        raise NotImplementedError("client side only")

    def to_bytes(self) -> bytes:
        head = bytes((self.TAG, 2 if self.attribute is not None else 3)) + self.invoke_id_and_priority.to_bytes()
        if self.attribute is not None:
            head += self.attribute.to_bytes() + b"\x00"  # no selective access
        return (head + bytes((1 if self.last_block else 0,)) + self.block_number.to_bytes(4, "big")
                + encode_length(len(self.raw_data)) + self.raw_data)


@dataclass
class _SetBlocks:
    """A SET with block transfer under way: the blocks to send and how many went."""

    what: str
    attribute: cosem.CosemAttribute
    invoke: InvokeIdAndPriority
    blocks: tuple[bytes, ...]
    sent: int = 0


def client_conformance(ciphered: bool, set_block_transfer: bool = False) -> Conformance:
    """What we propose in the AARQ. General block transfer is left out on purpose: dlms-cosem
    cannot parse GBT answers, and a meter may use it if we offer it. Block transfer with SET is
    proposed only when asked (``set_block_transfer``): no value we write needs it today (a clock
    SET is 27 bytes), and the AARQ of every recorded session stays as it was."""
    return Conformance(
        general_protection=ciphered,
        general_block_transfer=False,
        block_transfer_with_get_or_read=True,
        block_transfer_with_set_or_write=set_block_transfer,
        multiple_references=True,
        get=True,
        set=True,
        selective_access=True,
        action=True,
        priority_management_supported=True,
    )


class ClientAssociation:
    """One client association's protocol state: ``associate()`` -> bytes, ``receive(answer)`` -> event."""

    def __init__(
        self,
        meter_id: str,
        security: SecuritySettings | None = None,
        *,
        use_release: bool = True,
        max_pdu_size: int = 0xFFFF,
        first_invocation_counter: int = 0,
        client_system_title: bytes | None = None,
        challenge_factory: Callable[[int], bytes] | None = None,
        max_transfer_bytes: int = DEFAULT_MAX_TRANSFER_BYTES,
        set_block_transfer: bool = False,
    ) -> None:
        self.meter_id = meter_id
        self.set_block_transfer = set_block_transfer
        self.security: SecuritySettings = security if security is not None else NoSecurity()
        self.use_release = use_release
        self.max_transfer_bytes = max_transfer_bytes
        self._secrets = self.security.secret_values()
        self.connection = self._new_connection(
            first_invocation_counter, max_pdu_size, client_system_title, challenge_factory
        )
        self._invoke_id = 0
        self._pending: _Pending | None = None
        self._transfer: _Transfer | None = None
        self._set_blocks: _SetBlocks | None = None
        self._what = ""  # the SET or ACTION under way, as messages name it
        self._broken = False
        self._associated = False
        self._counter_hint: int | None = None
        self._stale_ids = (0, 0)  # (the answer's invoke-id, ours) of the last stale answer

    # -- state the I/O edge reads ----------------------------------------------------------------

    @property
    def client_invocation_counter(self) -> int:
        """The counter the next ciphered request will use (the edge reserves ahead of it)."""
        return self.connection.client_invocation_counter

    @property
    def ciphered(self) -> bool:
        return bool(self.connection.use_protection)

    @property
    def usable(self) -> bool:
        """True while the association can take another request."""
        return self._associated and not self._broken

    @property
    def retry_needs_new_bytes(self) -> bool:
        """A retransmission of the pending request over a link without its own retransmission must
        be ``reprotect()``ed: the meter refuses a replayed invocation counter. ACSE requests and
        plaintext requests go again as they were."""
        pending = self._pending
        return (
            pending is not None
            and self.ciphered
            and not isinstance(pending.request, (acse.ApplicationAssociationRequest, acse.ReleaseRequest))
        )

    def take_invocation_counter_hint(self) -> int | None:
        """The client invocation counter the meter said it expects (an exception response), once."""
        hint, self._counter_hint = self._counter_hint, None
        return hint

    def mark_broken(self) -> None:
        """The edge lost the exchange (timeout, closed link): no further request on this association."""
        self._broken = True

    def check_ready(self) -> None:
        if self._broken:
            raise ConnectionLost(self.meter_id, "the association failed earlier; open a new session")
        if not self._associated or self.connection.state.current_state != dlms_state.READY:
            raise ConnectionLost(self.meter_id, "not associated")

    # -- requests ------------------------------------------------------------------------------

    def associate(self) -> bytes:
        """The AARQ."""
        self._broken = False
        return self._send("association", self.connection.get_aarq())

    def hls_reply(self) -> bytes:
        """The reply to the meter's HLS challenge (after ``NeedsHlsReply``)."""
        connection = self.connection
        try:
            reply_data = connection.authentication.hls_generate_reply_data(connection)
        except _LIBRARY_DECODE_ERRORS + _LIBRARY_CIPHER_ERRORS as exc:
            self._broken = True
            raise AuthenticationFailed(self.meter_id, "cannot answer the meter's HLS challenge") from exc
        request = xdlms.ActionRequestNormal(
            cosem_method=cosem.CosemMethod(enumerations.CosemInterface.ASSOCIATION_LN, CURRENT_ASSOCIATION, 1),
            data=dlms_data.OctetStringData(reply_data).to_bytes(),
        )
        return self._send("hls", request)

    def get(self, attribute: cosem.CosemAttribute, access: RangeDescriptor | None = None) -> bytes:
        """GET normal of one attribute; answered by ``Value``, ``Refused`` or ``NeedNextBlock``."""
        self.check_ready()
        self._transfer = _Transfer(what=f"GET {describe(attribute)}", attribute=describe(attribute))
        return self._send(
            "get",
            xdlms.GetRequestNormal(
                cosem_attribute=attribute, access_selection=access, invoke_id_and_priority=self._next_invoke_id()
            ),
        )

    def get_with_list(
        self, attributes: Sequence[cosem.CosemAttribute | cosem.CosemAttributeWithSelection]
    ) -> bytes:
        """GET with list; answered by ``ListValues``, ``Refused`` or ``NeedNextBlock``."""
        self.check_ready()
        selections = tuple(
            item if isinstance(item, cosem.CosemAttributeWithSelection) else cosem.CosemAttributeWithSelection(item, None)
            for item in attributes
        )
        self._transfer = _Transfer(what="GET with list", selections=selections)
        return self._send(
            "get",
            xdlms.GetRequestWithList(
                cosem_attributes_with_selection=list(selections), invoke_id_and_priority=self._next_invoke_id()
            ),
        )

    def next_block(self) -> bytes:
        """The request for the block after the last one received (after ``NeedNextBlock``)."""
        transfer = self._transfer
        if transfer is None or transfer.last is None:
            raise ConnectionLost(self.meter_id, "no block transfer under way")
        last = transfer.last
        return self._send(
            "get",
            xdlms.GetRequestNext(
                block_number=last.block_number,
                invoke_id_and_priority=InvokeIdAndPriority.from_bytes(bytes((last.invoke_id,))),
            ),
        )

    @property
    def max_pdu_size(self) -> int:
        """The largest APDU the meter takes (its server-max-receive-pdu-size once associated)."""
        return int(self.connection.max_pdu_size)

    def set(self, attribute: cosem.CosemAttribute, value: bytes) -> bytes:
        """SET of one attribute to ``value`` (its A-XDR bytes); answered by ``Written``, ``Refused``
        or, when the value needs block transfer, ``NeedNextSetBlock`` per acknowledged block."""
        self.check_ready()
        if not value:
            raise DecodeError(self.meter_id, "a SET needs a value (A-XDR bytes)")
        what = f"SET {describe(attribute)}"
        self._what, self._set_blocks = what, None
        invoke = self._next_invoke_id()
        normal = xdlms.SetRequestNormal(cosem_attribute=attribute, data=value, invoke_id_and_priority=invoke)
        overhead = _CIPHER_OVERHEAD if self.ciphered else 0
        if len(normal.to_bytes()) + overhead <= self.max_pdu_size:
            return self._send("set", normal)
        negotiated = getattr(self.connection.conformance, "block_transfer_with_set_or_write", False)
        if not (self.set_block_transfer and negotiated):
            # Raised before anything is sent: the association stays usable.
            raise ConfigError(
                self.meter_id,
                f"{what}: {len(normal.to_bytes()) + overhead} bytes exceed the meter's PDU size "
                f"{self.max_pdu_size} and block transfer with SET was not negotiated",
            )
        size = max(16, self.max_pdu_size - _SET_BLOCK_HEADER - overhead)
        blocks = tuple(value[i:i + size] for i in range(0, len(value), size))
        self._set_blocks = _SetBlocks(what, attribute, invoke, blocks)
        return self._send_set_block()

    def next_set_block(self) -> bytes:
        """The next block of the SET under way (after ``NeedNextSetBlock``)."""
        if self._set_blocks is None or self._set_blocks.sent >= len(self._set_blocks.blocks):
            raise ConnectionLost(self.meter_id, "no SET block transfer under way")
        return self._send_set_block()

    def action(self, method: cosem.CosemMethod, parameters: bytes | None = None) -> bytes:
        """ACTION normal of one method with ``parameters`` (A-XDR bytes, None: no parameters);
        answered by ``Acted`` or ``Refused``."""
        self.check_ready()
        self._what = f"ACTION {describe_method(method)}"
        self._set_blocks = None
        return self._send("action", xdlms.ActionRequestNormal(
            cosem_method=method, data=parameters, invoke_id_and_priority=self._next_invoke_id(),
        ))

    def _send_set_block(self) -> bytes:
        transfer = self._set_blocks
        assert transfer is not None
        number = transfer.sent + 1
        request = SetRequestBlock(
            invoke_id_and_priority=transfer.invoke, block_number=number,
            last_block=number == len(transfer.blocks), raw_data=transfer.blocks[number - 1],
            attribute=transfer.attribute if number == 1 else None,
        )
        transfer.sent = number
        # dlms-cosem's state machine knows no SET blocks: it is moved here, as for GET answers.
        self.connection.state.current_state = dlms_state.AWAITING_SET_RESPONSE
        self._pending = _Pending("set", request)
        try:
            out = self.connection.protect(request).to_bytes() if self.ciphered else request.to_bytes()
        except Exception as exc:  # noqa: BLE001 - dlms-cosem encoders raise assorted types
            self._broken = True
            raise DecodeError(self.meter_id, f"cannot encode a SET block: {self._safe(exc)}") from exc
        return fix_ciphered_length(out)

    def release(self) -> bytes | None:
        """The RLRQ, or None for a meter configured without release (the association ends locally)."""
        self.check_ready()
        self._associated = False
        if not self.use_release:
            return None
        try:
            return self._send("release", self.connection.get_rlrq())
        except dlms_exceptions.NoRlrqRlreError:
            return None

    def reprotect(self) -> bytes:
        """The pending request ciphered again under the next invocation counter (see ``retry_needs_new_bytes``)."""
        assert self._pending is not None
        request = self._pending.request
        try:
            return fix_ciphered_length(self.connection.protect(request).to_bytes())
        except Exception as exc:  # noqa: BLE001 - dlms-cosem encoders raise assorted types
            self._broken = True
            error = DecodeError(self.meter_id, f"cannot re-encode {type(request).__name__}: {self._safe(exc)}")
            raise self._in_phase(error, self._pending.phase) from exc

    # -- answers -------------------------------------------------------------------------------

    def receive(self, apdu: bytes) -> Event:
        """One answer APDU (plaintext or ciphered, as the transport delivered it) for the pending request."""
        pending = self._pending
        if pending is None:
            self._broken = True
            raise DecodeError(self.meter_id, "an answer arrived with no request pending")
        try:
            reply = self._decode(apdu, pending.phase, pending.request)
            if reply is _STALE:
                got, expected = self._stale_ids
                pending.stale += 1
                pending.stale_ids.add(got)
                if pending.stale > MAX_STALE_ANSWERS:
                    raise DecodeError(self.meter_id, f"only stale answers during {pending.phase} ({pending.stale} "
                                      f"with invoke-id(s) {sorted(pending.stale_ids)}, ours {expected})")
                return Stale(got, expected)
            if isinstance(reply, xdlms.ExceptionResponse):
                self._note_counter_hint(reply)
                raise ServiceError(
                    self.meter_id,
                    f"exception response to {pending.phase}: {reply.state_error.name}/{reply.service_error.name}",
                )
        except UnreadableAnswer:
            if isinstance(pending.request, xdlms.GetRequestNext):
                self._broken = True  # the meter is in the middle of a transfer we cannot follow
            raise
        except DriverError as exc:
            self._broken = True
            mapped = self._in_phase(exc, pending.phase)
            if mapped is exc:
                raise
            raise mapped from exc
        if pending.phase == "association":
            return self._association_answer(reply)
        if pending.phase == "hls":
            return self._hls_answer(reply)
        if pending.phase == "release":
            if not isinstance(reply, acse.ReleaseResponse):
                raise ServiceError(self.meter_id, f"expected a release response, got {type(reply).__name__}")
            return Released()
        if pending.phase == "set":
            if not isinstance(reply, SetReply):
                raise self._unexpected(reply)
            return self._set_answer(reply)
        if pending.phase == "action":
            if not isinstance(reply, ActionReply):
                raise self._unexpected(reply)
            return self._action_answer(reply)
        if not isinstance(reply, GetReply):
            raise self._unexpected(reply)
        return self._get_answer(reply)

    def _set_answer(self, reply: SetReply) -> Event:
        transfer = self._set_blocks
        if transfer is None:
            if reply.kind != "normal":
                self._broken = True
                raise DecodeError(self.meter_id, f"{self._what}: a {reply.kind} answer to a SET normal")
            return self._set_result(reply.result)
        if reply.kind == "normal":
            # A meter may end a SET with block transfer early with a Set-Response-Normal refusal.
            self._set_blocks = None
            if reply.result == 0:
                self._broken = True
                raise DecodeError(self.meter_id, f"{self._what}: success before all blocks were sent")
            return self._set_result(reply.result)
        if reply.block_number != transfer.sent:
            self._broken = True
            raise DecodeError(
                self.meter_id, f"{self._what}: block {reply.block_number} acknowledged, block {transfer.sent} was sent"
            )
        last = transfer.sent == len(transfer.blocks)
        if reply.kind == "block":
            if last:
                self._broken = True
                raise DecodeError(self.meter_id, f"{self._what}: the last block was acknowledged as not last")
            return NeedNextSetBlock(reply.block_number)
        if not last and reply.result == 0:
            self._broken = True
            raise DecodeError(self.meter_id, f"{self._what}: success after block {transfer.sent} of {len(transfer.blocks)}")
        self._set_blocks = None
        return self._set_result(reply.result)

    def _set_result(self, code: int | None) -> Event:
        if code == 0:
            return Written()
        assert code is not None
        name = access_result_name(code)
        return Refused(self._refusal(code, f"{self._what} refused: {name}", name))

    def _action_answer(self, reply: ActionReply) -> Event:
        if reply.result != 0:
            name = action_result_name(reply.result)
            return Refused(self._refusal(reply.result, f"{self._what} refused: {name}", name))
        if reply.data_result is not None:
            name = access_result_name(reply.data_result)
            return Refused(DataAccessRefused(
                self.meter_id, f"{self._what}: done, but its return parameters were refused: {name}", result=name,
            ))
        return Acted(reply.data)

    def _refusal(self, code: int, message: str, name: str) -> DataAccessRefused:
        kind = AccessDenied if code in _DENIED else DataAccessRefused
        return kind(self.meter_id, message, result=name)

    def _association_answer(self, reply: Any) -> Event:
        if not isinstance(reply, acse.ApplicationAssociationResponse):
            self._broken = True
            raise AssociationRejected(self.meter_id, f"expected an AARE, got {type(reply).__name__}")
        if reply.result is not enumerations.AssociationResult.ACCEPTED:
            self._broken = True
            diagnostic = reply.result_source_diagnostics
            diagnostic_name = getattr(diagnostic, "name", str(diagnostic))
            message = f"association {reply.result.name.lower()}: {diagnostic_name}"
            service_error = getattr(getattr(reply.user_information, "content", None), "error", None)
            if service_error is not None:
                message += f" ({getattr(service_error, 'name', service_error)})"
            # A ciphered AARQ the meter cannot decipher (wrong keys) comes back as a rejection with
            # a ConfirmedServiceError "deciphering error" (DLMS UA 1000-2 §9.3.2).
            if diagnostic in _AUTH_DIAGNOSTICS or "DECIPHER" in str(getattr(service_error, "name", "")):
                raise AuthenticationFailed(self.meter_id, message)
            if self.ciphered:
                # Many meters answer an AARQ ciphered with a key they do not hold with a bare
                # NO_REASON_GIVEN (no deciphering error): without this the operator has no lead.
                message += ("; the association is ciphered (HLS): a wrong encryption or authentication key "
                            "is refused like this, check the meter's keys")
            raise AssociationRejected(self.meter_id, message, diagnostic=diagnostic_name)
        state = self.connection.state.current_state
        if state == dlms_state.SHOULD_SEND_HLS_SEVER_CHALLENGE_RESULT:
            return NeedsHlsReply()
        if state != dlms_state.READY:
            self._broken = True
            raise AssociationRejected(self.meter_id, f"association not ready after AARE (state {state!r})")
        self._associated = True
        return Associated()

    def _hls_answer(self, reply: Any) -> Event:
        if self.connection.state.current_state != dlms_state.READY:
            self._broken = True
            detail = getattr(getattr(reply, "status", None), "name", type(reply).__name__)
            raise AuthenticationFailed(self.meter_id, f"HLS authentication failed ({detail})")
        self._associated = True
        return Associated()

    def _get_answer(self, reply: GetReply) -> Event:
        transfer = self._transfer
        assert transfer is not None and self._pending is not None
        if reply.kind == "block" or isinstance(self._pending.request, xdlms.GetRequestNext):
            return self._block(transfer, reply)
        if transfer.selections is None:
            if reply.kind != "normal":
                raise UnreadableAnswer(self.meter_id, f"a GET with list answer to a GET of {transfer.attribute}")
            (result,) = reply.results
            if isinstance(result, int):
                name = access_result_name(result)
                return Refused(AccessDenied(self.meter_id, f"{transfer.what} refused: {name}", result=name))
            return Value(result)
        if reply.kind == "list":
            return self._list_values(transfer.selections, reply.results)
        (result,) = reply.results
        if isinstance(result, int):
            name = access_result_name(result)
            return Refused(AccessDenied(self.meter_id, f"GET with list refused: {name}", result=name))
        raise UnreadableAnswer(self.meter_id, "a GET normal answer to a GET with list")

    def _block(self, transfer: _Transfer, reply: GetReply) -> Event:
        if reply.kind != "block":
            self._broken = True
            raise DecodeError(self.meter_id, f"{transfer.what}: a {reply.kind} answer in the middle of a block transfer")
        if reply.results:
            name = access_result_name(int(reply.results[0]))
            return Refused(AccessDenied(self.meter_id, f"{transfer.what}: block transfer aborted: {name}", result=name))
        if reply.block_number != transfer.expected_block:
            self._broken = True
            raise DecodeError(
                self.meter_id, f"block {reply.block_number} arrived, expected block {transfer.expected_block}"
            )
        transfer.data += reply.block_data
        if len(transfer.data) > self.max_transfer_bytes:
            self._broken = True
            raise DecodeError(
                self.meter_id, f"{transfer.what}: block transfer beyond {self.max_transfer_bytes} bytes, refused"
            )
        if not reply.last_block:
            transfer.expected_block += 1
            transfer.last = reply
            return NeedNextBlock(reply.block_number)
        data = bytes(transfer.data)
        if transfer.selections is None:
            return Value(data)
        # A long list answer comes as blocks whose concatenation is the list body.
        return self._list_values(transfer.selections, self._parse_list_body(data))

    def _list_values(
        self, selections: tuple[cosem.CosemAttributeWithSelection, ...], results: tuple[bytes | int, ...]
    ) -> ListValues:
        if len(results) != len(selections):
            raise UnreadableAnswer(self.meter_id, f"asked for {len(selections)} attributes, got {len(results)} answers")
        out: list[bytes | AccessDenied] = []
        for selection, result in zip(selections, results):
            if isinstance(result, int):
                name = access_result_name(result)
                out.append(AccessDenied(self.meter_id, f"GET {describe(selection.attribute)} refused: {name}", result=name))
            else:
                out.append(result)
        return ListValues(tuple(out))

    def _parse_list_body(self, raw: bytes) -> tuple[bytes | int, ...]:
        try:
            count, pos = decode_length(raw, 0)
            results, end = parse_list_results(raw, pos, count)
            if end != len(raw):
                raise decode_layer.DecodeError(f"{len(raw) - end} bytes left after the list")
        except DecodeLayerError as exc:
            raise UnreadableAnswer(self.meter_id, f"GET with list answer unreadable: {exc}") from None
        return results

    # -- encoding and decoding -------------------------------------------------------------------

    def _send(self, phase: str, request: Any) -> bytes:
        self._pending = _Pending(phase, request)
        try:
            return fix_ciphered_length(self.connection.send(request))
        except dlms_exceptions.NoRlrqRlreError:
            raise
        except Exception as exc:  # noqa: BLE001 - dlms-cosem encoders raise assorted types
            self._broken = True
            error = DecodeError(self.meter_id, f"cannot encode {type(request).__name__}: {self._safe(exc)}")
            raise self._in_phase(error, phase) from exc

    def _in_phase(self, error: DriverError, phase: str) -> DriverError:
        """A failure of the association or HLS exchange is said as such."""
        if phase == "association" and isinstance(error, (DecodeError, ServiceError)):
            return AssociationRejected(self.meter_id, f"association failed: {error.message}")
        if phase == "hls" and isinstance(error, DecodeError):
            return AuthenticationFailed(self.meter_id, "HLS: the meter's answer does not verify")
        if phase == "hls" and isinstance(error, ServiceError):
            return AuthenticationFailed(self.meter_id, f"HLS reply refused: {error.message}")
        return error

    def _next_invoke_id(self) -> InvokeIdAndPriority:
        # A different invoke-id per request lets a late duplicate answer (the meter answered both
        # the request and its retransmission) be recognised and dropped instead of being taken as
        # the answer to the next request.
        self._invoke_id = self._invoke_id % 15 + 1
        return InvokeIdAndPriority(invoke_id=self._invoke_id, confirmed=True, high_priority=True)

    def _decode(self, raw: bytes, phase: str, request: Any) -> Any:
        """One answer: ``_STALE`` (meant for an earlier request), a ``GetReply``, or a dlms-cosem APDU."""
        connection = self.connection
        if not raw:
            raise DecodeError(self.meter_id, "empty APDU")
        tag = raw[0]
        if tag == xdlms.ExceptionResponse.TAG:
            return self._exception_response(raw)
        if tag in _ACSE_ANSWERS:
            return self._library_parse(self._checked_acse(raw, phase), phase)
        counter = None
        if tag in CIPHERED_TAGS:
            plain, counter = self._decipher(raw, phase)
        elif connection.use_protection:
            raise AuthenticationFailed(self.meter_id, f"unprotected {phase} answer in a ciphered association")
        else:
            plain = raw
        if is_stale(plain, request):
            self._stale_ids = (plain[2] & 0x0F, request.invoke_id_and_priority.invoke_id)
            return _STALE
        if counter is not None:
            try:
                connection.update_meter_invocation_counter(counter)
            except dlms_exceptions.LocalDlmsProtocolError:
                raise AuthenticationFailed(
                    self.meter_id, f"replayed {phase} answer (the meter's invocation counter did not increase)"
                ) from None
        if plain[:1] == bytes((xdlms.ExceptionResponse.TAG,)):
            return self._exception_response(plain)
        if plain[:1] == bytes((xdlms.GetResponseNormal.TAG,)):
            return self._get_reply(plain)
        if plain[:1] == bytes((xdlms.SetResponseNormal.TAG,)) or (
            phase == "action" and plain[:1] == bytes((xdlms.ActionResponseNormal.TAG,))
        ):
            return self._set_or_action_reply(plain, phase)
        try:
            decode_layer.decode_apdu_exact(plain)
        except DecodeLayerError as exc:
            raise DecodeError(self.meter_id, f"undecodable {phase} answer: {exc}") from None
        return self._library_parse(plain, phase)

    def _get_reply(self, plain: bytes) -> GetReply:
        state = self.connection.state
        if state.current_state not in (dlms_state.AWAITING_GET_RESPONSE, dlms_state.AWAITING_GET_BLOCK_RESPONSE):
            raise DecodeError(self.meter_id, f"a GET answer arrived in state {state.current_state!r}")
        try:
            reply = parse_get_reply(plain)
        except DecodeLayerError as exc:
            # The answer is complete and meant for this request: this request fails, the next may
            # go ahead (dlms-cosem's state machine is told the exchange is over).
            state.current_state = dlms_state.READY
            raise UnreadableAnswer(self.meter_id, f"undecodable GET answer: {exc}") from None
        # dlms-cosem never sees the answer, so its state machine is moved as it would move itself.
        more_blocks = reply.kind == "block" and not reply.last_block and not reply.results
        state.current_state = dlms_state.SHOULD_ACK_LAST_GET_BLOCK if more_blocks else dlms_state.READY
        return reply

    def _set_or_action_reply(self, plain: bytes, phase: str) -> SetReply | ActionReply:
        state = self.connection.state
        expected = dlms_state.AWAITING_SET_RESPONSE if phase == "set" else dlms_state.AWAITING_ACTION_RESPONSE
        if state.current_state != expected:
            raise DecodeError(self.meter_id, f"a {'SET' if plain[0] == 0xC5 else 'ACTION'} answer during {phase}")
        # The answer is complete and meant for this request: whatever it holds, the exchange is over
        # for dlms-cosem's state machine (which never sees it), and the next request may go ahead.
        state.current_state = dlms_state.READY
        try:
            return parse_set_reply(plain) if phase == "set" else parse_action_reply(plain)
        except DecodeLayerError as exc:
            if self._set_blocks is not None:
                self._broken = True  # the meter is in the middle of a transfer we cannot follow
            raise UnreadableAnswer(self.meter_id, f"undecodable {phase.upper()} answer: {exc}") from None

    def _decipher(self, raw: bytes, phase: str) -> tuple[bytes, int]:
        connection = self.connection
        if not connection.use_protection:
            raise DecodeError(self.meter_id, f"a ciphered {phase} answer in an association without ciphering")
        keys = SecurityKeys(
            encryption_key=connection.global_encryption_key,
            authentication_key=connection.global_authentication_key,
            system_title=connection.meter_system_title,
        )
        try:
            header, size = parse_ciphered(raw)
            if size != len(raw):
                raise decode_layer.DecodeError(f"{len(raw) - size} bytes left after the ciphered APDU")
            plain, _ = decipher(header, keys)
        except DecryptionError:
            raise AuthenticationFailed(
                self.meter_id, f"could not decipher the meter's {phase} answer (wrong keys or corrupt APDU)"
            ) from None
        except DecodeLayerError as exc:
            raise DecodeError(self.meter_id, f"undecodable ciphered {phase} answer: {exc}") from None
        if not plain:
            raise DecodeError(self.meter_id, f"empty ciphered {phase} answer")
        return plain, header.invocation_counter

    def _checked_acse(self, raw: bytes, phase: str) -> bytes:
        if len(raw) > _MAX_ACSE_BYTES:
            raise DecodeError(self.meter_id, f"{phase} answer of {len(raw)} bytes refused (at most {_MAX_ACSE_BYTES})")
        try:
            with cpu_bound(self.meter_id, f"{phase} answer"):
                _, end = decode_layer.decode_apdu(raw)
        except DecodeLayerError as exc:
            raise DecodeError(self.meter_id, f"undecodable {phase} answer: {exc}") from None
        if end != len(raw):
            raise DecodeError(self.meter_id, f"{len(raw) - end} bytes left after the {phase} answer")
        return raw

    def _exception_response(self, raw: bytes) -> Any:
        # Answered outside the state machine: dlms-cosem has no transition for it in most states
        # (it surfaces as IndexError/LocalDlmsProtocolError otherwise). Fixed size: 3 or 7 bytes.
        if len(raw) not in (3, 7):
            raise DecodeError(self.meter_id, f"exception response of {len(raw)} bytes")
        try:
            with cpu_bound(self.meter_id, "exception response"):
                return xdlms.ExceptionResponse.from_bytes(raw)
        except _LIBRARY_DECODE_ERRORS as exc:
            raise DecodeError(self.meter_id, f"undecodable exception response: {self._safe(exc)}") from exc

    def _library_parse(self, plain: bytes, phase: str) -> Any:
        connection = self.connection
        connection.receive_data(plain)
        try:
            with cpu_bound(self.meter_id, f"{phase} answer"):
                apdu = connection.next_event()
        except _LIBRARY_CIPHER_ERRORS as exc:
            connection.clear_buffer()
            raise AuthenticationFailed(
                self.meter_id, f"could not decipher the meter's {phase} answer (wrong keys or corrupt APDU)"
            ) from exc
        except Exception as exc:  # noqa: BLE001 - any parser failure on meter bytes is a DecodeError
            connection.clear_buffer()
            raise DecodeError(self.meter_id, f"undecodable {phase} answer: {self._safe(exc)}") from exc
        return apdu

    def _note_counter_hint(self, reply: xdlms.ExceptionResponse) -> None:
        if (
            reply.service_error == enumerations.ServiceException.INVOCATION_COUNTER_ERROR
            and reply.invocation_counter_data
        ):
            # The meter names the counter it expects: the next association starts there.
            self._counter_hint = reply.invocation_counter_data

    def _unexpected(self, reply: Any) -> DriverError:
        self._broken = True
        if isinstance(reply, xdlms.ConfirmedServiceError):
            return ServiceError(self.meter_id, f"confirmed service error: {self._safe(reply)}")
        return DecodeError(self.meter_id, f"unexpected answer {type(reply).__name__}")

    def _safe(self, value: object) -> str:
        text = f"{type(value).__name__}: {value}" if isinstance(value, BaseException) else str(value)
        return redact(text[:300], self._secrets)

    def _new_connection(
        self,
        first_invocation_counter: int,
        max_pdu_size: int,
        client_system_title: bytes | None,
        challenge_factory: Callable[[int], bytes] | None,
    ) -> DlmsConnection:
        security = self.security
        settings = DlmsConnectionSettings(use_rlrq_rlre=self.use_release)
        if isinstance(security, HlsGmacSecurity):
            hls = HighLevelSecurityGmacAuthentication(challenge_length=32)
            if challenge_factory is not None:
                hls.calling_authentication_value = challenge_factory(32)
            return DlmsConnection(
                authentication=hls,
                client_system_title=security.client_system_title or client_system_title,
                global_encryption_key=security.encryption_key,
                global_authentication_key=security.authentication_key,
                security_suite=0,
                client_invocation_counter=first_invocation_counter,
                max_pdu_size=max_pdu_size,
                conformance=client_conformance(ciphered=True, set_block_transfer=self.set_block_transfer),
                settings=settings,
            )
        if isinstance(security, LowLevelSecurity):
            authentication: Any = LowLevelSecurityAuthentication(secret=security.password)
        else:
            authentication = NoSecurityAuthentication()
        return DlmsConnection(
            authentication=authentication,
            client_system_title=client_system_title,
            max_pdu_size=max_pdu_size,
            conformance=client_conformance(ciphered=False, set_block_transfer=self.set_block_transfer),
            settings=settings,
        )


def fix_ciphered_length(payload: bytes) -> bytes:
    """dlms-cosem 25.1.0 writes a general-glo-ciphering content length as one raw byte; A-XDR needs
    the variable-length form above 127 bytes (a long GET-with-list when ciphered)."""
    if len(payload) < 3 or payload[0] != xdlms.GeneralGlobalCipher.TAG:
        return payload
    length_at = 2 + payload[1]
    content = payload[length_at + 1 :]
    if len(content) < 0x80:
        return payload
    return payload[:length_at] + encode_length(len(content)) + content


def is_stale(plain: bytes, request: Any) -> bool:
    """True for an answer that belongs to an earlier request (other invoke-id, or an earlier block)."""
    expected = getattr(request, "invoke_id_and_priority", None)
    if expected is None or len(plain) < 3 or plain[0] not in (0xC4, 0xC5, 0xC7):
        return False
    if plain[2] & 0x0F != expected.invoke_id:
        return True
    if isinstance(request, xdlms.GetRequestNext) and plain[1] == 0x02 and len(plain) >= 8:
        return int.from_bytes(plain[4:8], "big") <= request.block_number
    if isinstance(request, SetRequestBlock) and plain[0] == 0xC5 and plain[1] == 0x02 and len(plain) >= 7:
        return int.from_bytes(plain[3:7], "big") < request.block_number  # the ack of an earlier block
    return False


def access_result_name(code: int) -> str:
    try:
        return enumerations.DataAccessResult(code).name
    except ValueError:
        return f"UNKNOWN_{code}"


def action_result_name(code: int) -> str:
    try:
        return enumerations.ActionResultStatus(code).name
    except ValueError:
        return f"UNKNOWN_{code}"


def describe_method(method: cosem.CosemMethod) -> str:
    obis = method.instance
    try:
        name = obis.to_string()
    except Exception:  # noqa: BLE001 - only used to name the method in a message
        name = repr(obis)
    return f"{name} method {method.method}"


def describe(attribute: cosem.CosemAttribute) -> str:
    obis = attribute.instance
    try:
        name = obis.to_string()
    except Exception:  # noqa: BLE001 - only used to name the attribute in a message
        name = repr(obis)
    return f"{name} attr {attribute.attribute}"
