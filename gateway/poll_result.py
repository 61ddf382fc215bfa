"""What one poll of one meter read: the driver readings of every step, bundled as one value.

The scheduler fills a ``PollResult`` from the readers (``drivers.readers``) and hands it to the
normalizer (``gateway.normalize``), which turns it into domain events. A step that failed leaves
its readings empty and records a ``StepError`` instead, so a poll that read the registers but timed
out on the load profile still stores the registers. ``read_time`` is the gateway's UTC time of the
poll; it stamps readings that carry no time of their own (class 3 registers).
"""
from __future__ import annotations

from dataclasses import dataclass
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
class PollResult:
    meter_id: str
    read_time: datetime  # aware; normalised to UTC
    identity: Identity | None = None
    clock: ClockReading | None = None
    registers: tuple[RegisterReading | RegisterRefused, ...] = ()
    profiles: tuple[ProfileReading, ...] = ()
    events: tuple[EventLogEntry, ...] = ()
    errors: tuple[StepError, ...] = ()

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


__all__ = ["POLL_STEPS", "InvalidPollResult", "PollResult", "PollStep", "StepError"]
