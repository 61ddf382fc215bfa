"""What one session reads of a meter: the due steps, in order, each failing alone where it can.

``MeterReader.read`` runs the readers (``drivers.readers``) for the due steps in one session, until
the meter's deadline: the load profile caught up from its last stored interval end in range reads of
at most a day (``catch_up_ranges``), the event log from its newest stored entry. A refused, unreadable
or unusable answer fails its step while the association is usable; any other driver failure ends the
session, and whatever was read before it is kept (``Reads``).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import logging

import anyio

from drivers.clock_writer import set_clock, shift_clock
from drivers.errors import DataAccessRefused, DriverError, UnusableReply
from drivers.meters import MeterProfile
from drivers.readers import (
    ScalerUnitCache,
    read_clock,
    read_event_log,
    read_identity,
    read_profile,
    read_registers,
)
from drivers.readings import ClockReading, EventLogEntry, Identity, ProfileReading, RegisterReading, RegisterRefused
from drivers.session import DlmsSession
from gateway.config.model import MeterConfig
from gateway.domain.poll_result import NOT_ATTEMPTED, ClockSyncOutcome, PollStep, StepError, safe_message
from gateway.polling.clock_sync import decide, verified

log = logging.getLogger(__name__)

ONE_SECOND = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class PollerSettings:
    profile_backfill: timedelta = timedelta(days=1)  # first contact: how far back to read the profile
    max_catch_up: timedelta = timedelta(days=7)  # profile read per poll at most; the rest next poll
    chunk: timedelta = timedelta(days=1)  # one range read (one block transfer) covers at most this
    event_log_backfill: timedelta = timedelta(days=7)  # no cursor yet: read the log this far back
    session_retries: int = 1  # exchange re-sends inside one session (after a timeout or bad frame)

    def __post_init__(self) -> None:
        if self.chunk <= timedelta(0) or self.chunk > timedelta(days=1):
            raise ValueError(f"chunk must be positive and at most a day, got {self.chunk}")
        for name in ("profile_backfill", "max_catch_up", "event_log_backfill"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be positive")
        if self.session_retries < 0:
            raise ValueError("session_retries cannot be negative")


def catch_up_ranges(
    last_end: datetime | None, now: datetime, settings: PollerSettings
) -> list[tuple[datetime, datetime]]:
    """The range reads that catch a load profile up from ``last_end`` (its last stored interval end;
    None: never read, start ``profile_backfill`` ago) towards ``now``: contiguous, inclusive, each at
    most ``settings.chunk`` long, ``settings.max_catch_up`` in all (the rest comes next poll)."""
    start = now - settings.profile_backfill if last_end is None else last_end + ONE_SECOND
    limit = min(now, start + settings.max_catch_up)
    ranges = []
    while start < limit:
        end = min(start + settings.chunk, limit)
        ranges.append((start, end))
        start = end + ONE_SECOND  # range bounds are inclusive: do not read the boundary row twice
    return ranges


class Reads:
    """What one session has read so far; kept when the deadline cuts the session short."""

    def __init__(self) -> None:
        self.identity: Identity | None = None
        self.clock: ClockReading | None = None
        self.clock_sync: ClockSyncOutcome | None = None
        self.registers: list[RegisterReading | RegisterRefused] = []
        self.profiles: list[ProfileReading] = []
        self.events: list[EventLogEntry] = []
        self.errors: list[StepError] = []
        self.done: set[PollStep] = set()


class MeterReader:
    """Reads the due steps of one meter in one session; keeps the fleet's register scalers."""

    def __init__(self, settings: PollerSettings, now: Callable[[], datetime]) -> None:
        self.settings = settings
        self.now = now
        self.scalers = ScalerUnitCache()

    async def read(
        self,
        session: DlmsSession,
        meter: MeterConfig,
        profile: MeterProfile,
        steps: list[PollStep],
        interval_ends: Mapping[str, datetime],
        cursors: Mapping[str, datetime],
        now: datetime,
        reads: Reads,
        deadline: float | None,
    ) -> bool:
        """Run the steps in one session; returns True when a failure may be cured by a retry."""
        current: PollStep = steps[0] if steps else "registers"
        doing = "connecting and associating"
        retryable = False
        with anyio.CancelScope(deadline=deadline if deadline is not None else float("inf")) as scope:
            try:
                async with session:
                    for current in steps:
                        doing = f"reading {current}"
                        try:
                            await self._step(session, meter, profile, current, interval_ends, cursors, now, reads)
                            reads.done.add(current)
                        except DriverError as exc:
                            if not session.usable:
                                raise
                            # The meter refused one object, answered it unusably (a reply far larger
                            # than asked, refused unread) or one answer did not decode: the
                            # association is still good, so this step fails alone.
                            obis = exc.obis if isinstance(exc, UnusableReply) else None
                            reads.errors.append(StepError(current, type(exc).__name__, safe_message(exc), obis=obis))
            except DriverError as exc:
                reads.errors.append(StepError(current, type(exc).__name__, safe_message(exc)))
                retryable = True
        if scope.cancelled_caught:
            budget = "" if deadline is None else " (per-meter deadline)"
            reads.errors.append(StepError(current, "MeterTimeout", f"deadline reached while {doing}{budget}"))
            retryable = True
        failed = {e.step for e in reads.errors}
        for step in steps:
            if step not in reads.done and step not in failed:
                reads.errors.append(StepError(step, NOT_ATTEMPTED, f"not read: the session ended while {doing}"))
        return retryable

    async def _step(
        self,
        session: DlmsSession,
        meter: MeterConfig,
        profile: MeterProfile,
        step: PollStep,
        interval_ends: Mapping[str, datetime],
        cursors: Mapping[str, datetime],
        now: datetime,
        reads: Reads,
    ) -> None:
        tz = meter.timezone
        if step == "identity":
            reads.identity = await read_identity(session, profile)
        elif step == "clock":
            reads.clock = await read_clock(session, tz, obis=profile.clock, quirks=profile.quirks, now=self.now)
            if meter.clock_sync.enabled:
                await self._sync_clock(session, meter, profile, reads)
        elif step == "registers":
            reads.registers.extend(await read_registers(
                session, profile.registers, self.scalers, profile=profile, meter_tz=tz,
            ))
        elif step == "load_profile" and profile.load_profile is not None:
            for start, end in catch_up_ranges(interval_ends.get(profile.load_profile), now, self.settings):
                reads.profiles.append(await read_profile(
                    session, profile.load_profile, start, end, meter_tz=tz, scaler_cache=self.scalers,
                    profile=profile, interval_data=True,
                ))
        elif step == "event_log":
            for log_obis in profile.event_logs:
                cursor = cursors.get(log_obis)
                start = cursor + ONE_SECOND if cursor is not None else now - self.settings.event_log_backfill
                if start < now:
                    reads.events.extend(await read_event_log(
                        session, log_obis, start, now, meter_tz=tz, profile=profile,
                    ))

    async def _sync_clock(self, session: DlmsSession, meter: MeterConfig, profile: MeterProfile, reads: Reads) -> None:
        """Correct the clock just read if the policy says so, read it again and verify. A refusal by
        the meter is recorded (ClockSyncRefused) and fails the clock step; the poll goes on."""
        before = reads.clock
        assert before is not None
        policy = meter.clock_sync
        decision = decide(before, policy, meter.timezone)
        if decision.kind == "none":
            return
        if decision.kind == "defer":
            log.info("meter %s: clock sync deferred to the next poll: %s", meter.id, decision.reason)
            return
        if decision.kind == "refuse":
            log.warning("meter %s: clock not synchronised: %s (a tamper or fault signal; correct it by hand "
                        "if it is right)", meter.id, decision.reason)
            reads.clock_sync = ClockSyncOutcome(policy.method, before, policy.max_step_s, refused=decision.reason)
            return
        try:
            if policy.method == "shift_time":
                await shift_clock(session, round(-before.offset.total_seconds()), obis=profile.clock)
            else:
                dst = "daylight_saving_active" in before.status_flags
                await set_clock(session, self.now(), before.deviation_min, meter.timezone, obis=profile.clock,
                                daylight_saving=dst)
        except DataAccessRefused as exc:
            reason = f"{type(exc).__name__}: {safe_message(exc)}"
            log.warning("meter %s: the meter refused the clock sync: %s", meter.id, reason)
            reads.clock_sync = ClockSyncOutcome(policy.method, before, policy.max_step_s, refused=reason)
            raise
        after = await read_clock(session, meter.timezone, obis=profile.clock, quirks=profile.quirks, now=self.now)
        ok = verified(after)
        reads.clock_sync = ClockSyncOutcome(policy.method, before, policy.max_step_s, after=after, verified=ok)
        if ok:
            log.info("meter %s: clock synchronised (%s): offset %+.1f s -> %+.1f s", meter.id, policy.method,
                     before.offset.total_seconds(), after.offset.total_seconds())
        else:
            log.warning("meter %s: clock set (%s) but read back %+.1f s off", meter.id, policy.method,
                        after.offset.total_seconds())


__all__ = ["MeterReader", "PollerSettings", "Reads", "catch_up_ranges"]
