"""Recorded sessions (``fixtures/sessions/``) replay byte for byte through the real session and readers.

Each fixture was recorded from the simulator by ``tests/fixtures_tools/record_sessions.py``; its
header holds the client-side inputs and the read plan, so the session sends exactly the recorded
requests, and the readings it produces must equal the recorded ones. A changed request must end in
``ReplayMismatch``, and recordings refuse anything but published test secrets.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from drivers.errors import ConfigError, MeterTimeout
from drivers.meters import get_profile
from drivers.recording import (
    RecordedEvent,
    RecordingHeader,
    RecordingTransport,
    ReplayMismatch,
    ReplayTransport,
    SessionRecording,
    TestSecrets,
    load_recording,
)
from tests.fixtures_tools.record_sessions import (
    LEVELS,
    SESSIONS_DIR,
    TARGETS,
    fixture_name,
    run_plan,
    session_for,
)

pytestmark = pytest.mark.anyio

FIXTURES = [(target, level) for target in TARGETS for level in LEVELS]


async def replay(recording: SessionRecording, plan_changes: dict | None = None) -> tuple[dict, ReplayTransport]:
    header = recording.header
    plan = dict(header.plan)
    plan.update(plan_changes or {})
    profile = get_profile(plan["make"], plan["model"])
    transport = ReplayTransport(recording)
    async with session_for(transport, header.security, header.secrets, dict(header.session), profile) as session:
        readings = await run_plan(session, profile, plan)
    return readings, transport


def test_there_is_a_fixture_per_make_and_security_level() -> None:
    names = sorted(p.name for p in SESSIONS_DIR.glob("*.json"))
    assert names == sorted(fixture_name(t, level) for t, level in FIXTURES)


@pytest.mark.parametrize(("target", "level"), FIXTURES, ids=[fixture_name(t, lv)[:-5] for t, lv in FIXTURES])
async def test_fixture_replays_byte_for_byte(target: object, level: str) -> None:
    recording = load_recording(SESSIONS_DIR / fixture_name(target, level))  # type: ignore[arg-type]
    header = recording.header
    assert header.security == level
    readings, transport = await replay(recording)
    assert transport.finished
    assert readings == dict(header.readings)
    # What the fixture promises: a day of 15-minute profile that needed block transfer, an event log.
    assert len(readings["profile"]["rows"]) == 96
    assert readings["profile"]["capture_period_s"] == 900
    assert readings["event_log"], "a week of event log with entries"
    responses = [e.apdu for e in recording.events if e.kind == "receive"]
    plain_blocks = [r for r in responses if r[:2] == b"\xc4\x02"]
    assert plain_blocks or level == "hls_gmac"  # ciphered blocks are opaque until deciphered
    assert header.firmware == readings["identity"]["firmware"]


async def test_a_changed_request_fails_with_the_typed_error() -> None:
    recording = load_recording(SESSIONS_DIR / fixture_name(TARGETS[1], "none"))
    one_more_day = dict(recording.header.plan["profile"])
    one_more_day["start"] = one_more_day["start"].replace("2026-03-01", "2026-02-28")
    with pytest.raises(ReplayMismatch, match="differs from the recording") as caught:
        await replay(recording, {"profile": one_more_day})
    assert caught.value.meter_id == recording.header.meter_id
    assert recording.events[caught.value.index].kind == "send"


async def test_a_wrong_password_changes_the_first_request() -> None:
    recording = load_recording(SESSIONS_DIR / fixture_name(TARGETS[0], "lls"))
    # The AARQ carries the password; replaying with another one must fail on that very request,
    # and the error must not show either password.
    tampered = dataclasses.replace(recording, header=dataclasses.replace(
        recording.header, secrets=TestSecrets(password=bytes.fromhex("000102030405060708090A0B0C0D0E0F"))))
    with pytest.raises(ReplayMismatch) as caught:
        await replay(tampered)
    assert caught.value.index == 1  # event 0 is the open
    assert "12345678" not in str(caught.value) and "000102" not in str(caught.value)


async def test_recorded_timeouts_replay_as_timeouts() -> None:
    events = (RecordedEvent("open", 0.0), RecordedEvent("send", 0.01, b"\xc0\x01"), RecordedEvent("timeout", 5.0),
              RecordedEvent("retransmit", 5.0), RecordedEvent("receive", 5.1, b"\xc4\x01"), RecordedEvent("close", 5.2))
    header = RecordingHeader(make="X", model="Y", firmware="1", meter_id="m", security="none",
                             transport="wrapper", source="hand-made", reads=())
    transport = ReplayTransport(SessionRecording(header, events))
    await transport.open()
    await transport.send(b"\xc0\x01")
    with pytest.raises(MeterTimeout):
        await transport.receive(1.0)
    await transport.retransmit()
    assert await transport.receive(1.0) == b"\xc4\x01"
    with pytest.raises(ReplayMismatch, match="after the end|recording has close"):
        await transport.send(b"\xc0\x02")
    await transport.aclose()


async def test_recording_transport_notes_what_the_inner_transport_did() -> None:
    recording = load_recording(SESSIONS_DIR / fixture_name(TARGETS[0], "none"))
    recorder = RecordingTransport(ReplayTransport(recording))
    header = recording.header
    profile = get_profile(header.plan["make"], header.plan["model"])
    async with session_for(recorder, header.security, header.secrets, dict(header.session), profile) as session:
        await run_plan(session, profile, dict(header.plan))
    again = recorder.recording(header)
    assert [(e.kind, e.apdu) for e in again.events] == [(e.kind, e.apdu) for e in recording.events]
    assert all(b.t >= a.t for a, b in zip(again.events, again.events[1:]))
    assert SessionRecording.from_json(again.to_json()).events == tuple(
        dataclasses.replace(e, t=round(e.t, 6)) for e in again.events)


def test_only_test_secrets_may_be_recorded(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a published test secret"):
        TestSecrets(encryption_key=bytes(range(16)) [::-1])
    with pytest.raises(ConfigError, match="not a published test secret"):
        TestSecrets(password=b"real-password")
    text = (SESSIONS_DIR / fixture_name(TARGETS[0], "lls")).read_text("utf-8")
    (tmp_path / "leak.json").write_text(text.replace(b"12345678".hex(), b"secret99".hex()), "utf-8")
    with pytest.raises(ConfigError, match="not a published test secret"):
        load_recording(tmp_path / "leak.json")


def test_fixture_files_are_what_the_recorder_writes() -> None:
    # Re-serialising a loaded fixture gives the file back: nothing in it is outside the format.
    for target, level in FIXTURES:
        path = SESSIONS_DIR / fixture_name(target, level)
        assert load_recording(path).to_json() == path.read_text("utf-8")

