"""Server side of a DLMS/COSEM application association, sans-IO: APDU bytes in, a `Reply` out.

One `CosemAssociation` lives per client connection (wrapper) or per HDLC link (one physical
address on a bus). It implements what a meter does with:

- AARQ → AARE: public client (SAP 16) without security; reading client (SAP 1) with the
  meter's level: none, LLS (password; wrong → rejected-permanent, authentication-failure) or
  HLS-GMAC suite 0 (ciphered AARQ/AARE, then reply_to_HLS_authentication = ACTION on
  0.0.40.0.0.255 method 1, then every xDLMS APDU in general-glo-ciphering, SC 0x30);
- GET normal / next (block transfer when the reply exceeds the negotiated PDU size) / with list;
- SET normal / with datablocks, and ACTION normal on the clock (adjust_to_quarter, shift_time), with
  access rights enforced: an association without authentication is read-only, LLS and HLS clients
  write and execute what the meter's ``rights`` grant them (``MeterConfig.may``);
- RLRQ → RLRE.

APDUs are encoded with dlms-cosem classes except where 25.1.0 is broken (see `apdu.py`).
"""
from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Callable

import attr
from dlms_cosem import security
from dlms_cosem.enumerations import (
    AcseServiceUserDiagnostics,
    ActionResultStatus,
    ApplicationReferenceError,
    AssociationResult,
    AuthenticationMechanism,
    DataAccessResult,
    ReleaseResponseReason,
    ServiceException,
    StateException,
)
from dlms_cosem.protocol import acse, xdlms
from dlms_cosem.protocol.xdlms.conformance import Conformance

from drivers.decode.axdr import encode_length
from drivers.simulator import meter as m
from drivers.simulator.meter import SecurityLevel, SimulatedMeter
from drivers.simulator.apdu import (
    TAG_GLO,
    ProtocolViolation,
    decode_length,
    exception_response,
    general_glo_cipher,
    parse_attribute_descriptor,
)
from drivers.simulator.objects import CLASS_ASSOCIATION_LN, ObjectModel, obis_from_bytes

PUBLIC_CLIENT_SAP = 16
READING_CLIENT_SAP = 1
_SC = security.SecurityControlField(security_suite=0, authenticated=True, encrypted=True)
_SC_AUTH_ONLY = security.SecurityControlField(security_suite=0, authenticated=True, encrypted=False)
# Worst-case bytes around a block's raw data: GET-Response-With-Datablock header (12) plus
# general-glo-ciphering (tag, system title, length, SC, IC, 12-byte tag: 30).
_BLOCK_OVERHEAD = 48

_SUPPORTED = Conformance(
    general_protection=True,
    priority_management_supported=True,
    block_transfer_with_get_or_read=True,
    block_transfer_with_set_or_write=True,
    multiple_references=True,
    get=True,
    set=True,
    selective_access=True,
    action=True,
)

TAG_AARQ, TAG_RLRQ, TAG_GET, TAG_SET, TAG_ACTION = 0x60, 0x62, 0xC0, 0xC1, 0xC3


class AssociationState(Enum):
    IDLE = "idle"
    AWAITING_HLS = "awaiting-hls"
    ASSOCIATED = "associated"


@dataclass(frozen=True)
class Reply:
    """What the transport must do: send `apdu` (if any), then close the connection if `disconnect`."""

    apdu: bytes | None
    disconnect: bool = False


@dataclass
class _IncomingSet:
    """A SET with datablocks being received: its target and the raw data so far."""

    invoke: int
    class_id: int
    obis: str
    attribute: int
    data: bytearray
    last_block: int


@dataclass
class _PendingBlocks:
    invoke: int
    data: bytes
    block_size: int
    last_sent: int  # block numbers start at 1


def _negotiate(proposed: Conformance, ciphered: bool) -> Conformance:
    names = [f.name for f in attr.fields(Conformance)]
    agreed = {n: getattr(proposed, n) and getattr(_SUPPORTED, n) for n in names}
    agreed["general_protection"] = agreed["general_protection"] and ciphered
    return Conformance(**agreed)


class CosemAssociation:
    """The application layer of one meter towards one client address."""

    def __init__(self, meter: SimulatedMeter, now: Callable[[], datetime], client_sap: int) -> None:
        self.meter = meter
        self.client_sap = client_sap
        self.objects = ObjectModel(meter, now)
        self._reset()

    def _reset(self) -> None:
        self.state = AssociationState.IDLE
        self.ciphered = False
        self.client_system_title = b""
        self.client_challenge = b""
        self.server_challenge = b""
        self.max_send_pdu = self.meter.config.pdu_size
        self._pending: _PendingBlocks | None = None
        self._incoming: _IncomingSet | None = None
        self.level: SecurityLevel | None = None  # the authentication of this association

    @property
    def config(self) -> m.MeterConfig:
        return self.meter.config

    # -- entry point -------------------------------------------------------------------

    def handle(self, apdu: bytes) -> Reply:
        if not apdu:
            return Reply(exception_response(ServiceException.OTHER_REASON))
        tag = apdu[0]
        try:
            if tag == TAG_AARQ:
                return Reply(self._associate(apdu))
            if tag == TAG_RLRQ:
                return Reply(self._release(apdu))
            if self.ciphered:
                return self._handle_ciphered(apdu)
            return self._handle_xdlms(apdu)
        except ProtocolViolation:
            return Reply(exception_response(ServiceException.OTHER_REASON, StateException.SERVICE_UNKNOWN))

    # -- association -------------------------------------------------------------------

    def _reject(self, diagnostic: AcseServiceUserDiagnostics, user_information: acse.UserInformation | None = None) -> bytes:
        self._reset()
        return acse.ApplicationAssociationResponse(
            result=AssociationResult.REJECTED_PERMANENT,
            result_source_diagnostics=diagnostic,
            user_information=user_information,
        ).to_bytes()

    def _required_mechanism(self) -> AuthenticationMechanism | None:
        if self.client_sap == PUBLIC_CLIENT_SAP:
            return AuthenticationMechanism.NONE
        if self.client_sap == READING_CLIENT_SAP:
            return {
                SecurityLevel.NONE: AuthenticationMechanism.NONE,
                SecurityLevel.LLS: AuthenticationMechanism.LLS,
                SecurityLevel.HLS_GMAC: AuthenticationMechanism.HLS_GMAC,
            }[self.config.security]
        return None

    def _associate(self, apdu: bytes) -> bytes:
        self._reset()
        try:
            aarq = acse.ApplicationAssociationRequest.from_bytes(apdu)
        except Exception:  # dlms-cosem raises ValueError/IndexError/KeyError on bad BER
            return self._reject(AcseServiceUserDiagnostics.NO_REASON_GIVEN)
        mechanism = aarq.authentication or AuthenticationMechanism.NONE
        required = self._required_mechanism()
        if required is None:
            return self._reject(AcseServiceUserDiagnostics.CALLING_AP_TITLE_NOT_RECOGNIZED)
        if mechanism != required:
            if mechanism == AuthenticationMechanism.NONE:
                return self._reject(AcseServiceUserDiagnostics.AUTHENTICATION_REQUIRED)
            return self._reject(AcseServiceUserDiagnostics.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNIZED)
        if mechanism == AuthenticationMechanism.LLS:
            given = bytes(aarq.authentication_value or b"")
            if not hmac.compare_digest(given, self.config.password):
                return self._reject(AcseServiceUserDiagnostics.AUTHENTICATION_FAILED)
        content = aarq.user_information.content
        if mechanism == AuthenticationMechanism.HLS_GMAC:
            return self._associate_hls(aarq)
        if not isinstance(content, xdlms.InitiateRequest) or aarq.ciphered:
            return self._reject(AcseServiceUserDiagnostics.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED)
        self.max_send_pdu = self._send_limit(content.client_max_receive_pdu_size)
        initiate = self._initiate_response(content.proposed_conformance)
        self.state = AssociationState.ASSOCIATED
        self.level = SecurityLevel.LLS if mechanism == AuthenticationMechanism.LLS else None
        return acse.ApplicationAssociationResponse(
            result=AssociationResult.ACCEPTED,
            result_source_diagnostics=AcseServiceUserDiagnostics.NULL,
            authentication=mechanism if mechanism != AuthenticationMechanism.NONE else None,
            user_information=acse.UserInformation(content=initiate),
        ).to_bytes()

    def _associate_hls(self, aarq: acse.ApplicationAssociationRequest) -> bytes:
        content = aarq.user_information.content
        challenge = bytes(aarq.authentication_value or b"")
        title = bytes(aarq.system_title or b"")
        if not aarq.ciphered or not isinstance(content, xdlms.GlobalCipherInitiateRequest) or len(title) != 8:
            return self._reject(AcseServiceUserDiagnostics.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED)
        if not 8 <= len(challenge) <= 64:
            return self._reject(AcseServiceUserDiagnostics.AUTHENTICATION_FAILED)
        if content.invocation_counter <= self.meter.last_client_invocation_counter:
            return self._reject(AcseServiceUserDiagnostics.NO_REASON_GIVEN, self._deciphering_error())
        try:
            plain = security.decrypt(
                content.security_control, title, content.invocation_counter,
                self.config.encryption_key, bytes(content.ciphered_text), self.config.authentication_key,
            )
            initiate = xdlms.InitiateRequest.from_bytes(plain)
        except Exception:  # wrong keys → InvalidTag (DecryptionError); garbage → ValueError & co
            return self._reject(AcseServiceUserDiagnostics.NO_REASON_GIVEN, self._deciphering_error())
        self.meter.last_client_invocation_counter = content.invocation_counter
        self.ciphered = True
        self.client_system_title = title
        self.client_challenge = challenge
        self.server_challenge = os.urandom(16)
        self.max_send_pdu = self._send_limit(initiate.client_max_receive_pdu_size)
        response = self._initiate_response(initiate.proposed_conformance)
        ic = self._next_server_ic()
        ciphered = security.encrypt(
            _SC, self.config.system_title, ic, self.config.encryption_key, response.to_bytes(),
            self.config.authentication_key,
        )
        self.state = AssociationState.AWAITING_HLS
        return acse.ApplicationAssociationResponse(
            result=AssociationResult.ACCEPTED,
            result_source_diagnostics=AcseServiceUserDiagnostics.NULL,
            ciphered=True,
            authentication=AuthenticationMechanism.HLS_GMAC,
            system_title=self.config.system_title,
            authentication_value=self.server_challenge,
            user_information=acse.UserInformation(
                content=xdlms.GlobalCipherInitiateResponse(
                    security_control=_SC, invocation_counter=ic, ciphered_text=ciphered,
                )
            ),
        ).to_bytes()

    @staticmethod
    def _deciphering_error() -> acse.UserInformation:
        return acse.UserInformation(
            content=xdlms.ConfirmedServiceError(error=ApplicationReferenceError.DECIPHERING_ERROR)
        )

    def _initiate_response(self, proposed: Conformance) -> xdlms.InitiateResponse:
        return xdlms.InitiateResponse(
            negotiated_conformance=_negotiate(proposed, self.ciphered),
            server_max_receive_pdu_size=self.config.pdu_size,
        )

    def _send_limit(self, client_max_receive: int) -> int:
        # A client max of 0 means "no limit" (Green Book); the meter's own buffer still caps it.
        own = self.config.pdu_size
        return own if client_max_receive == 0 else min(own, client_max_receive)

    def _next_server_ic(self) -> int:
        self.meter.server_invocation_counter += 1
        return self.meter.server_invocation_counter

    def _release(self, apdu: bytes) -> bytes:
        user_information = None
        try:
            rlrq = acse.ReleaseRequest.from_bytes(apdu)
            requested = rlrq.user_information is not None
        except Exception:  # a malformed RLRQ still releases: the client wants out
            requested = False
        if requested and self.state == AssociationState.ASSOCIATED:
            initiate = xdlms.InitiateResponse(
                negotiated_conformance=_negotiate(_SUPPORTED, self.ciphered),
                server_max_receive_pdu_size=self.config.pdu_size,
            )
            if self.ciphered:
                ic = self._next_server_ic()
                text = security.encrypt(
                    _SC, self.config.system_title, ic, self.config.encryption_key, initiate.to_bytes(),
                    self.config.authentication_key,
                )
                user_information = acse.UserInformation(
                    content=xdlms.GlobalCipherInitiateResponse(
                        security_control=_SC, invocation_counter=ic, ciphered_text=text,
                    )
                )
            else:
                user_information = acse.UserInformation(content=initiate)
        self._reset()
        return acse.ReleaseResponse(reason=ReleaseResponseReason.NORMAL, user_information=user_information).to_bytes()

    # -- ciphering ---------------------------------------------------------------------

    def _handle_ciphered(self, apdu: bytes) -> Reply:
        if apdu[0] != TAG_GLO:
            return Reply(exception_response(ServiceException.OPERATION_NOT_POSSIBLE))
        try:
            glo = xdlms.GeneralGlobalCipher.from_bytes(apdu)
        except Exception:  # dlms-cosem's A-XDR decoder raises assorted errors on garbage
            return Reply(exception_response(ServiceException.DECIPHERING_ERROR))
        title = bytes(glo.system_title or self.client_system_title)
        if title != self.client_system_title or glo.security_control.to_bytes() != bytes((0x30,)):
            return Reply(exception_response(ServiceException.DECIPHERING_ERROR))
        if glo.invocation_counter <= self.meter.last_client_invocation_counter:
            expected = self.meter.last_client_invocation_counter + 1
            return Reply(bytes((0xD8, StateException.SERVICE_NOT_ALLOWED, ServiceException.INVOCATION_COUNTER_ERROR))
                         + expected.to_bytes(4, "big"))
        try:
            plain = security.decrypt(
                glo.security_control, title, glo.invocation_counter, self.config.encryption_key,
                bytes(glo.ciphered_text), self.config.authentication_key,
            )
        except Exception:  # InvalidTag → DecryptionError
            return Reply(exception_response(ServiceException.DECIPHERING_ERROR))
        self.meter.last_client_invocation_counter = glo.invocation_counter
        reply = self._handle_xdlms(bytes(plain))
        if reply.apdu is None or reply.apdu[0] == 0xD8:
            return reply
        ic = self._next_server_ic()
        text = security.encrypt(
            _SC, self.config.system_title, ic, self.config.encryption_key, reply.apdu,
            self.config.authentication_key,
        )
        return Reply(general_glo_cipher(self.config.system_title, ic, text), reply.disconnect)

    # -- xDLMS services ----------------------------------------------------------------

    def _handle_xdlms(self, apdu: bytes) -> Reply:
        tag = apdu[0]
        if self.state == AssociationState.IDLE:
            return Reply(exception_response(ServiceException.SERVICE_NOT_SUPPORTED))
        if tag == TAG_ACTION:
            return Reply(self._action(apdu))
        if self.state == AssociationState.AWAITING_HLS:
            # Until the client proved it holds the keys only reply_to_HLS is allowed.
            return Reply(exception_response(ServiceException.OPERATION_NOT_POSSIBLE))
        if tag == TAG_GET:
            return self._get(apdu)
        if tag == TAG_SET:
            return Reply(self._set(apdu))
        return Reply(exception_response(ServiceException.SERVICE_NOT_SUPPORTED, StateException.SERVICE_UNKNOWN))

    # -- SET -----------------------------------------------------------------------------

    def _set(self, apdu: bytes) -> bytes:
        if len(apdu) < 3:
            raise ProtocolViolation("short SET request")
        kind, invoke = apdu[1], apdu[2]
        if kind == 1:
            self._incoming = None
            class_id, obis, attribute, selector, _, offset = parse_attribute_descriptor(apdu, 3)
            if selector is not None:
                return bytes((0xC5, 0x01, invoke, DataAccessResult.SCOPE_OF_ACCESS_VIOLATED))
            self.meter.sets.append((obis, attribute))
            return bytes((0xC5, 0x01, invoke, self._write(class_id, obis, attribute, apdu[offset:])))
        if kind == 2:
            class_id, obis, attribute, selector, _, offset = parse_attribute_descriptor(apdu, 3)
            last, number, raw = self._datablock(apdu, offset)
            if number != 1 or selector is not None:
                self._incoming = None
                return bytes((0xC5, 0x01, invoke, DataAccessResult.DATA_BLOCK_NUMBER_INVALID))
            self._incoming = _IncomingSet(invoke, class_id, obis, attribute, bytearray(raw), 1)
        elif kind == 3:
            last, number, raw = self._datablock(apdu, 3)
            incoming = self._incoming
            if incoming is None:
                return bytes((0xC5, 0x01, invoke, DataAccessResult.NO_LONG_SET_IN_PROGRESS))
            if number != incoming.last_block + 1:
                self._incoming = None
                return bytes((0xC5, 0x01, invoke, DataAccessResult.DATA_BLOCK_NUMBER_INVALID))
            incoming.data += raw
            incoming.last_block = number
        else:
            raise ProtocolViolation(f"SET request type {kind}")
        incoming = self._incoming
        assert incoming is not None
        self.meter.set_blocks_received += 1
        if not last:
            return bytes((0xC5, 0x02, invoke)) + number.to_bytes(4, "big")
        self._incoming = None
        self.meter.sets.append((incoming.obis, incoming.attribute))
        result = self._write(incoming.class_id, incoming.obis, incoming.attribute, bytes(incoming.data))
        return bytes((0xC5, 0x03, invoke, result)) + number.to_bytes(4, "big")

    @staticmethod
    def _datablock(apdu: bytes, offset: int) -> tuple[bool, int, bytes]:
        """DataBlock-SA: last-block, block-number, raw-data (an octet string)."""
        if offset + 5 > len(apdu):
            raise ProtocolViolation("truncated SET datablock")
        last, number = bool(apdu[offset]), int.from_bytes(apdu[offset + 1:offset + 5], "big")
        size, start = decode_length(apdu, offset + 5)
        if start + size != len(apdu):
            raise ProtocolViolation("SET datablock length does not fill the APDU")
        return last, number, bytes(apdu[start:])

    def _write(self, class_id: int, obis: str, attribute: int, value: bytes) -> DataAccessResult:
        known = self.objects.class_of(obis)
        if known is None:
            return DataAccessResult.OBJECT_UNDEFINED
        if known != class_id:
            return DataAccessResult.OBJECT_CLASS_INCONSISTENT
        if not self.config.may(obis, attribute, method=False, level=self.level):
            return DataAccessResult.READ_WRITE_DENIED
        return self.objects.write_attribute(class_id, obis, attribute, value)

    # -- ACTION ----------------------------------------------------------------------------

    def _action(self, apdu: bytes) -> bytes:
        try:
            request = xdlms.ActionRequestNormal.from_bytes(apdu)
        except Exception:  # unsupported action type or garbage
            raise ProtocolViolation("undecodable ACTION request") from None
        invoke = request.invoke_id_and_priority
        method = request.cosem_method
        target = (int(method.interface), obis_from_bytes(method.instance.to_bytes()), method.method)
        if self.state == AssociationState.ASSOCIATED and target[1] != m.OBIS_ASSOCIATION:
            self.meter.actions.append((target[1], target[2]))
            status = self._invoke(*target, bytes(request.data or b""))
            return xdlms.ActionResponseNormal(status=status, invoke_id_and_priority=invoke).to_bytes()
        if target != (CLASS_ASSOCIATION_LN, m.OBIS_ASSOCIATION, 1) or self.state != AssociationState.AWAITING_HLS:
            return xdlms.ActionResponseNormal(
                status=ActionResultStatus.READ_WRITE_DENIED, invoke_id_and_priority=invoke
            ).to_bytes()
        data = bytes(request.data or b"")
        # data = octet-string(SC || IC || GMAC(SC || AK || server challenge)), Green Book 9.2.7.4
        if len(data) < 2 or data[0] != 0x09 or data[1] != len(data) - 2 or len(data) != 2 + 1 + 4 + 12:
            return xdlms.ActionResponseNormal(status=ActionResultStatus.OTHER_REASON, invoke_id_and_priority=invoke).to_bytes()
        body = data[2:]
        client_ic = int.from_bytes(body[1:5], "big")
        expected = security.gmac(
            _SC_AUTH_ONLY, self.client_system_title, client_ic, self.config.encryption_key,
            self.config.authentication_key, self.server_challenge,
        )
        if body[0] != 0x10 or not hmac.compare_digest(body[5:], expected):
            return xdlms.ActionResponseNormal(
                status=ActionResultStatus.READ_WRITE_DENIED, invoke_id_and_priority=invoke
            ).to_bytes()
        self.state = AssociationState.ASSOCIATED
        self.level = SecurityLevel.HLS_GMAC
        ic = self._next_server_ic()
        tag = security.gmac(
            _SC_AUTH_ONLY, self.config.system_title, ic, self.config.encryption_key,
            self.config.authentication_key, self.client_challenge,
        )
        proof = bytes((0x10,)) + ic.to_bytes(4, "big") + tag
        return xdlms.ActionResponseNormalWithData(
            status=ActionResultStatus.SUCCESS, data=b"\x09" + bytes((len(proof),)) + proof,
            invoke_id_and_priority=invoke,
        ).to_bytes()

    def _invoke(self, class_id: int, obis: str, method: int, parameters: bytes) -> ActionResultStatus:
        known = self.objects.class_of(obis)
        if known is None:
            return ActionResultStatus.OBJECT_UNDEFINED
        if known != class_id:
            return ActionResultStatus.OBJECT_CLASS_INCONSISTENT
        if not self.config.may(obis, method, method=True, level=self.level):
            return ActionResultStatus.READ_WRITE_DENIED
        return self.objects.invoke_method(class_id, obis, method, parameters)

    def _get(self, apdu: bytes) -> Reply:
        if len(apdu) < 3:
            raise ProtocolViolation("short GET request")
        kind, invoke = apdu[1], apdu[2]
        if kind == 1:
            self._pending = None
            class_id, obis, attribute, selector, params, _ = parse_attribute_descriptor(apdu, 3)
            result = self.objects.read_attribute(class_id, obis, attribute, selector, params)
            if isinstance(result, DataAccessResult):
                return Reply(bytes((0xC4, 0x01, invoke, 0x01, result)))
            return self._send_data(invoke, bytes((0xC4, 0x01, invoke, 0x00)) + result, result)
        if kind == 2:
            return self._next_block(apdu, invoke)
        if kind == 3:
            self._pending = None
            count, offset = decode_length(apdu, 3)
            parts = [encode_length(count)]
            for _ in range(count):
                class_id, obis, attribute, selector, params, offset = parse_attribute_descriptor(apdu, offset)
                garbled = self.meter.faults.list_answer_to(obis)
                if garbled is not None:
                    return Reply(bytes((0xC4, 0x03, invoke)) + garbled)
                result = self.objects.read_attribute(class_id, obis, attribute, selector, params)
                parts.append(bytes((0x01, result)) if isinstance(result, DataAccessResult) else b"\x00" + result)
            raw = b"".join(parts)
            return self._send_data(invoke, bytes((0xC4, 0x03, invoke)) + raw, raw)
        raise ProtocolViolation(f"GET request type {kind}")

    def _send_data(self, invoke: int, whole: bytes, raw: bytes) -> Reply:
        """Send `whole` if it fits the negotiated PDU size, else `raw` in GET blocks (IEC 62056-5-3 §7.3.7)."""
        overhead = 30 if self.ciphered else 0
        if len(whole) + overhead <= self.max_send_pdu:
            return Reply(whole)
        block_size = max(16, self.max_send_pdu - _BLOCK_OVERHEAD)
        self._pending = _PendingBlocks(invoke=invoke, data=raw, block_size=block_size, last_sent=0)
        return Reply(self._block(1))

    def _block(self, number: int) -> bytes:
        pending = self._pending
        assert pending is not None
        chunk = pending.data[(number - 1) * pending.block_size:number * pending.block_size]
        pending.last_sent = number
        invoke = xdlms.InvokeIdAndPriority.from_bytes(bytes((pending.invoke,)))
        if number * pending.block_size >= len(pending.data):
            self._pending = None
            return xdlms.GetResponseLastBlock(data=chunk, block_number=number, invoke_id_and_priority=invoke).to_bytes()
        return xdlms.GetResponseWithBlock(data=chunk, block_number=number, invoke_id_and_priority=invoke).to_bytes()

    def _next_block(self, apdu: bytes, invoke: int) -> Reply:
        if len(apdu) != 7:
            raise ProtocolViolation("GET-Request-Next must carry a 4-byte block number")
        acknowledged = int.from_bytes(apdu[3:7], "big")
        invoke_field = xdlms.InvokeIdAndPriority.from_bytes(bytes((invoke,)))
        if self._pending is None:
            return Reply(xdlms.GetResponseLastBlockWithError(
                error=DataAccessResult.NO_LONG_GET_IN_PROGRESS, block_number=acknowledged,
                invoke_id_and_priority=invoke_field,
            ).to_bytes())
        if self.meter.faults.disconnect_mid_block:
            self._pending = None
            return Reply(None, disconnect=True)
        if acknowledged != self._pending.last_sent:
            self._pending = None
            return Reply(xdlms.GetResponseLastBlockWithError(
                error=DataAccessResult.DATA_BLOCK_NUMBER_INVALID, block_number=acknowledged,
                invoke_id_and_priority=invoke_field,
            ).to_bytes())
        return Reply(self._block(acknowledged + 1))
