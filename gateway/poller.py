"""One poll of one meter: connect, read what is due, normalize, store, record the meter's health.

``Poller.poll`` builds the transport and DLMS session from the fleet config and the meter's profile,
runs the readers for the due steps until the deadline, hands the ``PollResult`` to the normalizer and
the resulting plans to the event sink, and records the outcome; failures become ``StepError``s, not
exceptions. Where the meter's state comes from, and why: docs/architecture.md, "Poller".
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable, Mapping, Sequence

import anyio

from drivers.errors import DriverError, UnusableReply
from drivers.meters import MeterProfile, profile_for
from drivers.readers import (
    ScalerUnitCache,
    read_clock,
    read_event_log,
    read_identity,
    read_profile,
    read_registers,
)
from drivers.readings import (
    ClockReading,
    EventLogEntry,
    Identity,
    ProfileReading,
    RegisterReading,
    RegisterRefused,
)
from drivers.security import HlsGmacSecurity, LowLevelSecurity, NoSecurity, SecuritySettings
from drivers.session import DlmsSession, InvocationCounterStore
from drivers.transport.base import Transport
from drivers.transport.hdlc import HdlcTcpTransport
from drivers.transport.wrapper import WrapperTransport
from gateway.config.errors import SecretUnavailable
from gateway.config.model import (
    ConcentratorConfig,
    FleetConfig,
    MeterConfig,
    OpticalPortConfig,
)
from gateway.events import ReadingGapDetected, SuspectReadingFlagged
from gateway.health import HealthStore, PollOutcome
from gateway.meter import MeterState
from gateway.logsetup import register_secret
from gateway.history import NOTHING_RECORDED, MeterHistory
from gateway.normalize import AppendPlan, NormalizeSettings, usable_readings
from gateway.outbox import OutboxFull
from gateway.poll_result import PollResult, PollStep, StepError
from gateway.store.errors import StoreError, StoreUnavailable
from gateway.writer import WriterError

log = logging.getLogger(__name__)

# The steps a poll can run, in the order one session runs them.
STEP_ORDER: tuple[PollStep, ...] = ("identity", "clock", "registers", "load_profile", "event_log")
NOT_ATTEMPTED = "NotAttempted"
ONE_SECOND = timedelta(seconds=1)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


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


class _Reads:
    """What one session has read so far; kept when the deadline cuts the session short."""

    def __init__(self) -> None:
        self.identity: Identity | None = None
        self.clock: ClockReading | None = None
        self.registers: list[RegisterReading | RegisterRefused] = []
        self.profiles: list[ProfileReading] = []
        self.events: list[EventLogEntry] = []
        self.errors: list[StepError] = []
        self.done: set[PollStep] = set()


class Poller:
    """Polls meters of one fleet into one store. One poll per meter at a time (the scheduler's job)."""

    def __init__(
        self,
        fleet: FleetConfig,
        history: MeterHistory,
        health: HealthStore,
        *,
        counters: InvocationCounterStore,
        settings: PollerSettings | None = None,
        now: Callable[[], datetime] = utc_now,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.fleet = fleet
        self.history = history
        self.health = health
        self.counters = counters
        self.settings = settings or PollerSettings()
        self.now = now
        self.environ = environ if environ is not None else os.environ
        self.normalize_settings = NormalizeSettings.from_fleet(fleet)
        self.scalers = ScalerUnitCache()
        self._attempts: dict[str, datetime | None] = {}  # meter -> its health row's last attempt, as we left it

    def use_fleet(self, fleet: FleetConfig) -> None:
        """Poll ``fleet`` from now on (a config reload; the store must be the same). Scalers are
        read again, since a meter's make or profile may have changed."""
        if fleet.store != self.fleet.store:
            raise ValueError("a poller keeps its store: a new [store] needs a new poller")
        self.fleet = fleet
        self.normalize_settings = NormalizeSettings.from_fleet(fleet)
        self.scalers = ScalerUnitCache()

    # -- one poll ---------------------------------------------------------------------------

    async def poll(
        self, meter_id: str, steps: Iterable[PollStep], *, deadline: float | None = None
    ) -> PollSummary:
        """Read ``steps`` of ``meter_id`` until ``deadline`` (anyio time), store, record health."""
        meter = self.fleet.meter(meter_id)
        started_at = self.now()
        t0 = anyio.current_time()
        health = await self.health.get(meter_id)
        last_attempt = health.last_attempt_at if health is not None else None
        if meter_id in self._attempts and self._attempts[meter_id] != last_attempt:
            # Another process (`gateway poll` beside `gateway run`) polled this meter since we last did.
            self.history.polled_elsewhere(meter_id)
        try:
            state = await self._current_state(meter_id, started_at.year, deadline)
        except StoreError as exc:
            return await self._state_unavailable(meter, set(steps), started_at, t0, exc, last_attempt)
        due = set(steps)
        if state.identity is None:
            due.add("identity")  # first contact: MeterRegistered before anything else
        ordered = [step for step in STEP_ORDER if step in due]
        cursors = dict(health.event_log_cursors) if health is not None else {}
        # The store's own record of the newest logged entry per log wins over the health table's
        # copy (which is kept for states folded by code that does not track event logs).
        cursors.update(getattr(state, "event_log_ends", None) or {})

        reads = _Reads()
        retryable = False
        try:
            profile = profile_for(meter.make, meter.profile, meter.overrides, meter_id=meter.id)
            session = self._session(meter, profile)
        except (DriverError, SecretUnavailable, KeyError) as exc:
            kind = "ConfigError" if isinstance(exc, KeyError) else type(exc).__name__
            reads.errors.extend(StepError(step, kind, _safe(exc)) for step in ordered)
        else:
            retryable = await self._read(
                session, meter, profile, ordered, state.interval_ends, cursors, started_at, reads, deadline
            )

        result = PollResult(
            meter_id=meter_id, read_time=started_at, identity=reads.identity, clock=reads.clock,
            registers=tuple(reads.registers), profiles=tuple(reads.profiles), events=tuple(reads.events),
            errors=tuple(reads.errors),
        )
        usable, unusable = usable_readings(result)
        if unusable:
            result = replace(usable, errors=usable.errors + tuple(
                StepError(u.step, type(u).__name__, _safe(u), obis=u.obis) for u in unusable
            ))
        store_error: str | None = None
        try:
            recorded = await self.history.record(meter, result, self.normalize_settings)
        except (StoreError, WriterError) as exc:
            # The store is down or refused: the readings are lost for now, the next poll reads them
            # again (the profile and log cursors did not move). The fleet goes on.
            if isinstance(exc, OutboxFull):
                # The outbox raised its alarm (one ERROR) at the first refusal and counts the
                # others; an ERROR per refused poll would bury it.
                log.debug("meter %s: storing the poll failed: %s", meter_id, exc)
            else:
                log.error("meter %s: storing the poll failed: %s", meter_id, exc)
            store_error = f"{type(exc).__name__}: {exc}"
            recorded = NOTHING_RECORDED
        summary = PollSummary(
            meter_id=meter_id, started_at=started_at, steps=frozenset(ordered), errors=result.errors,
            registers_read=sum(1 for r in result.registers if isinstance(r, RegisterReading)),
            rows_read=sum(len(p.rows) for p in result.profiles), log_entries_read=len(result.events),
            stored=recorded.stored, already_stored=recorded.already, streams=recorded.streams,
            duration_s=anyio.current_time() - t0, retryable=retryable, store_error=store_error,
            result=result,
        )
        await self._record(
            self._outcome(meter, summary, result, recorded.plans, state.interval_ends, started_at), last_attempt
        )
        return summary

    async def _record(self, outcome: PollOutcome, seen_attempt: datetime | None) -> None:
        """Record the outcome; ``seen_attempt``: the meter's last attempt as read when the poll began."""
        before, recorded = await self.health.record(outcome)
        if (before.last_attempt_at if before is not None else None) != seen_attempt:
            # The other process recorded its poll while ours ran: checking only when a poll begins
            # would miss it, since our record now hides its attempt.
            await self.history.distrust(outcome.meter_id)
        self._attempts[outcome.meter_id] = recorded.last_attempt_at

    async def _current_state(self, meter_id: str, year: int, deadline: float | None) -> MeterState:
        """The meter's state before reading (catch-up cursors, first contact), within ``deadline``:
        a far store that does not answer costs the meter no more than its deadline."""
        with anyio.CancelScope(deadline=deadline if deadline is not None else float("inf")) as scope:
            return await self.history.current(meter_id, year)
        assert scope.cancelled_caught
        raise StateUnavailable(meter_id, "the store did not answer within the meter's deadline")

    async def _state_unavailable(
        self, meter: MeterConfig, steps: set[PollStep], started_at: datetime, t0: float, exc: StoreError,
        seen_attempt: datetime | None,
    ) -> PollSummary:
        """Nothing was read: the meter's state (where to catch up from) could not be loaded. Its
        meter is read on its next poll; the readings are still on the meter."""
        message = f"meter state not cached and not loadable from the store, nothing read: {exc}"
        log.error("meter %s: %s", meter.id, message)
        ordered = [step for step in STEP_ORDER if step in steps] or ["registers"]
        errors = [StepError(ordered[0], StateUnavailable.__name__, message)]
        not_read = "not read: the meter state could not be loaded"
        errors += [StepError(step, NOT_ATTEMPTED, not_read) for step in ordered[1:]]
        summary = PollSummary(
            meter_id=meter.id, started_at=started_at, steps=frozenset(ordered), errors=tuple(errors),
            duration_s=anyio.current_time() - t0, retryable=True,
        )
        await self._record(
            PollOutcome(meter_id=meter.id, at=started_at, ok=False, error=summary.describe_error()), seen_attempt
        )
        return summary

    # -- session and reads ------------------------------------------------------------------

    def _session(self, meter: MeterConfig, profile: MeterProfile) -> DlmsSession:
        connection = self.fleet.connection(meter.connection)
        return DlmsSession(
            self._transport(meter, profile, connection),
            security=self._security(meter),
            timeout_s=connection.timeouts.response_s,
            retries=self.settings.session_retries,
            use_release=profile.use_release,
            max_pdu_size=profile.max_pdu_size,
            invocation_counters=self.counters,
        )

    def _transport(
        self, meter: MeterConfig, profile: MeterProfile, connection: ConcentratorConfig | OpticalPortConfig
    ) -> Transport:
        client = _given(meter.client_address, profile.client_address_for(meter.security.level))
        logical = _given(meter.logical_address, profile.server_logical_address)
        physical = _given(meter.physical_address, profile.server_physical_address)
        if isinstance(connection, OpticalPortConfig):
            from drivers.transport.optical import OpticalTransport  # pyserial only where needed

            return OpticalTransport(
                meter.id, connection.device, mode_e=connection.sign_on == "mode_e", baud_rate=connection.baud,
                client_address=client, server_logical_address=logical,
                server_physical_address=physical, link_timeout_s=connection.timeouts.response_s,
            )
        if connection.framing == "wrapper":
            return WrapperTransport(
                meter.id, connection.host, connection.port, client_wport=client,
                server_wport=_given(meter.wport, profile.server_wport), connect_timeout_s=connection.timeouts.connect_s,
            )
        return HdlcTcpTransport(
            meter.id, connection.host, connection.port, connect_timeout_s=connection.timeouts.connect_s,
            client_address=client, server_logical_address=logical,
            server_physical_address=physical, link_timeout_s=connection.timeouts.response_s,
        )

    def _security(self, meter: MeterConfig) -> SecuritySettings:
        sec = meter.security
        if sec.level == "lls":
            assert sec.password is not None  # load_config guarantees it
            password = sec.password.resolve(self.environ).reveal()
            register_secret(password)
            return LowLevelSecurity(password)
        if sec.level == "hls_gmac":
            assert sec.authentication_key is not None and sec.encryption_key is not None
            ak = sec.authentication_key.resolve_key(16, self.environ).reveal()
            ek = sec.encryption_key.resolve_key(16, self.environ).reveal()
            register_secret(ak)
            register_secret(ek)
            return HlsGmacSecurity(ak, ek, sec.client_system_title)
        return NoSecurity()

    async def _read(
        self,
        session: DlmsSession,
        meter: MeterConfig,
        profile: MeterProfile,
        steps: list[PollStep],
        interval_ends: Mapping[str, datetime],
        cursors: Mapping[str, datetime],
        now: datetime,
        reads: _Reads,
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
                            reads.errors.append(StepError(current, type(exc).__name__, _safe(exc), obis=obis))
            except DriverError as exc:
                reads.errors.append(StepError(current, type(exc).__name__, _safe(exc)))
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
        reads: _Reads,
    ) -> None:
        tz = meter.timezone
        if step == "identity":
            reads.identity = await read_identity(session, profile)
        elif step == "clock":
            reads.clock = await read_clock(session, tz, obis=profile.clock, quirks=profile.quirks, now=self.now)
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

    def _outcome(
        self,
        meter: MeterConfig,
        summary: PollSummary,
        result: PollResult,
        plans: Sequence[AppendPlan],
        ends_before: Mapping[str, datetime],
        at: datetime,
    ) -> PollOutcome:
        gaps = suspects = 0
        last_suspect: str | None = None
        period_s = result.profiles[0].capture_period_s if result.profiles else 900
        ends = list(ends_before.values())
        for plan in plans:
            ends.extend(plan.state_after.interval_ends.values())
            for event in plan.domain_events:
                if isinstance(event, ReadingGapDetected):
                    gaps += max(1, int((event.gap_end - event.gap_start).total_seconds() // period_s))
                elif isinstance(event, SuspectReadingFlagged):
                    suspects += 1
                    last_suspect = f"{event.obis} at {event.capture_time.isoformat()}: {event.reason}"
        last_end = max(ends) if ends else None
        behind = None if last_end is None else max(0, int((at - last_end).total_seconds() // max(period_s, 1)))
        cursors: dict[str, datetime] = {}
        if summary.store_error is None:  # a cursor moves only past entries that are stored
            for entry in result.events:
                if entry.time is not None and (entry.log_obis not in cursors or entry.time > cursors[entry.log_obis]):
                    cursors[entry.log_obis] = entry.time
        return PollOutcome(
            meter_id=meter.id, at=at, ok=summary.ok, error=summary.describe_error(),
            last_interval_end=last_end, intervals_behind=behind, new_gap_intervals=gaps,
            new_suspects=suspects, last_suspect=last_suspect, event_log_cursors=cursors,
        )


class StateUnavailable(StoreUnavailable):
    """A meter's state is neither cached nor loadable from the store (Cosmos out of reach)."""

    def __init__(self, meter_id: str, message: str) -> None:
        self.meter_id = meter_id
        super().__init__(f"meter {meter_id!r}: {message}")


def _given(configured: int | None, default: int) -> int:
    """The fleet config's address when it sets one (0 is a valid wPort), else the profile's."""
    return default if configured is None else configured


def _safe(exc: BaseException) -> str:
    """An error's message for summaries and health: drivers' and config errors never carry secrets."""
    text = str(exc)
    return text if text else type(exc).__name__


__all__ = [
    "NOT_ATTEMPTED", "STEP_ORDER", "Poller", "catch_up_ranges", "PollerSettings",
    "PollSummary", "StateUnavailable", "utc_now",
]
