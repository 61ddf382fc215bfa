"""An async DLMS/COSEM client association with one meter, on any transport.

``DlmsSession`` drives dlms-cosem's sans-IO ``DlmsConnection`` (it builds and parses APDUs and
tracks the association state) and moves the bytes through a ``Transport`` under anyio, so every
wait is bounded and cancellable. It associates (public client, LLS, HLS-GMAC suite 0), reads with
GET normal / with block transfer / with list / with range selective access, and releases. Every
library exception is mapped to the typed errors of ``drivers.errors``; after any failure other than
a refused attribute the association is unusable and the next poll opens a new session.

The client invocation counter of ciphered associations is reserved ahead in an
``InvocationCounterStore`` (``drivers.counters``) before use, so it never goes back across runs or
crashes.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

from cryptography.exceptions import InvalidTag
from dlms_cosem import cosem, dlms_data, enumerations, exceptions as dlms_exceptions
from dlms_cosem import state as dlms_state
from dlms_cosem.connection import DlmsConnection, DlmsConnectionSettings, ProtectionError
from dlms_cosem.cosem.capture_object import CaptureObject
from dlms_cosem.cosem.selective_access import RangeDescriptor
from dlms_cosem.protocol import acse, xdlms
from dlms_cosem.protocol.xdlms.conformance import Conformance
from dlms_cosem.protocol.xdlms.invoke_id_and_priority import InvokeIdAndPriority
from dlms_cosem.security import (
    HighLevelSecurityGmacAuthentication,
    LowLevelSecurityAuthentication,
    NoSecurityAuthentication,
)

from drivers.decode import apdu as decode_layer
from drivers.decode.cipher import CIPHERED_TAGS, SecurityKeys, decipher, parse_ciphered
from drivers.decode.errors import DecodeLayerError, DecryptionError
from drivers.decode.get_reply import GetReply, parse_get_reply, parse_list_results
from drivers.decode.axdr import decode_length, encode_length
from drivers.counters import FileInvocationCounterStore, InvocationCounterStore  # noqa: F401  (re-exported)
from drivers.errors import (
    AccessDenied,
    AssociationRejected,
    AuthenticationFailed,
    ConfigError,
    ConnectionLost,
    DecodeError,
    DriverError,
    FrameError,
    MeterTimeout,
    ServiceError,
    UnreadableAnswer,
)
from drivers.logging import redact, silence_dlms_cosem_logging
from drivers.untrusted import cpu_bound
from drivers.security import HlsGmacSecurity, LowLevelSecurity, NoSecurity, SecuritySettings
from drivers.transport.base import Transport

LOG = logging.getLogger(__name__)

# Association LN "current association" object; method 1 is reply_to_HLS_authentication.
CURRENT_ASSOCIATION = cosem.Obis(0, 0, 40, 0, 0, 255)
CLOCK_TIME = cosem.CosemAttribute(enumerations.CosemInterface.CLOCK, cosem.Obis(0, 0, 1, 0, 0, 255), 2)

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
_MAX_STALE_ANSWERS = 8
_STALE = object()  # _decode's answer for a reply meant for an earlier request
_ACSE_ANSWERS = (acse.ApplicationAssociationResponse.TAG, acse.ReleaseResponse.TAG)
# An AARE/RLRE is a few dozen bytes (a ciphered AARE ~100); anything far larger is not one.
_MAX_ACSE_BYTES = 1024
# One GET's answer, all its blocks together. A day of one-minute load profile is ~100 KB; this bound
# only keeps a meter that never stops sending blocks from taking the box's memory.
DEFAULT_MAX_TRANSFER_BYTES = 4 * 1024 * 1024
_LIBRARY_CIPHER_ERRORS = (
    InvalidTag,
    ProtectionError,
    dlms_exceptions.CryptographyError,
    dlms_exceptions.CipheringError,
)


def client_conformance(ciphered: bool) -> Conformance:
    """What we propose in the AARQ. General block transfer is left out on purpose: dlms-cosem
    cannot parse GBT answers, and a meter may use it if we offer it."""
    return Conformance(
        general_protection=ciphered,
        general_block_transfer=False,
        block_transfer_with_get_or_read=True,
        multiple_references=True,
        get=True,
        set=True,
        selective_access=True,
        action=True,
        priority_management_supported=True,
    )


class DlmsSession:
    """One association with one meter: ``async with DlmsSession(...) as session: await session.get(...)``."""

    def __init__(
        self,
        transport: Transport,
        *,
        security: SecuritySettings | None = None,
        timeout_s: float = 10.0,
        retries: int = 1,
        use_release: bool = True,
        max_pdu_size: int = 0xFFFF,
        invocation_counters: InvocationCounterStore | None = None,
        invocation_counter_reserve: int = 256,
        client_system_title: bytes | None = None,
        challenge_factory: Callable[[int], bytes] | None = None,
        max_transfer_bytes: int = DEFAULT_MAX_TRANSFER_BYTES,
    ) -> None:
        """``client_system_title`` (8 bytes; HlsGmacSecurity's own title wins) and
        ``challenge_factory`` (length -> HLS client challenge) default to random values; fixing
        them makes the requests of a session deterministic, for recording and replay."""
        self.meter_id = transport.meter_id
        self.security: SecuritySettings = security if security is not None else NoSecurity()
        if timeout_s <= 0 or retries < 0:
            raise ConfigError(self.meter_id, "timeout_s must be > 0 and retries >= 0")
        if isinstance(self.security, HlsGmacSecurity) and invocation_counters is None:
            raise ConfigError(
                self.meter_id, "HLS-GMAC needs an invocation counter store so the counter never goes back"
            )
        self.transport = transport
        self.timeout_s = timeout_s
        self.retries = retries
        self.use_release = use_release
        self.max_pdu_size = max_pdu_size
        self.invocation_counters = invocation_counters
        self.invocation_counter_reserve = max(1, invocation_counter_reserve)
        if client_system_title is not None and len(client_system_title) != 8:
            raise ConfigError(self.meter_id, "client system title must be 8 bytes")
        self.client_system_title = client_system_title
        self.challenge_factory = challenge_factory
        self.max_transfer_bytes = max_transfer_bytes
        self._secrets = self.security.secret_values()
        self._connection: DlmsConnection | None = None
        self._reserved_until = 0
        self._invoke_id = 0
        self._broken = False
        self._associated = False
        silence_dlms_cosem_logging()

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> DlmsSession:
        try:
            await self.transport.open()
            await self.associate()
        except BaseException:
            await self.transport.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None and self._associated and not self._broken:
                try:
                    await self.release()
                except DriverError as error:
                    # The readings are already in hand; a meter that ignores RLRQ must not spoil them.
                    LOG.warning("release failed, closing the link anyway: %s", error)
        finally:
            await self.transport.aclose()

    @property
    def client_invocation_counter(self) -> int | None:
        """The next client invocation counter (ciphered associations), for recorders and tests."""
        return None if self._connection is None else self._connection.client_invocation_counter

    def _new_connection(self, first_invocation_counter: int) -> DlmsConnection:
        security = self.security
        settings = DlmsConnectionSettings(use_rlrq_rlre=self.use_release)
        if isinstance(security, HlsGmacSecurity):
            hls = HighLevelSecurityGmacAuthentication(challenge_length=32)
            if self.challenge_factory is not None:
                hls.calling_authentication_value = self.challenge_factory(32)
            return DlmsConnection(
                authentication=hls,
                client_system_title=security.client_system_title or self.client_system_title,
                global_encryption_key=security.encryption_key,
                global_authentication_key=security.authentication_key,
                security_suite=0,
                client_invocation_counter=first_invocation_counter,
                max_pdu_size=self.max_pdu_size,
                conformance=client_conformance(ciphered=True),
                settings=settings,
            )
        if isinstance(security, LowLevelSecurity):
            authentication: Any = LowLevelSecurityAuthentication(secret=security.password)
        else:
            authentication = NoSecurityAuthentication()
        return DlmsConnection(
            authentication=authentication,
            client_system_title=self.client_system_title,
            max_pdu_size=self.max_pdu_size,
            conformance=client_conformance(ciphered=False),
            settings=settings,
        )

    async def associate(self) -> None:
        """AARQ/AARE, then for HLS the reply to the meter's challenge and the check of its answer."""
        first_ic = 0
        if isinstance(self.security, HlsGmacSecurity):
            assert self.invocation_counters is not None
            first_ic = await self.invocation_counters.load(self.meter_id)
            self._reserved_until = first_ic
        self._connection = connection = self._new_connection(first_ic)
        self._broken = False
        try:
            reply = await self._exchange(connection.get_aarq(), phase="association")
        except (DecodeError, ServiceError) as exc:
            raise AssociationRejected(self.meter_id, f"association failed: {exc.message}") from exc
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
            raise AssociationRejected(self.meter_id, message, diagnostic=diagnostic_name)

        if connection.state.current_state == dlms_state.SHOULD_SEND_HLS_SEVER_CHALLENGE_RESULT:
            await self._reply_to_hls_challenge(connection)
        if connection.state.current_state != dlms_state.READY:
            self._broken = True
            raise AssociationRejected(
                self.meter_id, f"association not ready after AARE (state {connection.state.current_state!r})"
            )
        self._associated = True
        LOG.debug("meter %s associated (%s)", self.meter_id, type(self.security).__name__)

    async def _reply_to_hls_challenge(self, connection: DlmsConnection) -> None:
        try:
            await self._reserve_invocation_counters()
            reply_data = connection.authentication.hls_generate_reply_data(connection)
        except _LIBRARY_DECODE_ERRORS + _LIBRARY_CIPHER_ERRORS as exc:
            self._broken = True
            raise AuthenticationFailed(self.meter_id, "cannot answer the meter's HLS challenge") from exc
        request = xdlms.ActionRequestNormal(
            cosem_method=cosem.CosemMethod(enumerations.CosemInterface.ASSOCIATION_LN, CURRENT_ASSOCIATION, 1),
            data=dlms_data.OctetStringData(reply_data).to_bytes(),
        )
        try:
            reply = await self._exchange(request, phase="hls")
        except DecodeError as exc:
            raise AuthenticationFailed(self.meter_id, "HLS: the meter's answer does not verify") from exc
        except ServiceError as exc:
            raise AuthenticationFailed(self.meter_id, f"HLS reply refused: {exc.message}") from exc
        if connection.state.current_state != dlms_state.READY:
            self._broken = True
            detail = getattr(getattr(reply, "status", None), "name", type(reply).__name__)
            raise AuthenticationFailed(self.meter_id, f"HLS authentication failed ({detail})")

    async def release(self) -> None:
        """RLRQ/RLRE; for meters configured with ``use_release=False`` only ends the association locally."""
        connection = self._require_ready()
        self._associated = False
        if not self.use_release:
            return
        try:
            reply = await self._exchange(connection.get_rlrq(), phase="release")
        except dlms_exceptions.NoRlrqRlreError:
            return
        if not isinstance(reply, acse.ReleaseResponse):
            raise ServiceError(self.meter_id, f"expected a release response, got {type(reply).__name__}")

    # -- reading -----------------------------------------------------------------------------

    async def get(self, attribute: cosem.CosemAttribute, *, access: RangeDescriptor | None = None) -> bytes:
        """The A-XDR encoded value of one attribute (block transfer handled).

        Raises AccessDenied (with the data-access result) if the meter refuses the attribute, and
        UnreadableAnswer if its answer does not decode; the session stays usable after either.
        """
        self._require_ready()
        reply = await self._get_exchange(
            xdlms.GetRequestNormal(
                cosem_attribute=attribute, access_selection=access, invoke_id_and_priority=self._next_invoke_id()
            )
        )
        if reply.kind == "block":
            return await self._collect_blocks(reply, f"GET {_describe(attribute)}")
        if reply.kind != "normal":
            raise self._unreadable(f"a GET with list answer to a GET of {_describe(attribute)}")
        (result,) = reply.results
        if isinstance(result, int):
            name = _access_result_name(result)
            raise AccessDenied(self.meter_id, f"GET {_describe(attribute)} refused: {name}", result=name)
        return result

    async def get_with_list(
        self, attributes: Sequence[cosem.CosemAttribute | cosem.CosemAttributeWithSelection]
    ) -> list[bytes | AccessDenied]:
        """Several attributes in one GET-with-list; per attribute its A-XDR bytes or an AccessDenied value."""
        self._require_ready()
        if not attributes:
            return []
        selections = [
            item if isinstance(item, cosem.CosemAttributeWithSelection) else cosem.CosemAttributeWithSelection(item, None)
            for item in attributes
        ]
        reply = await self._get_exchange(
            xdlms.GetRequestWithList(
                cosem_attributes_with_selection=selections, invoke_id_and_priority=self._next_invoke_id()
            )
        )
        if reply.kind == "list":
            results = reply.results
        elif reply.kind == "block":
            # A long list answer comes as blocks whose concatenation is the list body.
            results = self._parse_list_body(await self._collect_blocks(reply, "GET with list"))
        else:
            (result,) = reply.results
            if isinstance(result, int):
                name = _access_result_name(result)
                raise AccessDenied(self.meter_id, f"GET with list refused: {name}", result=name)
            raise self._unreadable("a GET normal answer to a GET with list")
        if len(results) != len(selections):
            raise self._unreadable(f"asked for {len(selections)} attributes, got {len(results)} answers")
        out: list[bytes | AccessDenied] = []
        for selection, result in zip(selections, results):
            if isinstance(result, int):
                name = _access_result_name(result)
                out.append(AccessDenied(self.meter_id, f"GET {_describe(selection.attribute)} refused: {name}", result=name))
            else:
                out.append(result)
        return out

    async def get_profile_range(
        self,
        buffer: cosem.CosemAttribute,
        start: datetime,
        end: datetime,
        *,
        restricting_object: cosem.CosemAttribute = CLOCK_TIME,
    ) -> bytes:
        """A profile generic buffer restricted to [start, end] by range selective access (descriptor 1),
        all columns (dlms-cosem cannot encode a column selection).

        ``start``/``end`` must be aware; they are sent with their UTC offset as the meter's deviation.
        """
        if start.tzinfo is None or end.tzinfo is None:
            raise ConfigError(self.meter_id, "profile range bounds must be timezone-aware datetimes")
        if end < start:
            raise ConfigError(self.meter_id, "profile range ends before it starts")
        descriptor = RangeDescriptor(
            restricting_object=CaptureObject(cosem_attribute=restricting_object, data_index=0),
            from_value=start,
            to_value=end,
        )
        return await self.get(buffer, access=descriptor)

    @property
    def usable(self) -> bool:
        """True while the association can take another request (a refused or unreadable answer
        leaves it usable; a lost link, a timeout or a broken block transfer does not)."""
        return self._associated and not self._broken and self._connection is not None

    async def _collect_blocks(self, reply: GetReply, what: str) -> bytes:
        data = bytearray()
        expected_block = 1
        while True:
            if reply.kind != "block":
                self._broken = True
                raise DecodeError(self.meter_id, f"{what}: a {reply.kind} answer in the middle of a block transfer")
            if reply.results:
                name = _access_result_name(int(reply.results[0]))
                raise AccessDenied(self.meter_id, f"{what}: block transfer aborted: {name}", result=name)
            if reply.block_number != expected_block:
                self._broken = True
                raise DecodeError(self.meter_id, f"block {reply.block_number} arrived, expected block {expected_block}")
            data += reply.block_data
            if len(data) > self.max_transfer_bytes:
                self._broken = True
                raise DecodeError(
                    self.meter_id, f"{what}: block transfer beyond {self.max_transfer_bytes} bytes, refused"
                )
            if reply.last_block:
                return bytes(data)
            expected_block += 1
            reply = await self._get_exchange(
                xdlms.GetRequestNext(
                    block_number=reply.block_number,
                    invoke_id_and_priority=InvokeIdAndPriority.from_bytes(bytes((reply.invoke_id,))),
                )
            )

    def _parse_list_body(self, raw: bytes) -> tuple[bytes | int, ...]:
        try:
            count, pos = decode_length(raw, 0)
            results, end = parse_list_results(raw, pos, count)
            if end != len(raw):
                raise decode_layer.DecodeError(f"{len(raw) - end} bytes left after the list")
        except DecodeLayerError as exc:
            raise self._unreadable(f"GET with list answer unreadable: {exc}") from None
        return results

    # -- the exchange ------------------------------------------------------------------------

    async def _get_exchange(self, request: Any) -> GetReply:
        reply = await self._exchange(request, phase="get")
        if isinstance(reply, GetReply):
            return reply
        raise self._unexpected(reply, self._require_connection())

    async def _exchange(self, request: Any, *, phase: str) -> Any:
        """Encode ``request``, send it, and decode the answer; retries the same bytes after a
        timeout or a corrupt frame. Any failure except a typed refusal or an unreadable answer
        (the exchange itself completed) marks the session broken."""
        connection = self._require_connection()
        try:
            await self._reserve_invocation_counters()
            try:
                payload = _fix_ciphered_length(connection.send(request))
            except dlms_exceptions.NoRlrqRlreError:
                raise
            except Exception as exc:  # noqa: BLE001 - dlms-cosem encoders raise assorted types
                raise DecodeError(self.meter_id, f"cannot encode {type(request).__name__}: {self._safe(exc)}") from exc
            await self.transport.send(payload)
            attempt = 0
            stale = 0
            while True:
                try:
                    raw = await self.transport.receive(self.timeout_s)
                except (MeterTimeout, FrameError) as exc:
                    if attempt >= self.retries:
                        raise
                    attempt += 1
                    LOG.debug("meter %s: %s during %s, retransmitting (%d/%d)", self.meter_id,
                              type(exc).__name__, phase, attempt, self.retries)
                    await self._retry(connection, request, payload)
                    continue
                reply = self._decode(raw, phase, request)
                if reply is _STALE:
                    stale += 1
                    if stale > _MAX_STALE_ANSWERS:
                        raise DecodeError(self.meter_id, f"only stale answers during {phase}")
                    LOG.debug("meter %s: dropped a stale answer during %s", self.meter_id, phase)
                    continue
                if isinstance(reply, xdlms.ExceptionResponse):
                    await self._learn_counter_from(reply)
                    raise ServiceError(
                        self.meter_id,
                        f"exception response to {phase}: {reply.state_error.name}/{reply.service_error.name}",
                    )
                return reply
        except dlms_exceptions.NoRlrqRlreError:
            raise
        except UnreadableAnswer:
            if isinstance(request, xdlms.GetRequestNext):
                self._broken = True  # the meter is in the middle of a transfer we cannot follow
            raise
        except DriverError:
            self._broken = True
            raise

    async def _retry(self, connection: DlmsConnection, request: Any, payload: bytes) -> None:
        """Send the request again. A link with its own retransmission (HDLC: same N(S), the server
        repeats its answer) gets the same frame. On a plain stream (wrapper) a ciphered request is
        re-protected under a new invocation counter, since the meter refuses a replayed counter;
        a duplicate answer is then dropped by its invoke-id."""
        if getattr(self.transport, "link_retransmission", False) or not connection.use_protection:
            await self.transport.retransmit()
            return
        if isinstance(request, (acse.ApplicationAssociationRequest, acse.ReleaseRequest)):
            await self.transport.retransmit()
            return
        await self._reserve_invocation_counters()
        try:
            fresh = _fix_ciphered_length(connection.protect(request).to_bytes())
        except Exception as exc:  # noqa: BLE001 - dlms-cosem encoders raise assorted types
            raise DecodeError(self.meter_id, f"cannot re-encode {type(request).__name__}: {self._safe(exc)}") from exc
        await self.transport.send(fresh)

    def _next_invoke_id(self) -> InvokeIdAndPriority:
        # A different invoke-id per request lets a late duplicate answer (the meter answered both
        # the request and its retransmission) be recognised and dropped instead of being taken as
        # the answer to the next request.
        self._invoke_id = self._invoke_id % 15 + 1
        return InvokeIdAndPriority(invoke_id=self._invoke_id, confirmed=True, high_priority=True)

    def _decode(self, raw: bytes, phase: str, request: Any) -> Any:
        """One answer: ``_STALE`` (meant for an earlier request), a ``GetReply``, or a dlms-cosem APDU.

        No meter bytes reach a dlms-cosem parser unchecked: ciphered answers are deciphered here,
        once; GET answers are parsed by our bounded decoding layer only; the other xDLMS answers
        (HLS reply, errors) are validated by it before dlms-cosem parses them; ACSE answers (BER,
        parsed by dlms-cosem) must fill exactly their announced length and stay under a size bound.
        """
        connection = self._require_connection()
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
        if _is_stale(plain, request):
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
            return self._get_reply(plain, connection)
        try:
            decode_layer.decode_apdu_exact(plain)
        except DecodeLayerError as exc:
            raise DecodeError(self.meter_id, f"undecodable {phase} answer: {exc}") from None
        return self._library_parse(plain, phase)

    def _get_reply(self, plain: bytes, connection: DlmsConnection) -> GetReply:
        state = connection.state
        if state.current_state not in (dlms_state.AWAITING_GET_RESPONSE, dlms_state.AWAITING_GET_BLOCK_RESPONSE):
            self._broken = True
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

    def _decipher(self, raw: bytes, phase: str) -> tuple[bytes, int]:
        connection = self._require_connection()
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
        connection = self._require_connection()
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

    async def _reserve_invocation_counters(self) -> None:
        connection = self._connection
        if connection is None or self.invocation_counters is None or not connection.use_protection:
            return
        # Each APDU (and the HLS reply) uses at most one counter value; reserve ahead in blocks so
        # a crash after use can never make the stored counter lag behind what the meter has seen.
        if connection.client_invocation_counter + 2 > self._reserved_until:
            self._reserved_until = connection.client_invocation_counter + 2 + self.invocation_counter_reserve
            await self.invocation_counters.save(self.meter_id, self._reserved_until)

    async def _learn_counter_from(self, reply: Any) -> None:
        if (
            isinstance(reply, xdlms.ExceptionResponse)
            and reply.service_error == enumerations.ServiceException.INVOCATION_COUNTER_ERROR
            and reply.invocation_counter_data
            and self.invocation_counters is not None
        ):
            # The meter names the counter it expects: the next association starts there.
            await self.invocation_counters.save(self.meter_id, reply.invocation_counter_data)

    # -- helpers -----------------------------------------------------------------------------

    def _unexpected(self, reply: Any, connection: DlmsConnection) -> DriverError:
        self._broken = True
        if isinstance(reply, xdlms.ExceptionResponse):
            return ServiceError(
                self.meter_id, f"exception response: {reply.state_error.name}/{reply.service_error.name}"
            )
        if isinstance(reply, xdlms.ConfirmedServiceError):
            return ServiceError(self.meter_id, f"confirmed service error: {self._safe(reply)}")
        return DecodeError(self.meter_id, f"unexpected answer {type(reply).__name__}")

    def _require_connection(self) -> DlmsConnection:
        if self._connection is None:
            raise ConnectionLost(self.meter_id, "not associated")
        return self._connection

    def _require_ready(self) -> DlmsConnection:
        connection = self._require_connection()
        if self._broken:
            raise ConnectionLost(self.meter_id, "the association failed earlier; open a new session")
        if not self._associated or connection.state.current_state != dlms_state.READY:
            raise ConnectionLost(self.meter_id, "not associated")
        return connection

    def _unreadable(self, message: str) -> UnreadableAnswer:
        return UnreadableAnswer(self.meter_id, message)

    def _safe(self, value: object) -> str:
        text = f"{type(value).__name__}: {value}" if isinstance(value, BaseException) else str(value)
        return redact(text[:300], self._secrets)


def _fix_ciphered_length(payload: bytes) -> bytes:
    """dlms-cosem 25.1.0 writes a general-glo-ciphering content length as one raw byte; A-XDR needs
    the variable-length form above 127 bytes (a long GET-with-list when ciphered)."""
    if len(payload) < 3 or payload[0] != xdlms.GeneralGlobalCipher.TAG:
        return payload
    length_at = 2 + payload[1]
    content = payload[length_at + 1 :]
    if len(content) < 0x80:
        return payload
    return payload[:length_at] + encode_length(len(content)) + content


def _is_stale(plain: bytes, request: Any) -> bool:
    """True for an answer that belongs to an earlier request (other invoke-id, or an earlier block)."""
    expected = getattr(request, "invoke_id_and_priority", None)
    if expected is None or len(plain) < 3 or plain[0] not in (0xC4, 0xC5, 0xC7):
        return False
    if plain[2] & 0x0F != expected.invoke_id:
        return True
    if isinstance(request, xdlms.GetRequestNext) and plain[1] == 0x02 and len(plain) >= 8:
        return int.from_bytes(plain[4:8], "big") <= request.block_number
    return False


def _access_result_name(code: int) -> str:
    try:
        return enumerations.DataAccessResult(code).name
    except ValueError:
        return f"UNKNOWN_{code}"


def _describe(attribute: cosem.CosemAttribute) -> str:
    obis = attribute.instance
    try:
        name = obis.to_string()
    except Exception:  # noqa: BLE001 - only used to name the attribute in a message
        name = repr(obis)
    return f"{name} attr {attribute.attribute}"
