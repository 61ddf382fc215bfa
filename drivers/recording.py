"""Recorded DLMS sessions: a transport that records every APDU, and one that replays a recording.

``RecordingTransport`` wraps any ``Transport`` and notes every event at the APDU boundary (open,
each request sent, each answer received, a timeout or corrupt frame, a retransmission), with the
time since the link was opened. ``SessionRecording`` is such a list plus a header saying where it
came from (make, model, firmware, what was read, security level, the inputs that make the client's
requests deterministic, and the readings obtained); it is stored as a versioned JSON document under
``fixtures/sessions/``.

``ReplayTransport`` serves a recording to the real session code: every request must equal the
recorded one byte for byte, else ``ReplayMismatch``; recorded timeouts and frame errors are raised
again at the same point. Because the recording sits at the APDU boundary it is independent of the
framing (wrapper or HDLC) it was recorded over.

Secrets: a header may only carry the published DLMS test keys and test password (``TEST_SECRETS``);
anything else is refused, so a recording from a real meter cannot leak its keys into ``fixtures/``.
Mismatch errors name positions and lengths, never the bytes (an AARQ carries the LLS password).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from drivers.errors import ConfigError, ConnectionLost, DriverError, FrameError, MeterTimeout
from drivers.transport.base import Transport

FORMAT = "meter-gateway/dlms-session-recording"
FORMAT_VERSION = 1

# Green Book (DLMS UA 1000-2) example keys and the simulator's LLS password: test material only.
TEST_SECRETS: frozenset[bytes] = frozenset({
    bytes.fromhex("000102030405060708090A0B0C0D0E0F"),
    bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"),
    b"12345678",
})

EventKind = Literal["open", "send", "receive", "timeout", "frame-error", "connection-lost", "retransmit", "close"]
_KINDS: frozenset[str] = frozenset(
    {"open", "send", "receive", "timeout", "frame-error", "connection-lost", "retransmit", "close"}
)
_ERRORS: dict[str, type[DriverError]] = {
    "timeout": MeterTimeout, "frame-error": FrameError, "connection-lost": ConnectionLost,
}


class ReplayMismatch(DriverError):
    """The session under replay did something other than the recording: a different request, or a
    request after the recording ended. ``index`` is the position in the recording's events."""

    def __init__(self, meter_id: str | None, message: str, index: int) -> None:
        super().__init__(meter_id, message)
        self.index = index


@dataclass(frozen=True)
class RecordedEvent:
    kind: EventKind
    t: float  # seconds since the transport was opened
    apdu: bytes = b""

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ConfigError(None, f"unknown recorded event kind {self.kind!r}")


@dataclass(frozen=True)
class TestSecrets:
    """The secrets a recorded association used; each must be one of ``TEST_SECRETS``."""

    __test__ = False  # not a pytest test class despite the name

    password: bytes | None = field(default=None, repr=False)
    authentication_key: bytes | None = field(default=None, repr=False)
    encryption_key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("password", "authentication_key", "encryption_key"):
            value = getattr(self, name)
            if value is not None and value not in TEST_SECRETS:
                raise ConfigError(None, f"recording refused: {name} is not a published test secret")

    def __repr__(self) -> str:
        present = [n for n in ("password", "authentication_key", "encryption_key") if getattr(self, n) is not None]
        return f"TestSecrets(test values for {', '.join(present) or 'nothing'})"


@dataclass(frozen=True)
class RecordingHeader:
    """Where a recording came from and what it takes to replay it byte for byte.

    ``session`` holds the client-side inputs that end up in requests (client system title, first
    invocation counter, HLS client challenge, client max PDU size); ``plan`` says what was read with
    which parameters; ``readings`` is what the readers returned, as ``drivers.readings.to_jsonable``.
    """

    make: str
    model: str
    firmware: str
    meter_id: str
    security: str  # "none" | "lls" | "hls_gmac"
    transport: str  # what it was recorded over ("wrapper", "hdlc"); replay does not depend on it
    source: str  # e.g. "drivers.simulator seed 7, simulated time 2026-03-02T00:07:30+00:00"
    reads: tuple[str, ...]
    secrets: TestSecrets = field(default_factory=TestSecrets)
    session: Mapping[str, Any] = field(default_factory=dict)
    plan: Mapping[str, Any] = field(default_factory=dict)
    readings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SessionRecording:
    header: RecordingHeader
    events: tuple[RecordedEvent, ...]

    def to_json(self) -> str:
        h = self.header
        secrets = {
            name: value.hex() for name in ("password", "authentication_key", "encryption_key")
            if (value := getattr(h.secrets, name)) is not None
        }
        document = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "header": {
                "make": h.make, "model": h.model, "firmware": h.firmware, "meter_id": h.meter_id,
                "security": h.security, "transport": h.transport, "source": h.source, "reads": list(h.reads),
                "test_secrets": secrets, "session": dict(h.session), "plan": dict(h.plan),
            },
            "events": "@EVENTS@",
            "readings": dict(h.readings),
        }
        # One event per line, so a diff of two recordings reads exchange by exchange.
        events = ",\n".join(
            "  " + json.dumps({"t": round(e.t, 6), "kind": e.kind, **({"apdu": e.apdu.hex()} if e.apdu else {})})
            for e in self.events
        )
        text = json.dumps(document, indent=1, ensure_ascii=False)
        return text.replace('"@EVENTS@"', "[\n" + events + "\n ]", 1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> SessionRecording:
        try:
            document = json.loads(text)
            if document.get("format") != FORMAT:
                raise ValueError(f"not a session recording (format {document.get('format')!r})")
            if document.get("version") != FORMAT_VERSION:
                raise ValueError(f"recording format version {document.get('version')} is not {FORMAT_VERSION}")
            h = document["header"]
            secrets = {name: bytes.fromhex(value) for name, value in h.get("test_secrets", {}).items()}
            header = RecordingHeader(
                make=h["make"], model=h["model"], firmware=h["firmware"], meter_id=h["meter_id"],
                security=h["security"], transport=h["transport"], source=h["source"], reads=tuple(h["reads"]),
                secrets=TestSecrets(**secrets), session=h.get("session", {}), plan=h.get("plan", {}),
                readings=document.get("readings", {}),
            )
            events = tuple(
                RecordedEvent(kind=e["kind"], t=float(e["t"]), apdu=bytes.fromhex(e.get("apdu", "")))
                for e in document["events"]
            )
        except ConfigError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(None, f"unreadable session recording: {type(exc).__name__}: {exc}") from None
        return cls(header, events)


def save_recording(recording: SessionRecording, path: str | Path) -> None:
    Path(path).write_text(recording.to_json(), encoding="utf-8")


def load_recording(path: str | Path) -> SessionRecording:
    return SessionRecording.from_json(Path(path).read_text(encoding="utf-8"))


class RecordingTransport:
    """Passes everything through to ``inner`` and notes it; ``events`` is the recording so far."""

    def __init__(self, inner: Transport, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.meter_id = inner.meter_id
        self._clock = clock
        self._opened_at: float | None = None
        self._events: list[RecordedEvent] = []

    @property
    def events(self) -> tuple[RecordedEvent, ...]:
        return tuple(self._events)

    def _note(self, kind: EventKind, apdu: bytes = b"") -> None:
        if self._opened_at is None:
            self._opened_at = self._clock()
        self._events.append(RecordedEvent(kind, self._clock() - self._opened_at, apdu))

    async def open(self) -> None:
        self._opened_at = self._clock()
        await self.inner.open()
        self._note("open")

    async def send(self, apdu: bytes) -> None:
        self._note("send", apdu)
        await self.inner.send(apdu)

    async def receive(self, timeout_s: float) -> bytes:
        try:
            apdu = await self.inner.receive(timeout_s)
        except MeterTimeout:
            self._note("timeout")
            raise
        except FrameError:
            self._note("frame-error")
            raise
        except ConnectionLost:
            self._note("connection-lost")
            raise
        self._note("receive", apdu)
        return apdu

    async def retransmit(self) -> None:
        self._note("retransmit")
        await self.inner.retransmit()

    async def aclose(self) -> None:
        if self._events and self._events[-1].kind != "close":
            self._note("close")
        await self.inner.aclose()

    def recording(self, header: RecordingHeader) -> SessionRecording:
        return SessionRecording(header, self.events)


class ReplayTransport:
    """Serves a recording to a session; any request that differs from it raises ``ReplayMismatch``."""

    def __init__(self, recording: SessionRecording, *, meter_id: str | None = None) -> None:
        self.recording = recording
        self.meter_id = meter_id or recording.header.meter_id
        self._events = recording.events
        self._next = 0
        self._open = False

    @property
    def finished(self) -> bool:
        """True when every recorded event up to the final close has been replayed."""
        remaining = self._events[self._next:]
        return all(e.kind == "close" for e in remaining)

    def _take(self, kinds: tuple[str, ...], doing: str) -> RecordedEvent:
        if self._next >= len(self._events):
            raise ReplayMismatch(self.meter_id, f"{doing} after the end of the recording", self._next)
        event = self._events[self._next]
        if event.kind not in kinds:
            raise ReplayMismatch(
                self.meter_id, f"{doing} at event {self._next}, but the recording has {event.kind} there", self._next
            )
        self._next += 1
        return event

    async def open(self) -> None:
        self._take(("open",), "open")
        self._open = True

    async def send(self, apdu: bytes) -> None:
        self._require_open()
        index = self._next
        expected = self._take(("send",), f"a {len(apdu)}-byte request").apdu
        if apdu != expected:
            offset = next((i for i, (a, b) in enumerate(zip(apdu, expected)) if a != b), min(len(apdu), len(expected)))
            raise ReplayMismatch(
                self.meter_id,
                f"request {index} differs from the recording: {len(apdu)} bytes vs {len(expected)} recorded, "
                f"first difference at byte {offset}",
                index,
            )

    async def receive(self, timeout_s: float) -> bytes:
        self._require_open()
        event = self._take(("receive", "timeout", "frame-error", "connection-lost"), "a receive")
        error = _ERRORS.get(event.kind)
        if error is not None:
            raise error(self.meter_id, f"recorded {event.kind} (replayed)")
        return event.apdu

    async def retransmit(self) -> None:
        self._require_open()
        self._take(("retransmit",), "a retransmission")

    async def aclose(self) -> None:
        # Cleanup never fails: a close the recording does not have shows up as ``finished`` being False.
        if self._open and self._next < len(self._events) and self._events[self._next].kind == "close":
            self._next += 1
        self._open = False

    def _require_open(self) -> None:
        if not self._open:
            raise ConnectionLost(self.meter_id, "replay transport is not open")


class MemoryInvocationCounterStore:
    """An ``InvocationCounterStore`` in memory, for recordings and replays that must start from a
    known counter. Never for real meters: the counter would go back after a restart."""

    def __init__(self, initial: Mapping[str, int] | None = None) -> None:
        self._next_unused: dict[str, int] = dict(initial or {})

    async def load(self, meter_id: str) -> int:
        return self._next_unused.get(meter_id, 0)

    async def save(self, meter_id: str, next_unused: int) -> None:
        self._next_unused[meter_id] = max(next_unused, self._next_unused.get(meter_id, 0))
