"""An independent scripted meter for driver tests, and its validation against dlms-cosem's own client.

``FakeMeter`` is the server side of an association, built only from dlms-cosem's APDU classes
(``from_bytes``/``to_bytes``) and its AES-GCM/GMAC functions: no code of ours. It answers AARQ
(none/LLS/HLS-GMAC), GET normal/next/with-list (block transfer when an answer exceeds
``block_size``) and RLRQ, and can be told to fail a given request (silence, garbage, disconnect).
``serve_wrapper`` serves it on 127.0.0.1 behind the DLMS wrapper. The tests at the bottom check
this peer against dlms-cosem's blocking ``DlmsClient`` so that the session tests do not test our
client against our own misunderstanding.
"""
from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import pytest
from dlms_cosem import cosem, dlms_data, enumerations as enums, security
from dlms_cosem.protocol import acse, xdlms
from dlms_cosem.protocol.xdlms.conformance import Conformance

SERVER_SYSTEM_TITLE = b"FAK\x00\x01\x02\x03\x04"
SC_AUTH_ENC = security.SecurityControlField(security_suite=0, authenticated=True, encrypted=True)
SC_AUTH_ONLY = security.SecurityControlField(security_suite=0, authenticated=True, encrypted=False)
ENERGY = cosem.CosemAttribute(enums.CosemInterface.REGISTER, cosem.Obis(1, 0, 1, 8, 0, 255), 2)
SCALER_UNIT = cosem.CosemAttribute(enums.CosemInterface.REGISTER, cosem.Obis(1, 0, 1, 8, 0, 255), 3)
SERIAL = cosem.CosemAttribute(enums.CosemInterface.DATA, cosem.Obis(0, 0, 96, 1, 0, 255), 2)
PROFILE = cosem.CosemAttribute(enums.CosemInterface.PROFILE_GENERIC, cosem.Obis(1, 0, 99, 1, 0, 255), 2)
SECRET_REGISTER = cosem.CosemAttribute(enums.CosemInterface.DATA, cosem.Obis(0, 0, 42, 0, 0, 255), 2)


def key(attribute: cosem.CosemAttribute) -> tuple[str, int]:
    return attribute.instance.to_string(), attribute.attribute


def profile_rows(count: int) -> bytes:
    """A profile buffer: array of structures (octet-string timestamp, double-long-unsigned)."""
    rows = [
        dlms_data.DataStructure(
            [dlms_data.OctetStringData(bytes(12)), dlms_data.DoubleLongUnsignedData(1000 + index)]
        )
        for index in range(count)
    ]
    return dlms_data.DataArray(rows).to_bytes()


def default_objects() -> dict[tuple[str, int], bytes | enums.DataAccessResult]:
    return {
        key(ENERGY): dlms_data.DoubleLongUnsignedData(123456).to_bytes(),
        key(SCALER_UNIT): dlms_data.DataStructure(
            [dlms_data.IntegerData(-3), dlms_data.EnumData(30)]
        ).to_bytes(),
        key(SERIAL): dlms_data.OctetStringData(b"57123456").to_bytes(),
        key(PROFILE): profile_rows(96),
        key(SECRET_REGISTER): enums.DataAccessResult.READ_WRITE_DENIED,
    }


@dataclass
class FakeMeter:
    """Server side of DLMS associations; one instance models one meter across connections."""

    level: str = "none"  # "none" | "lls" | "hls"
    password: bytes | None = None
    authentication_key: bytes | None = None
    encryption_key: bytes | None = None
    block_size: int = 0  # 0: never use block transfer
    objects: dict[tuple[str, int], bytes | enums.DataAccessResult] = field(default_factory=default_objects)
    # request ordinal (0-based, over the meter's lifetime) -> "silent" | "garbage" | "close" | "exception"
    faults: dict[int, str] = field(default_factory=dict)
    # request ordinal -> seconds the wrapper server waits before answering it
    delays: dict[int, float] = field(default_factory=dict)

    requests_seen: int = 0
    last_client_ic: int = -1
    access_selections: list[object] = field(default_factory=list)
    requests: list[bytes] = field(default_factory=list)
    errors: int = 0

    def __post_init__(self) -> None:
        self.new_connection()
        self.server_ic = 1

    def new_connection(self) -> None:
        self.associated = False
        self.client_title: bytes | None = None
        self.client_challenge: bytes | None = None
        self.server_challenge = os.urandom(16)
        self.pending_blocks: list[bytes] = []
        self.block_number = 0

    # -- sans-IO entry point -----------------------------------------------------------------

    def handle(self, apdu: bytes) -> bytes | str | None:
        """Answer one request APDU: bytes, None (stay silent) or "close"."""
        ordinal = self.requests_seen
        self.requests_seen += 1
        self.requests.append(apdu)
        fault = self.faults.get(ordinal)
        if fault == "silent":
            return None
        if fault == "close":
            return "close"
        if fault == "garbage":
            return b"\xc4\x09\xc1\x00\x09\xff\xff"  # get-response of an undefined type
        if fault == "exception":
            return xdlms.ExceptionResponse(
                enums.StateException.SERVICE_NOT_ALLOWED, enums.ServiceException.SERVICE_NOT_SUPPORTED
            ).to_bytes()
        tag = apdu[0]
        if tag == acse.ApplicationAssociationRequest.TAG:
            return self._aarq(acse.ApplicationAssociationRequest.from_bytes(apdu))
        if tag == 98:  # RLRQ
            self.associated = False
            return acse.ReleaseResponse(reason=enums.ReleaseResponseReason.NORMAL).to_bytes()
        if self.level == "hls":
            if tag != xdlms.GeneralGlobalCipher.TAG:
                return xdlms.ExceptionResponse(
                    enums.StateException.SERVICE_NOT_ALLOWED, enums.ServiceException.DECIPHERING_ERROR
                ).to_bytes()
            ciphered = xdlms.GeneralGlobalCipher.from_bytes(apdu)
            if ciphered.invocation_counter <= self.last_client_ic:
                # By hand: ExceptionResponse.to_bytes() puts the 32-bit counter in one byte.
                return bytes(
                    [xdlms.ExceptionResponse.TAG, enums.StateException.SERVICE_NOT_ALLOWED,
                     enums.ServiceException.INVOCATION_COUNTER_ERROR]
                ) + (self.last_client_ic + 1).to_bytes(4, "big")
            self.last_client_ic = ciphered.invocation_counter
            plain = security.decrypt(
                ciphered.security_control, self.client_title, ciphered.invocation_counter,
                self.encryption_key, ciphered.ciphered_text, self.authentication_key,
            )
            answer = self._plain(plain)
            return self._cipher(answer) if answer is not None else None
        return self._plain(apdu)

    # -- association ---------------------------------------------------------------------------

    def _aarq(self, aarq: acse.ApplicationAssociationRequest) -> bytes:
        self.new_connection()
        if self.level == "lls" and aarq.authentication_value != self.password:
            return self._aare_reject(enums.AcseServiceUserDiagnostics.AUTHENTICATION_FAILED)
        if self.level == "hls" and aarq.authentication != enums.AuthenticationMechanism.HLS_GMAC:
            return self._aare_reject(enums.AcseServiceUserDiagnostics.AUTHENTICATION_MECHANISM_NAME_REQUIRED)
        if self.level == "none" and aarq.authentication not in (None, enums.AuthenticationMechanism.NONE):
            return self._aare_reject(enums.AcseServiceUserDiagnostics.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNIZED)
        proposed = aarq.user_information.content
        self.proposed_conformance = getattr(proposed, "proposed_conformance", None)
        initiate = xdlms.InitiateResponse(
            negotiated_conformance=Conformance(
                general_protection=self.level == "hls", block_transfer_with_get_or_read=True,
                multiple_references=True, get=True, set=True, selective_access=True, action=True,
            ),
            server_max_receive_pdu_size=1024,
        )
        if self.level != "hls":
            self.associated = True
            return acse.ApplicationAssociationResponse(
                result=enums.AssociationResult.ACCEPTED,
                result_source_diagnostics=enums.AcseServiceUserDiagnostics.NULL,
                user_information=acse.UserInformation(content=initiate),
            ).to_bytes()
        self.client_title = aarq.system_title
        self.client_challenge = aarq.authentication_value
        ic = self._next_server_ic()
        content = xdlms.GlobalCipherInitiateResponse(
            security_control=SC_AUTH_ENC,
            invocation_counter=ic,
            ciphered_text=security.encrypt(
                SC_AUTH_ENC, SERVER_SYSTEM_TITLE, ic, self.encryption_key, initiate.to_bytes(), self.authentication_key
            ),
        )
        return acse.ApplicationAssociationResponse(
            result=enums.AssociationResult.ACCEPTED,
            result_source_diagnostics=enums.AcseServiceUserDiagnostics.AUTHENTICATION_REQUIRED,
            ciphered=True,
            authentication=enums.AuthenticationMechanism.HLS_GMAC,
            system_title=SERVER_SYSTEM_TITLE,
            authentication_value=self.server_challenge,
            user_information=acse.UserInformation(content=content),
        ).to_bytes()

    def _aare_reject(self, diagnostic: enums.AcseServiceUserDiagnostics) -> bytes:
        return acse.ApplicationAssociationResponse(
            result=enums.AssociationResult.REJECTED_PERMANENT, result_source_diagnostics=diagnostic
        ).to_bytes()

    def _hls_reply(self, action: xdlms.ActionRequestNormal) -> bytes:
        reply = dlms_data.DlmsDataParser().parse(action.data, limit=1)[0].value
        sc = security.SecurityControlField.from_bytes(reply[0:1])
        ic = int.from_bytes(reply[1:5], "big")
        expected = security.gmac(sc, self.client_title, ic, self.encryption_key, self.authentication_key,
                                 self.server_challenge)
        if reply[5:] != expected:
            return xdlms.ActionResponseNormal(status=enums.ActionResultStatus.OTHER_REASON).to_bytes()
        self.associated = True
        ic = self._next_server_ic()
        ours = security.gmac(SC_AUTH_ONLY, SERVER_SYSTEM_TITLE, ic, self.encryption_key, self.authentication_key,
                             self.client_challenge)
        body = SC_AUTH_ONLY.to_bytes() + ic.to_bytes(4, "big") + ours
        return xdlms.ActionResponseNormalWithData(
            status=enums.ActionResultStatus.SUCCESS, data=dlms_data.OctetStringData(body).to_bytes()
        ).to_bytes()

    # -- xDLMS ---------------------------------------------------------------------------------

    def _plain(self, apdu: bytes) -> bytes | None:
        tag = apdu[0]
        if tag == 195:  # action request: only reply_to_HLS is known
            return self._hls_reply(xdlms.ActionRequestFactory.from_bytes(apdu))
        if not self.associated:
            return xdlms.ExceptionResponse(
                enums.StateException.SERVICE_NOT_ALLOWED, enums.ServiceException.OPERATION_NOT_POSSIBLE
            ).to_bytes()
        request = xdlms.GetRequestFactory.from_bytes(apdu)
        if isinstance(request, xdlms.GetRequestNext):
            return self._next_block(request.invoke_id_and_priority)
        if isinstance(request, xdlms.GetRequestWithList):
            items: list[object] = []
            for selection in request.cosem_attributes_with_selection:
                value = self.objects.get(key(selection.attribute), enums.DataAccessResult.OBJECT_UNDEFINED)
                if isinstance(value, enums.DataAccessResult):
                    items.append(value)
                else:
                    items.append(dlms_data.DlmsDataParser().parse(value, limit=1)[0])
            return xdlms.GetResponseWithList(
                response_data=items, invoke_id_and_priority=request.invoke_id_and_priority
            ).to_bytes()
        self.access_selections.append(request.access_selection)
        value = self.objects.get(key(request.cosem_attribute), enums.DataAccessResult.OBJECT_UNDEFINED)
        if isinstance(value, enums.DataAccessResult):
            return xdlms.GetResponseNormalWithError(
                error=value, invoke_id_and_priority=request.invoke_id_and_priority
            ).to_bytes()
        if self.block_size and len(value) > self.block_size:
            self.pending_blocks = [value[i : i + self.block_size] for i in range(0, len(value), self.block_size)]
            self.block_number = 0
            return self._next_block(request.invoke_id_and_priority)
        # dlms-cosem 25.1.0's GetResponseNormal.to_bytes() appends bytes to a bytearray (TypeError).
        return b"\xc4\x01" + request.invoke_id_and_priority.to_bytes() + b"\x00" + value

    def _next_block(self, invoke_id: object) -> bytes:
        chunk = self.pending_blocks.pop(0)
        self.block_number += 1
        cls = xdlms.GetResponseLastBlock if not self.pending_blocks else xdlms.GetResponseWithBlock
        return cls(data=chunk, block_number=self.block_number, invoke_id_and_priority=invoke_id).to_bytes()

    def _cipher(self, plain: bytes) -> bytes:
        ic = self._next_server_ic()
        ciphered = security.encrypt(
            SC_AUTH_ENC, SERVER_SYSTEM_TITLE, ic, self.encryption_key, plain, self.authentication_key
        )
        # Built by hand: GeneralGlobalCipher.to_bytes() writes the content length as one byte,
        # which breaks for content over 127 bytes (A-XDR lengths are variable-length).
        content = SC_AUTH_ENC.to_bytes() + ic.to_bytes(4, "big") + ciphered
        return (
            bytes([xdlms.GeneralGlobalCipher.TAG, len(SERVER_SYSTEM_TITLE)]) + SERVER_SYSTEM_TITLE
            + dlms_data.encode_variable_integer(len(content)) + content
        )

    def _next_server_ic(self) -> int:
        self.server_ic += 1
        return self.server_ic


@asynccontextmanager
async def serve_wrapper(meter: FakeMeter, server_wport: int = 1, client_wport: int = 16) -> AsyncIterator[int]:
    """Serve ``meter`` behind the DLMS wrapper on 127.0.0.1; yields the port."""

    async def handle(stream: anyio.abc.SocketStream) -> None:
        meter.new_connection()
        buffer = bytearray()
        async with stream:
            while True:
                try:
                    while len(buffer) < 8 or len(buffer) < 8 + int.from_bytes(buffer[6:8], "big"):
                        buffer += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
                length = int.from_bytes(buffer[6:8], "big")
                apdu = bytes(buffer[8 : 8 + length])
                del buffer[: 8 + length]
                delay = meter.delays.get(meter.requests_seen, 0.0)
                if delay:
                    await anyio.sleep(delay)
                try:
                    answer = meter.handle(apdu)
                except Exception:  # a peer bug must fail the test, not hang it: close, the client errors
                    meter.errors += 1
                    return
                if answer == "close":
                    return
                if isinstance(answer, bytes):
                    header = (1).to_bytes(2, "big") + server_wport.to_bytes(2, "big") + client_wport.to_bytes(2, "big")
                    await stream.send(header + len(answer).to_bytes(2, "big") + answer)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield listener.extra(anyio.abc.SocketAttribute.local_port)
        tg.cancel_scope.cancel()


# -- validation of the peer against dlms-cosem's own blocking client ----------------------------

AK = bytes.fromhex("d0d1d2d3d4d5d6d7d8d9dadbdcdddedf")
EK = bytes.fromhex("000102030405060708090a0b0c0d0e0f")


def _library_client(port: int, meter: FakeMeter):  # type: ignore[no-untyped-def]
    from dlms_cosem.client import DlmsClient
    from dlms_cosem.io import BlockingTcpIO, TcpTransport
    from dlms_cosem.security import (
        HighLevelSecurityGmacAuthentication,
        LowLevelSecurityAuthentication,
        NoSecurityAuthentication,
    )

    from drivers.logging import silence_dlms_cosem_logging

    silence_dlms_cosem_logging()
    transport = TcpTransport(
        client_logical_address=16, server_logical_address=1, io=BlockingTcpIO("127.0.0.1", port, timeout=5)
    )
    if meter.level == "hls":
        return DlmsClient(
            transport=transport, authentication=HighLevelSecurityGmacAuthentication(challenge_length=32),
            encryption_key=EK, authentication_key=AK, client_initial_invocation_counter=meter.last_client_ic + 1,
        )
    if meter.level == "lls":
        return DlmsClient(transport=transport, authentication=LowLevelSecurityAuthentication(secret=meter.password))
    return DlmsClient(transport=transport, authentication=NoSecurityAuthentication())


@pytest.mark.anyio
@pytest.mark.parametrize("level", ["none", "lls", "hls"])
async def test_fake_meter_serves_dlms_cosem_blocking_client(level: str) -> None:
    meter = FakeMeter(level=level, password=b"12345678", authentication_key=AK, encryption_key=EK, block_size=200)

    def read() -> tuple[bytes, bytes]:
        client = _library_client(port, meter)
        with client.session():
            return client.get(ENERGY), client.get(PROFILE)

    async with serve_wrapper(meter) as port:
        energy, profile = await anyio.to_thread.run_sync(read)
    assert energy == dlms_data.DoubleLongUnsignedData(123456).to_bytes()
    assert profile == profile_rows(96)


# -- the same meter behind HDLC (IEC 62056-46), server side ----------------------------------

@dataclass
class HdlcLink:
    """Server side of HDLC for one FakeMeter; frames are encoded with dlms-cosem's frame classes,
    incoming ones parsed by the few lines below (no code shared with drivers.transport.hdlc)."""

    meter: FakeMeter
    client_address: int = 16
    logical: int = 1
    physical: int | None = None
    max_info: int = 128
    # outgoing frame ordinal (0-based over the link's lifetime) -> "corrupt" | "drop"
    faults: dict[int, str] = field(default_factory=dict)
    frames_out: int = 0
    retransmissions: int = 0
    # None: UA without parameters; else the max information length this server can receive,
    # announced in the UA when the SNRM proposes parameters
    ua_max_receive: int | None = None
    snrm_information: list[bytes] = field(default_factory=list)
    largest_info_received: int = 0

    def __post_init__(self) -> None:
        from dlms_cosem.hdlc.address import HdlcAddress

        extended = self.physical is not None and self.physical > 127
        self.server = HdlcAddress(self.logical, self.physical, "server", extended_addressing=extended)
        self.client = HdlcAddress(self.client_address, None, "client")
        self.reset()

    def reset(self) -> None:
        self.vs = 0
        self.vr = 0
        self.incoming = bytearray()
        self.pending: list[bytes] = []  # response segments not yet sent
        self.last_frame: bytes | None = None
        self.last_answer: list[bytes] = []

    def _out(self, frame: bytes) -> bytes | None:
        ordinal = self.frames_out
        self.frames_out += 1
        fault = self.faults.get(ordinal)
        if fault == "drop":
            return None
        if fault == "corrupt":
            return frame[:-3] + bytes([frame[-3] ^ 0xFF]) + frame[-2:]
        return frame

    def _i_frame(self, segment: bytes, segmented: bool) -> bytes:
        from dlms_cosem.hdlc import frames

        frame = frames.InformationFrame(
            destination_address=self.client, source_address=self.server, payload=segment,
            send_sequence_number=self.vs, receive_sequence_number=self.vr, segmented=segmented, final=True,
        ).to_bytes()
        self.vs = (self.vs + 1) % 8
        self.last_frame = frame
        return frame

    def _rr(self) -> bytes:
        from dlms_cosem.hdlc import frames

        return frames.ReceiveReadyFrame(
            destination_address=self.client, source_address=self.server, receive_sequence_number=self.vr
        ).to_bytes()

    def handle_frame(self, body: bytes) -> list[bytes] | str:
        """One client frame (between flags) in, frames out (or "close")."""
        from dlms_cosem.crc import CRCCCITT
        from dlms_cosem.hdlc import frames

        if CRCCCITT().calculate_for(body[:-2]) != body[-2:]:
            return []  # corrupt request: stay silent, as meters do
        dest_end = 2
        while not body[dest_end] & 1:
            dest_end += 1
        dest = body[2 : dest_end + 1]
        src_end = dest_end + 1
        while not body[src_end] & 1:
            src_end += 1
        control = body[src_end + 1]
        if dest != self.server.to_bytes():
            return []  # another station on the bus
        info = body[src_end + 4 : -2] if len(body) > src_end + 4 else b""
        if control & 0xEF == 0x83:  # SNRM
            self.reset()
            self.snrm_information.append(info)
            if info and self.ua_max_receive is not None:
                size = self.ua_max_receive.to_bytes(1, "big")
                params = b"\x05\x01" + size + b"\x06\x01" + size + b"\x07\x04\x00\x00\x00\x01\x08\x04\x00\x00\x00\x01"
                ua = frames.UnNumberedAcknowledgmentFrame(self.client, self.server, bytes([0x81, 0x80, len(params)]) + params)
                return [ua.to_bytes()]
            return [frames.UnNumberedAcknowledgmentFrame(self.client, self.server).to_bytes()]
        if control & 0xEF == 0x43:  # DISC
            self.reset()
            return [frames.UnNumberedAcknowledgmentFrame(self.client, self.server).to_bytes()]
        if control & 0x0F == 0x01:  # RR
            nr = control >> 5
            if self.last_frame is not None and nr == (self.vs - 1) % 8:
                self.retransmissions += 1
                return [self.last_frame]  # the client did not take our last frame: repeat it
            if self.pending:
                segment = self.pending.pop(0)
                return [self._i_frame(segment, segmented=bool(self.pending))]
            return []
        if control & 0x01 == 0:  # I-frame
            ns = (control >> 1) & 7
            if ns != self.vr:
                self.retransmissions += 1
                return list(self.last_answer)  # duplicate request: repeat our answer
            self.vr = (self.vr + 1) % 8
            self.largest_info_received = max(self.largest_info_received, len(info))
            self.incoming += info
            if body[0] & 0x08:  # segmented request: acknowledge and wait for more
                return [self._rr()]
            request = bytes(self.incoming)
            self.incoming = bytearray()
            assert request[:3] == b"\xe6\xe6\x00"
            answer = self.meter.handle(request[3:])
            if answer == "close":
                return "close"
            if not isinstance(answer, bytes):
                return []
            payload = b"\xe6\xe7\x00" + answer
            self.pending = [payload[i : i + self.max_info] for i in range(0, len(payload), self.max_info)]
            segment = self.pending.pop(0)
            self.last_answer = [self._i_frame(segment, segmented=bool(self.pending))]
            return list(self.last_answer)
        return []


async def run_hdlc_links(
    receive: Callable[[], Awaitable[bytes]], send: Callable[[bytes], Awaitable[None]], links: Sequence[HdlcLink]
) -> None:
    """Serve HDLC frames from ``receive`` until the line ends; every link sees every frame."""
    for link in links:
        link.meter.new_connection()
    buffer = bytearray()
    while True:
        try:
            buffer += await receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            return
        while True:
            start = buffer.find(b"\x7e")
            if start < 0 or len(buffer) < start + 3:
                break
            if buffer[start + 1] == 0x7E:  # back-to-back flags
                del buffer[: start + 1]
                continue
            length = ((buffer[start + 1] & 0x07) << 8) | buffer[start + 2]
            if len(buffer) < start + 1 + length + 1:
                break
            body = bytes(buffer[start + 1 : start + 1 + length])
            del buffer[: start + 1 + length + 1]
            for link in links:
                try:
                    out = link.handle_frame(body)
                except Exception:
                    link.meter.errors += 1
                    return
                if out == "close":
                    return
                for frame in out:
                    wire = link._out(frame)
                    if wire is not None:
                        await send(wire)


@asynccontextmanager
async def serve_hdlc(*links: HdlcLink, stats: dict[str, int] | None = None) -> AsyncIterator[int]:
    """Serve one or more HDLC servers sharing one TCP connection, like meters on an RS-485 bus.
    ``stats`` (if given) records "active" and "max_active" TCP connections."""
    counters = stats if stats is not None else {}
    counters.setdefault("active", 0)
    counters.setdefault("max_active", 0)

    async def handle(stream: anyio.abc.SocketStream) -> None:
        counters["active"] += 1
        counters["max_active"] = max(counters["max_active"], counters["active"])
        try:
            await serve_connection(stream)
        finally:
            counters["active"] -= 1

    async def serve_connection(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await run_hdlc_links(stream.receive, stream.send, links)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield listener.extra(anyio.abc.SocketAttribute.local_port)
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_hdlc_link_serves_dlms_cosem_blocking_hdlc_client() -> None:
    from dlms_cosem.client import DlmsClient
    from dlms_cosem.io import BlockingTcpIO, HdlcTransport
    from dlms_cosem.security import NoSecurityAuthentication

    from drivers.logging import silence_dlms_cosem_logging

    silence_dlms_cosem_logging()
    meter = FakeMeter(block_size=400)
    link = HdlcLink(meter, physical=17)

    def read() -> tuple[bytes, bytes]:
        transport = HdlcTransport(
            client_logical_address=16, server_logical_address=1, server_physical_address=17,
            io=BlockingTcpIO("127.0.0.1", port, timeout=5),
        )
        client = DlmsClient(transport=transport, authentication=NoSecurityAuthentication())
        with client.session():
            return client.get(ENERGY), client.get(PROFILE)

    async with serve_hdlc(link) as port:
        energy, profile = await anyio.to_thread.run_sync(read)
    assert energy == dlms_data.DoubleLongUnsignedData(123456).to_bytes()
    assert profile == profile_rows(96)
    assert meter.errors == 0
