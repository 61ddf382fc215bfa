"""One poll of one meter: connect, read what is due, normalize, store, record the meter's health.

``Poller.poll`` builds the transport and DLMS session from the fleet config and the meter's profile,
runs the readers for the due steps until the deadline, hands the ``PollResult`` to the normalizer and
the resulting plans to the event sink, and records the outcome; failures become ``StepError``s, not
exceptions. Where the meter's state comes from, and why: docs/architecture.md, "Poller".
"""
from __future__ import annotations

import logging
import os
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence

import anyio

from drivers.errors import DriverError
from drivers.meters import profile_for
from drivers.session import InvocationCounterStore
from gateway.config.errors import SecretUnavailable
from gateway.config.model import FleetConfig, MeterConfig
from gateway.polling.health import HealthStore, PollOutcome
from gateway.history.meter_history import NOTHING_RECORDED, RECORD_FAILURES, MeterHistory, findings
from gateway.polling.meter_link import open_session
from gateway.polling.meter_reading import MeterReader, PollerSettings, Reads
from gateway.domain.normalize import AppendPlan, NormalizeSettings, usable_readings
from gateway.domain.poll_result import NOT_ATTEMPTED, STEP_ORDER, PollResult, PollStep, PollSummary, StepError, safe_message
from gateway.store.errors import StoreError, StoreFull, StoreUnavailable

if TYPE_CHECKING:
    from gateway.domain.meter import MeterState

log = logging.getLogger(__name__)

def utc_now() -> datetime:
    return datetime.now(timezone.utc)


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
        self.reader = MeterReader(self.settings, now)
        self._attempts: dict[str, datetime | None] = {}  # meter -> its health row's last attempt, as we left it

    def use_fleet(self, fleet: FleetConfig) -> None:
        """Poll ``fleet`` from now on (a config reload; the store must be the same). Scalers are
        read again, since a meter's make or profile may have changed."""
        if fleet.store != self.fleet.store:
            raise ValueError("a poller keeps its store: a new [store] needs a new poller")
        self.fleet = fleet
        self.normalize_settings = NormalizeSettings.from_fleet(fleet)
        self.reader = MeterReader(self.settings, self.now)

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

        reads = Reads()
        retryable = False
        try:
            profile = profile_for(meter.make, meter.profile, meter.overrides, meter_id=meter.id)
            session = open_session(
                self.fleet, meter, profile, counters=self.counters, environ=self.environ,
                retries=self.settings.session_retries,
            )
        except (DriverError, SecretUnavailable, KeyError) as exc:
            kind = "ConfigError" if isinstance(exc, KeyError) else type(exc).__name__
            reads.errors.extend(StepError(step, kind, safe_message(exc)) for step in ordered)
        else:
            retryable = await self.reader.read(
                session, meter, profile, ordered, state.interval_ends, cursors, started_at, reads, deadline
            )

        result = PollResult(
            meter_id=meter_id, read_time=started_at, identity=reads.identity, clock=reads.clock,
            registers=tuple(reads.registers), profiles=tuple(reads.profiles), events=tuple(reads.events),
            errors=tuple(reads.errors), clock_sync=reads.clock_sync,
        )
        usable, unusable = usable_readings(result)
        if unusable:
            result = replace(usable, errors=usable.errors + tuple(
                StepError(u.step, type(u).__name__, safe_message(u), obis=u.obis) for u in unusable
            ))
        store_error: str | None = None
        try:
            recorded = await self.history.record(meter, result, self.normalize_settings)
        except RECORD_FAILURES as exc:
            # The store is down or refused: the readings are lost for now, the next poll reads them
            # again (the profile and log cursors did not move). The fleet goes on.
            if isinstance(exc, StoreFull):
                # The outbox raised its alarm (one ERROR) at the first refusal and counts the
                # others; an ERROR per refused poll would bury it.
                log.debug("meter %s: storing the poll failed: %s", meter_id, exc)
            else:
                log.error("meter %s: storing the poll failed: %s", meter_id, exc)
            store_error = f"{type(exc).__name__}: {exc}"
            recorded = NOTHING_RECORDED
        summary = PollSummary(
            meter_id=meter_id, started_at=started_at, steps=frozenset(ordered), errors=result.errors,
            registers_read=result.registers_read,
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

    def _outcome(
        self,
        meter: MeterConfig,
        summary: PollSummary,
        result: PollResult,
        plans: Sequence[AppendPlan],
        ends_before: Mapping[str, datetime],
        at: datetime,
    ) -> PollOutcome:
        period_s = result.profiles[0].capture_period_s if result.profiles else 900
        found = findings(plans, period_s)
        ends = [*ends_before.values(), *found.interval_ends]
        last_end = max(ends) if ends else None
        behind = None if last_end is None else max(0, int((at - last_end).total_seconds() // max(period_s, 1)))
        cursors: dict[str, datetime] = {}
        if summary.store_error is None:  # a cursor moves only past entries that are stored
            for entry in result.events:
                if entry.time is not None and (entry.log_obis not in cursors or entry.time > cursors[entry.log_obis]):
                    cursors[entry.log_obis] = entry.time
        return PollOutcome(
            meter_id=meter.id, at=at, ok=summary.ok, error=summary.describe_error(),
            last_interval_end=last_end, intervals_behind=behind, new_gap_intervals=found.gap_intervals,
            new_suspects=found.suspects, last_suspect=found.last_suspect, event_log_cursors=cursors,
        )


class StateUnavailable(StoreUnavailable):
    """A meter's state is neither cached nor loadable from the store (Cosmos out of reach)."""

    def __init__(self, meter_id: str, message: str) -> None:
        self.meter_id = meter_id
        super().__init__(f"meter {meter_id!r}: {message}")


__all__ = ["Poller", "StateUnavailable", "utc_now"]
