"""SET and ACTION in the sans-IO session core and the bounded decoding layer, from bytes (issue 14,
item 1): an independent implementation's exchange, the result names, SET with block transfer step
by step, and malformed answers (hypothesis) ending in typed errors without hanging.

Independent peer: the SET request/answer pair is the one in Circutor's Go DLMS client gosem
(github.com/Circutor/gosem, pkg/client set tests: ``C101C1000300015E230BFF02000600002710`` answered
``C501C100``, and ``C501C10102`` as a failure). dlms-cosem encodes our SET-Request-Normal and
ACTION-Request-Normal, and the simulator answers with dlms-cosem classes too for ACTION: the byte
tests here are the check that does not rest on that library.
"""
from __future__ import annotations

import pytest
from dlms_cosem import cosem, enumerations as enums
from hypothesis import HealthCheck, given, settings, strategies as st

from drivers.decode.errors import DecodeError as LayerDecodeError
from drivers.decode.set_action_reply import ActionReply, SetReply, parse_action_reply, parse_set_reply
from drivers.errors import AccessDenied, ConfigError, DataAccessRefused, DecodeError, DriverError, UnreadableAnswer
from drivers.session import DlmsSession
from drivers.session_core import Acted, ClientAssociation, NeedNextSetBlock, Refused, Written

try:
    from .test_malformed_answers import hang_guard
    from .test_session import AARE, ENERGY, ScriptedTransport
except ImportError:
    from test_malformed_answers import hang_guard
    from test_session import AARE, ENERGY, ScriptedTransport

DEMAND = cosem.CosemAttribute(enums.CosemInterface.REGISTER, cosem.Obis(0, 1, 94, 35, 11, 255), 2)
CLOCK = cosem.Obis(0, 0, 1, 0, 0, 255)
CLOCK_TIME = cosem.CosemAttribute(enums.CosemInterface.CLOCK, CLOCK, 2)
SHIFT_TIME = cosem.CosemMethod(enums.CosemInterface.CLOCK, CLOCK, 6)
DATE_TIME = bytes.fromhex("090C07EA030201000730FF FFC400".replace(" ", ""))


def associated(**options: object) -> ClientAssociation:
    core = ClientAssociation("m-1", **options)  # type: ignore[arg-type]
    core.associate()
    core.receive(AARE)
    assert core.usable
    return core


# -- an independent implementation's bytes -------------------------------------------------------

def test_set_request_and_answer_match_gosem() -> None:
    core = associated()
    request = core.set(DEMAND, bytes.fromhex("0600002710"))
    assert request.hex().upper() == "C101C1000300015E230BFF02000600002710"
    assert core.receive(bytes.fromhex("C501C100")) == Written()
    assert core.usable


def test_gosem_failure_answer_is_unreadable_and_the_association_goes_on() -> None:
    # Five bytes where Set-Response-Normal has four: the answer is meant for this request (its
    # invoke-id matches) but does not decode.
    core = associated()
    core.set(DEMAND, bytes.fromhex("0600002710"))
    with pytest.raises(UnreadableAnswer, match="Set-Response-Normal of 5 bytes"):
        core.receive(bytes.fromhex("C501C10102"))
    assert core.usable
    core.get(ENERGY)


@pytest.mark.parametrize(
    ("answer", "kind", "name"),
    [
        ("C501C103", AccessDenied, "READ_WRITE_DENIED"),
        ("C501C10D", AccessDenied, "SCOPE_OF_ACCESS_VIOLATED"),
        ("C501C101", DataAccessRefused, "HARDWARE_FAULT"),
        ("C501C10C", DataAccessRefused, "TYPE_UNMATCHED"),
        ("C501C1FA", DataAccessRefused, "OTHER_REASON"),
        ("C501C177", DataAccessRefused, "UNKNOWN_119"),
    ],
)
def test_a_refused_set_names_its_data_access_result(answer: str, kind: type, name: str) -> None:
    core = associated()
    core.set(CLOCK_TIME, DATE_TIME)
    event = core.receive(bytes.fromhex(answer))
    assert isinstance(event, Refused) and type(event.error) is kind
    assert event.error.result == name
    assert core.usable


@pytest.mark.parametrize(
    ("answer", "event"),
    [
        ("C701C10000", Acted(None)),  # success, no return parameters (Green Book 9.3.10)
        ("C701C1000100110A", Acted(b"\x11\x0a")),  # success, returning unsigned 10
    ],
)
def test_action_answers(answer: str, event: Acted) -> None:
    core = associated()
    request = core.action(SHIFT_TIME, b"\x10\x00\x1e")
    assert request.hex().upper() == "C301C100080000010000FF0601" + "10001E"
    assert core.receive(bytes.fromhex(answer)) == event


@pytest.mark.parametrize(
    ("answer", "kind", "name"),
    [
        ("C701C10300", AccessDenied, "READ_WRITE_DENIED"),
        ("C701C10B00", DataAccessRefused, "OBJECT_UNAVAILABLE"),
        ("C701C10F00", DataAccessRefused, "LONG_ACTION_ABORTED"),  # an Action-Result name, not a Data-Access one
        ("C701C100010104", DataAccessRefused, "OBJECT_UNDEFINED"),  # done, return parameters refused
    ],
)
def test_a_refused_action_names_its_action_result(answer: str, kind: type, name: str) -> None:
    core = associated()
    core.action(SHIFT_TIME, b"\x10\x00\x1e")
    event = core.receive(bytes.fromhex(answer))
    assert isinstance(event, Refused) and type(event.error) is kind and event.error.result == name


# -- SET with block transfer -------------------------------------------------------------------

def test_set_with_block_transfer_step_by_step() -> None:
    core = associated(set_block_transfer=True)
    core.connection.max_pdu_size = 64
    core.connection.conformance.block_transfer_with_set_or_write = True  # as the AARE granted it
    value = b"\x09\x81\x96" + bytes(range(150))
    first = core.set(CLOCK_TIME, value)
    assert first[:3] == b"\xc1\x02\xc1" and first[3:12] == CLOCK_TIME.to_bytes() and first[12] == 0  # no selection
    assert first[13] == 0 and first[14:18] == b"\x00\x00\x00\x01" and len(first) <= 64
    sent = [first]
    event = core.receive(bytes.fromhex("C502C100000001"))
    while isinstance(event, NeedNextSetBlock):
        sent.append(core.next_set_block())
        assert sent[-1][:3] == b"\xc1\x03\xc1" and len(sent[-1]) <= 64
        number = int.from_bytes(sent[-1][4:8], "big")
        answer = (bytes.fromhex("C503C100") if sent[-1][3] else bytes.fromhex("C502C1")) + number.to_bytes(4, "big")
        event = core.receive(answer)
    assert event == Written()
    assert len(sent) > 2
    assert b"".join(_raw(block) for block in sent) == value
    assert core.usable


def _raw(block: bytes) -> bytes:
    """The raw-data octet string of a SET datablock request (after the block number)."""
    at = 18 if block[1] == 2 else 8
    size = block[at]
    if size < 0x80:
        return block[at + 1:at + 1 + size]
    width = size & 0x7F
    size = int.from_bytes(block[at + 1:at + 1 + width], "big")
    return block[at + 1 + width:at + 1 + width + size]


def test_a_block_acknowledged_out_of_order_breaks_the_association() -> None:
    core = associated(set_block_transfer=True)
    core.connection.max_pdu_size = 64
    core.connection.conformance.block_transfer_with_set_or_write = True
    core.set(CLOCK_TIME, b"\x09\x81\x96" + bytes(150))
    with pytest.raises(DecodeError, match="block 7 acknowledged, block 1 was sent"):
        core.receive(bytes.fromhex("C502C100000007"))
    assert not core.usable


def test_a_set_too_large_without_negotiated_block_transfer_is_refused_before_sending() -> None:
    core = associated()
    core.connection.max_pdu_size = 64
    with pytest.raises(ConfigError, match="not negotiated"):
        core.set(CLOCK_TIME, b"\x09\x81\x96" + bytes(150))
    assert core.usable


# -- the decoding layer --------------------------------------------------------------------------

def test_the_layer_parses_each_set_and_action_choice() -> None:
    assert parse_set_reply(bytes.fromhex("C501C100")) == SetReply(0xC1, "normal", 0)
    assert parse_set_reply(bytes.fromhex("C502C100000003")) == SetReply(0xC1, "block", None, 3)
    assert parse_set_reply(bytes.fromhex("C503C10300000004")) == SetReply(0xC1, "last_block", 3, 4)
    assert parse_action_reply(bytes.fromhex("C701C1000100090100")) == ActionReply(0xC1, 0, b"\x09\x01\x00")
    for bad in ("C505C10100", "C501C1", "C502C10000", "C703C100", "C701C100", "C701C10002", "C701C1000100",
                "C701C100010009FF", "C701C1000100110A00"):
        with pytest.raises(LayerDecodeError):
            parse_set_reply(bytes.fromhex(bad)) if bad[:2] == "C5" else parse_action_reply(bytes.fromhex(bad))


# -- malformed answers through the session -------------------------------------------------------

PREFIXES = [b"", b"\xc5", b"\xc5\x01", b"\xc5\x01\xc1", b"\xc5\x02\xc1", b"\xc5\x03\xc1", b"\xc7", b"\xc7\x01\xc1",
            b"\xc7\x01\xc1\x00\x01", b"\xc7\x01\xc1\x00\x01\x00\x01\x84", b"\xd8", b"\xdb", b"\xc4\x01\xc1"]


@pytest.mark.anyio
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=st.sampled_from(PREFIXES), tail=st.binary(max_size=40), action=st.booleans())
async def test_malformed_set_and_action_answers_end_in_a_typed_error(prefix: bytes, tail: bytes, action: bool) -> None:
    transport = ScriptedTransport([AARE, prefix + tail])
    with hang_guard():
        async with DlmsSession(transport, timeout_s=0.2, retries=0, use_release=False) as s:  # type: ignore[arg-type]
            try:
                if action:
                    result = await s.action(SHIFT_TIME, b"\x10\x00\x1e")
                    assert result is None or isinstance(result, bytes)
                else:
                    await s.set(CLOCK_TIME, DATE_TIME)
            except DriverError as exc:
                assert str(exc).startswith("meter fuzz-meter: ")
