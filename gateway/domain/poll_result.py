"""What one poll of one meter read: the driver readings of every step, bundled as one value.

The poller fills a ``PollResult`` from the readers (``drivers.readers``) and hands it to the
normalizer (``gateway.domain.normalize``), which turns it into domain events. A step that failed leaves
its readings empty and records a ``StepError`` instead, so a poll that read the registers but timed
out on the load profile still stores the registers. ``read_time`` is the gateway's UTC time of the
poll; it stamps readings that carry no time of their own (class 3 registers).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Literal

from drivers.readings import (
    ClockReading,
    EventLogEntry,
    Identity,
    ProfileReading,
    RegisterReading,
    RegisterRefused,
)

PollStep = Literal["identity", "clock", "registers", "load_profile", "event_log"]
POLL_STEPS: tuple[PollStep, ...] = ("identity", "clock", "registers", "load_profile", "event_log")
STEP_ORDER = POLL_STEPS  # the order one session runs the steps in
NOT_ATTEMPTED = "NotAttempted"  # a StepError kind: the session ended before the step


class InvalidPollResult(ValueError):
    """A PollResult built from values that break its rules (a programming error upstream)."""

    def __init__(self, meter_id: object, message: str) -> None:
        self.meter_id = meter_id
        super().__init__(f"poll result of meter {meter_id!r}: {message}")


@dataclass(frozen=True, slots=True)
class StepError:
    """Why one step of a poll failed; ``obis`` names the object when the step reads several."""

    step: PollStep
    kind: str  # the error's type name, e.g. "MeterTimeout", "AccessDenied"
    message: str  # must not contain secrets: drivers' errors never carry keys or passwords
    obis: str | None = None


@dataclass(frozen=True, slots=True)
class ClockSyncOutcome:
    """What the clock step's synchronisation did: set the clock (``after``: the read after, and
    whether it verified) or refused to (``refused``: why)."""

    method: str
    before: ClockReading
    max_step_s: float
    after: ClockReading | None = None
    verified: bool = False
    refused: str | None = None


@dataclass(frozen=True, slots=True)
class PollResult:
    meter_id: str
    read_time: datetime  # aware; normalised to UTC
    identity: Identity | None = None
    clock: ClockReading | None = None
    registers: tuple[RegisterReading | RegisterRefused, ...] = ()
    profiles: tuple[ProfileReading, ...] = ()
    events: tuple[EventLogEntry, ...] = ()
    errors: tuple[StepError, ...] = ()
    clock_sync: ClockSyncOutcome | None = None

    @property
    def registers_read(self) -> int:
        """Register values read (refused registers not counted)."""
        return sum(1 for r in self.registers if isinstance(r, RegisterReading))

    def __post_init__(self) -> None:
        if not isinstance(self.meter_id, str) or not self.meter_id:
            raise InvalidPollResult(self.meter_id, "meter_id must be a non-empty string")
        if not isinstance(self.read_time, datetime) or self.read_time.utcoffset() is None:
            raise InvalidPollResult(self.meter_id, f"read_time must be timezone-aware, got {self.read_time!r}")
        object.__setattr__(self, "read_time", self.read_time.astimezone(timezone.utc))
        for name in ("registers", "profiles", "events", "errors"):
            value = getattr(self, name)
            if not isinstance(value, tuple):
                # Lists would make the value mutable and unhashable; accept any sequence, keep a tuple.
                try:
                    object.__setattr__(self, name, tuple(value))
                except TypeError:
                    raise InvalidPollResult(self.meter_id, f"{name} must be a sequence") from None
        for error in self.errors:
            if not isinstance(error, StepError) or error.step not in POLL_STEPS:
                raise InvalidPollResult(self.meter_id, f"errors must be StepErrors of {POLL_STEPS}")

    def failed(self, step: PollStep) -> tuple[StepError, ...]:
        """The errors of ``step`` (empty when it succeeded or was not scheduled)."""
        return tuple(error for error in self.errors if error.step == step)



@dataclass(frozen=True, slots=True)
class PollSummary:
    """What one poll did; ``errors`` say why a step failed (never with secrets)."""

    meter_id: str
    started_at: datetime
    steps: frozenset[PollStep]
    errors: tuple[StepError, ...]
    registers_read: int = 0
    rows_read: int = 0
    log_entries_read: int = 0
    stored: Mapping[str, int] = field(default_factory=dict)  # event type -> events appended now
    already_stored: int = 0  # events of this poll the store already had
    streams: tuple[str, ...] = ()
    duration_s: float = 0.0
    retryable: bool = False  # a failure a new session may cure (timeout, lost link), not a config error
    store_error: str | None = None  # storing failed: what was read is not stored (read again next poll)
    attempts: int = 1  # sessions used (the scheduler's retries merge into one summary)
    result: PollResult | None = field(default=None, repr=False, compare=False)  # the readings

    @property
    def ok(self) -> bool:
        return not self.errors and self.store_error is None

    @property
    def failed_steps(self) -> frozenset[PollStep]:
        return frozenset(error.step for error in self.errors)

    @property
    def first_error(self) -> StepError | None:
        real = [e for e in self.errors if e.kind != NOT_ATTEMPTED]
        return real[0] if real else (self.errors[0] if self.errors else None)

    def describe_error(self) -> str | None:
        error = self.first_error
        if error is None:
            return None if self.store_error is None else f"store: {self.store_error}"
        where = f" ({error.obis})" if error.obis else ""
        return f"{error.kind} in {error.step}{where}: {error.message}"


def safe_message(exc: BaseException) -> str:
    """An error's message for summaries and health: drivers' and config errors never carry secrets."""
    text = str(exc)
    return text if text else type(exc).__name__

__all__ = [
    "NOT_ATTEMPTED", "POLL_STEPS", "STEP_ORDER", "ClockSyncOutcome", "InvalidPollResult", "PollResult", "PollStep", "PollSummary",
    "StepError", "safe_message",
]
