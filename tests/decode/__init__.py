"""Tests of the sans-IO decoding layer (drivers.decode) on real meter traces copied into fixtures/traces."""
from __future__ import annotations

from pathlib import Path

from drivers.decode.tracefile import TraceFile, load_trace
from drivers.recording import load_recording

TRACES = Path(__file__).resolve().parents[2] / "fixtures" / "traces"
SESSIONS = Path(__file__).resolve().parents[2] / "fixtures" / "sessions"


def trace(name: str) -> TraceFile:
    return load_trace(TRACES / name)


def recorded_aare_with_malformed_initiate_response() -> bytes:
    """The AARE of the recorded Kamstrup Omnipower session (no security), with the conformance tag of
    its InitiateResponse (user-information) changed from 5F 1F 04 to 5E 1F 04: dlms-cosem 25.1.0
    prints the three bytes before it raises (the fuzz campaign's finding, issue 10 item 4)."""
    recording = load_recording(SESSIONS / "kamstrup_omnipower_none.json")
    aare = next(event.apdu for event in recording.events if event.kind == "receive")
    assert aare[0] == 0x61 and aare.count(b"\x5f\x1f\x04") == 1 and aare.endswith(b"\x00\x07")
    return aare.replace(b"\x5f\x1f\x04", b"\x5e\x1f\x04")
