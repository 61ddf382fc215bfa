"""The scheduler: when each meter is polled, how many sessions run at once, and how failures retry.

One job per meter wakes at its next due slot (slots spread over each schedule's interval, with a
seeded jitter), polls every step due then under the per-connection and global limits and the
per-meter deadline, retries what a new session may cure, and backs off a meter that keeps not
answering (``MeterBackoff``). Slots, limits, backoff and reload: docs/architecture.md, "Scheduling".
"""
from __future__ import annotations

import logging
import math
import random
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime
from typing import AsyncIterator, Callable, Iterable, Mapping, Protocol

import anyio
from anyio import CapacityLimiter

from gateway.config.model import FleetConfig, Limits, MeterConfig, Schedule
from gateway.domain.poll_result import NOT_ATTEMPTED, PollStep, StepError
from gateway.domain.poll_result import PollSummary
from gateway.polling.health import HealthError
from gateway.store.errors import StoreError

log = logging.getLogger(__name__)

# Which poll step each schedule of the fleet config triggers.
SCHEDULE_STEPS: Mapping[str, PollStep] = {
    "registers": "registers",
    "load_profile": "load_profile",
    "clock_check": "clock",
    "event_log": "event_log",
}
ALL_STEPS: frozenset[PollStep] = frozenset({"identity", *SCHEDULE_STEPS.values()})
# Steps due within this fraction of the shortest interval are read in the same session.
COALESCE_FRACTION = 0.1
BACKOFF_AFTER = 3  # consecutive failed polls before a meter is polled less often
MAX_BACKOFF_SLOTS = 8  # a backed-off meter is still polled at least once in this many slots
# Failures a new poll cannot cure until the config changes (gateway.polling.poller's summaries).
CONFIG_ERROR_KINDS = frozenset({"ConfigError", "SecretUnavailable"})
# A failure of the store, not the meter: says nothing about whether the meter answers.
STORE_ERROR_KINDS = frozenset({"StateUnavailable"})
# The meter refused our credentials (drivers.errors.AuthenticationFailed and its subclasses: LLS
# refused, HLS tag or deciphering failure). Trying again with the same secret cannot succeed, and many
# meters lock a client out after a few failed logins: no retry, straight to the longest backoff.
# A rejected association counts too when credentials were offered (security other than "none").
LOGIN_ERROR_KINDS = frozenset({"AuthenticationFailed", "DecryptionError"})


def login_refused(summary: PollSummary, meter: MeterConfig | None = None) -> bool:
    """Whether the poll failed because the meter refused the login (see ``LOGIN_ERROR_KINDS``): the
    session ended at its first failure, before any step was read (a deciphering failure later in a
    session is a corrupt answer under keys the association already proved right)."""
    error = summary.first_error
    if error is None or summary.ok:
        return False
    real = [e for e in summary.errors if e.kind != NOT_ATTEMPTED]
    if len(real) != 1 or not {e.step for e in summary.errors} >= set(summary.steps):
        return False
    if error.kind in LOGIN_ERROR_KINDS:
        return True
    return error.kind == "AssociationRejected" and meter is not None and meter.security.level != "none"


def login_secrets(meter: MeterConfig) -> str:
    """Which secrets a refused login points at: their key paths and references, never their values."""
    sec = meter.security
    refs = [ref for ref in (sec.password, sec.authentication_key, sec.encryption_key) if ref is not None]
    if not refs:
        return f"the meter's security level ({sec.level!r}) and client_address"
    return " and ".join(ref.describe() for ref in refs)


class MeterPoller(Protocol):
    """What the scheduler needs of a poller (``gateway.polling.poller.Poller``)."""

    now: Callable[[], datetime]

    async def poll(
        self, meter_id: str, steps: frozenset[PollStep], *, deadline: float | None = None
    ) -> PollSummary: ...


def backoff_delay(attempt: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Delay before retry ``attempt`` (1, 2, ...): exponential, capped, with "equal jitter".

    The cap doubles per attempt from ``initial_s`` up to ``max_s``; the delay is uniform in
    ``[cap/2, cap]``, so retries of meters that failed together (a concentrator reboot) spread out
    but never come back immediately.
    """
    if attempt < 1:
        raise ValueError(f"retry attempts count from 1, got {attempt}")
    cap = min(max_s, initial_s * 2 ** min(attempt - 1, 60))
    return rng.uniform(cap / 2, cap)


def slot_time(
    start: float, index: int, count: int, schedule: Schedule, slot: int, *, seed: int, meter_id: str, name: str
) -> float:
    """When slot ``slot`` (0, 1, ...) of ``schedule`` is due for meter ``index`` of ``count``."""
    phase = schedule.interval_s * index / max(count, 1)
    jitter = _rng(seed, meter_id, name, slot).uniform(0, schedule.jitter_s) if schedule.jitter_s > 0 else 0.0
    return start + phase + slot * schedule.interval_s + jitter


def first_slot(
    resumed: float, start: float, index: int, count: int, schedule: Schedule, *, seed: int, meter_id: str, name: str
) -> int:
    """The first slot of meter ``index`` of ``count`` on the grid counted from ``start`` that is due
    (jitter included) at or after ``resumed``: slot 0 when the grid starts at ``resumed``."""
    phase_start = start + schedule.interval_s * index / max(count, 1)
    slot = max(0, math.ceil((resumed - phase_start) / schedule.interval_s))
    # A slot that began before ``resumed`` may still be due after it, by its jitter: it is not
    # polled yet (a reload stopped the job that was waiting for it).
    if slot > 0 and slot_time(start, index, count, schedule, slot - 1, seed=seed, meter_id=meter_id,
                              name=name) >= resumed:
        slot -= 1
    return slot


def _rng(seed: int, *parts: object) -> random.Random:
    # A string seed is hashed with SHA-512 by random.Random: stable across runs and processes.
    return random.Random(":".join([str(seed), *map(str, parts)]))


class FleetLimits:
    """The capacity limiters of one fleet: per connection (bus, concentrator, optical port) and global."""

    def __init__(self, fleet: FleetConfig) -> None:
        self.global_polls = CapacityLimiter(fleet.limits.max_concurrent_polls)
        self.connections: dict[str, CapacityLimiter] = {c.id: CapacityLimiter(c.max_sessions) for c in fleet.concentrators}
        # An optical probe talks to the one meter it is held against: one session at a time.
        self.connections.update({o.id: CapacityLimiter(1) for o in fleet.optical_ports})

    @asynccontextmanager
    async def slot(self, meter: MeterConfig) -> AsyncIterator[None]:
        async with self.connections[meter.connection], self.global_polls:
            yield


class MeterBackoff:
    """Cross-cycle backoff of the meters that do not answer; see the module docstring.

    ``should_poll(meter_id)`` is asked once per slot; ``record(summary)`` after every poll.
    """

    def __init__(self, after: int = BACKOFF_AFTER, max_slots: int = MAX_BACKOFF_SLOTS) -> None:
        if after < 1 or max_slots < 1:
            raise ValueError(f"backoff needs after >= 1 and max_slots >= 1, got {after} and {max_slots}")
        self.after = after
        self.max_slots = max_slots
        self._failures: dict[str, int] = {}  # meter -> consecutive failed polls
        self._skipped: dict[str, int] = {}  # meter -> slots skipped since its last poll
        self._config_errors: dict[str, str] = {}  # meter -> its last config/secret error

    def failures(self, meter_id: str) -> int:
        """Consecutive failed polls of the meter (0 after a success)."""
        return self._failures.get(meter_id, 0)

    def config_error(self, meter_id: str) -> str | None:
        """The meter's last config/secret error, while it lasts (None after a poll without one)."""
        return self._config_errors.get(meter_id)

    def period(self, meter_id: str) -> int:
        """Poll the meter at every ``period``-th slot: 1 until ``after`` failures, then 2, 4, ...
        up to ``max_slots``."""
        excess = self.failures(meter_id) - self.after
        return 1 if excess < 0 else min(self.max_slots, 2 ** min(excess + 1, 30))

    def should_poll(self, meter_id: str) -> bool:
        """Whether this slot of the meter is polled (counts the slot when it is skipped)."""
        skipped = self._skipped.get(meter_id, 0) + 1
        if skipped >= self.period(meter_id):
            return True
        self._skipped[meter_id] = skipped
        log.debug("meter %s: slot skipped (backoff: %d consecutive failures)", meter_id, self.failures(meter_id))
        return False

    def forget(self, meter_id: str) -> None:
        """Start the meter afresh: polled at every slot until it fails again."""
        self._failures.pop(meter_id, None)
        self._skipped.pop(meter_id, None)
        self._config_errors.pop(meter_id, None)

    def record(self, summary: PollSummary, meter: MeterConfig | None = None) -> None:
        """Count the poll; ``meter`` (its config) lets a refused login name the secret to check."""
        meter_id = summary.meter_id
        self._skipped.pop(meter_id, None)
        error = summary.first_error
        refused = login_refused(summary, meter)
        if error is None or (error.kind not in CONFIG_ERROR_KINDS and not refused):
            self._config_errors.pop(meter_id, None)
        if refused and error is not None:
            # Like a config error: only a new secret (a reload) changes the outcome, and every
            # further failed login brings a lockout by the meter closer.
            self._config_errors[meter_id] = error.message
            self._failures[meter_id] = max(self.failures(meter_id), self.after + self.max_slots)
            check = login_secrets(meter) if meter is not None else "the meter's security settings"
            log.warning("meter %s: login refused (%s); not retried, polled again in %d slots so the meter does not "
                        "lock the client out: check %s", meter_id, summary.describe_error(),
                        self.period(meter_id), check)
        elif summary.ok:
            failures = self._failures.pop(meter_id, 0)
            if failures >= self.after:
                log.info("meter %s: answered again after %d failed polls; backoff ended, polled at every slot",
                         meter_id, failures)
        elif error is not None and error.kind in CONFIG_ERROR_KINDS and not summary.retryable:
            self._config_errors[meter_id] = error.message
            # Straight to the longest backoff: only the config (or a secret) can change the outcome.
            self._failures[meter_id] = max(self.failures(meter_id), self.after + self.max_slots)
            log.warning("meter %s: %s; polled again in %d slots (fix the config or the secret)", meter_id,
                        summary.describe_error(), self.period(meter_id))
        elif summary.retryable and summary.store_error is None and not (error and error.kind in STORE_ERROR_KINDS):
            before = self.period(meter_id)
            failures = self._failures[meter_id] = self.failures(meter_id) + 1
            if self.period(meter_id) != before:  # put on backoff, or backing off further
                log.info("meter %s: %d consecutive failed polls; backoff: polled once every %d slots",
                         meter_id, failures, self.period(meter_id))


def merge_attempts(first: PollSummary, later: PollSummary) -> PollSummary:
    """One summary for a poll and its retry: what both read and stored, the retry's errors."""
    stored = Counter(first.stored)
    stored.update(later.stored)
    return replace(
        later,
        started_at=first.started_at,
        steps=first.steps,
        registers_read=first.registers_read + later.registers_read,
        rows_read=first.rows_read + later.rows_read,
        log_entries_read=first.log_entries_read + later.log_entries_read,
        stored=dict(stored),
        already_stored=first.already_stored + later.already_stored,
        streams=tuple(dict.fromkeys([*first.streams, *later.streams])),
        duration_s=first.duration_s + later.duration_s,
        attempts=first.attempts + later.attempts,
    )


class Scheduler:
    """Runs the polls of one fleet under its limits; see the module docstring."""

    def __init__(
        self,
        fleet: FleetConfig,
        poller: MeterPoller,
        *,
        seed: int = 0,
        on_poll: Callable[[PollSummary], None] | None = None,
        meters: Iterable[str] | None = None,
    ) -> None:
        self.fleet = fleet
        self.poller = poller
        self.seed = seed
        self.on_poll = on_poll
        # After every slot of a meter job, polled or skipped by backoff: proof that the loop moves
        # (gateway run pets the systemd watchdog with it).
        self.on_slot: Callable[[], None] | None = None
        self.limits = FleetLimits(fleet)
        wanted = set(meters) if meters is not None else None
        self.meters: tuple[MeterConfig, ...] = tuple(m for m in fleet.meters if wanted is None or m.id in wanted)
        self._stop = anyio.Event()
        self._rng = _rng(seed, "backoff")
        self.backoff = MeterBackoff()
        self.epoch: float | None = None  # anyio time slot 0 of every schedule counts from (set by run)
        self._finish_retries = False

    @property
    def policy(self) -> Limits:
        return self.fleet.limits

    def stop(self, *, finish_retries: bool = False) -> None:
        """Start no new poll; polls in flight finish (within their deadline). ``finish_retries``
        (a config reload, not a shutdown): polls in flight also make their remaining retries."""
        self._finish_retries = finish_retries and (self._finish_retries or not self.stopping)
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- one meter --------------------------------------------------------------------------

    async def poll_meter(self, meter: MeterConfig, steps: frozenset[PollStep] = ALL_STEPS) -> PollSummary:
        """One poll of ``meter`` under the limits, with its deadline and retries."""
        summary = await self._poll_meter(meter, steps, abandon_on_stop=False)
        assert summary is not None
        return summary

    async def _poll_meter(
        self, meter: MeterConfig, steps: frozenset[PollStep], *, abandon_on_stop: bool
    ) -> PollSummary | None:
        async with self.limits.slot(meter):
            if abandon_on_stop and self.stopping:
                return None  # still waiting for its bus when the stop came: not in flight, not started
            started = anyio.current_time()
            deadline = started + self.policy.meter_deadline_s
            summary = await self._attempt(meter, steps, deadline)
            attempt = 0
            while (not summary.ok and summary.retryable and attempt < self.policy.retries
                   and not login_refused(summary, meter) and not (self.stopping and not self._finish_retries)):
                attempt += 1
                delay = backoff_delay(attempt, self.policy.backoff_initial_s, self.policy.backoff_max_s, self._rng)
                if anyio.current_time() + delay >= deadline:
                    break  # no time left for another session within the meter's budget
                log.info("meter %s: retry %d in %.2f s after %s", meter.id, attempt, delay, summary.describe_error())
                await anyio.sleep(delay)
                retry = await self._attempt(meter, summary.failed_steps, deadline)
                summary = merge_attempts(summary, retry)
            # Wall time of the poll, the waits between its attempts included (the attempts' own
            # durations add up to far less when each fails at once, e.g. a refused connection).
            summary = replace(summary, duration_s=anyio.current_time() - started)
        if summary.ok:
            log.info("meter %s: polled %s, stored %d events in %.2f s", meter.id, ",".join(sorted(summary.steps)),
                     sum(summary.stored.values()), summary.duration_s)
        else:
            log.warning("meter %s: %s; stored %d events", meter.id, summary.describe_error(),
                        sum(summary.stored.values()))
        self.backoff.record(summary, meter)
        if self.on_poll is not None:
            self.on_poll(summary)
        return summary

    async def _attempt(self, meter: MeterConfig, steps: frozenset[PollStep], deadline: float) -> PollSummary:
        try:
            return await self.poller.poll(meter.id, steps, deadline=deadline)
        except (HealthError, StoreError) as exc:
            # The local store failed under the poll (a read-only or damaged file, a full disk): no
            # bug, so no traceback; `gateway run` stops when this goes on (commands/_store_check).
            log.error("meter %s: poll not recorded: %s: %s", meter.id, type(exc).__name__, exc)
            return PollSummary(
                meter_id=meter.id, started_at=self.poller.now(), steps=steps,
                errors=tuple(StepError(step, type(exc).__name__, str(exc)) for step in sorted(steps)),
            )
        except Exception as exc:
            # A bug or an unexpected failure below (normalizer, health table): this meter's poll is
            # lost, the fleet goes on. The traceback goes to the log; the summary says what it was.
            log.exception("meter %s: poll failed unexpectedly", meter.id)
            return PollSummary(
                meter_id=meter.id, started_at=self.poller.now(), steps=steps,
                errors=tuple(StepError(step, "InternalError", f"{type(exc).__name__}: {exc}") for step in sorted(steps)),
            )

    # -- a cycle of the whole fleet ---------------------------------------------------------

    async def run_cycle(self, steps: frozenset[PollStep] = ALL_STEPS) -> list[PollSummary]:
        """Poll every meter once (all at once, as the limits allow); summaries in fleet order.

        A cycle is one slot of every meter: a meter on backoff (or with a config error) whose slot
        is skipped is not polled and has no summary."""
        results: dict[str, PollSummary] = {}

        async def one(meter: MeterConfig) -> None:
            results[meter.id] = await self.poll_meter(meter, steps)

        async with anyio.create_task_group() as tg:
            for meter in self.meters:
                if self.backoff.should_poll(meter.id):
                    tg.start_soon(one, meter, name=f"poll {meter.id}")
        return [results[m.id] for m in self.meters if m.id in results]

    # -- long-running -----------------------------------------------------------------------

    async def run(self, epoch: float | None = None) -> None:
        """Poll every meter on its schedules until ``stop()`` (or cancellation); slots count from
        ``epoch`` (anyio time; default now), the first one due at or after now."""
        now = anyio.current_time()
        start = self.epoch = now if epoch is None else epoch
        async with anyio.create_task_group() as tg:
            for index, meter in enumerate(self.meters):
                tg.start_soon(self._meter_job, start, now, index, meter, name=f"meter job {meter.id}")

    async def _meter_job(self, start: float, resumed: float, index: int, meter: MeterConfig) -> None:
        schedules = {
            name: schedule
            for name in SCHEDULE_STEPS
            if (schedule := getattr(self.fleet.schedules, name)).enabled
        }
        if not schedules:
            return
        count = len(self.meters)
        coalesce_s = COALESCE_FRACTION * min(s.interval_s for s in schedules.values())

        def phase_start(name: str) -> float:
            return start + schedules[name].interval_s * index / max(count, 1)

        slots = {name: first_slot(resumed, start, index, count, schedules[name], seed=self.seed, meter_id=meter.id,
                                  name=name) for name in schedules}

        def due_at(name: str) -> float:
            return slot_time(start, index, count, schedules[name], slots[name], seed=self.seed,
                             meter_id=meter.id, name=name)

        while not self.stopping:
            wake = min(due_at(name) for name in schedules)
            if not await self._sleep_until(wake):
                return
            # Steps due within a short window share the session rather than each opening its own.
            horizon = anyio.current_time() + coalesce_s
            due = [name for name in schedules if due_at(name) <= horizon]
            steps: set[PollStep] = {SCHEDULE_STEPS[name] for name in due}
            if "clock" in steps:
                steps.add("identity")  # with the clock check: notices a firmware change
            if self.backoff.should_poll(meter.id):
                if await self._poll_meter(meter, frozenset(steps), abandon_on_stop=True) is None:
                    return
            if self.on_slot is not None:
                self.on_slot()
            now = anyio.current_time()
            for name in due:
                # The next slot after now: a poll that overran its interval skips slots rather
                # than running them back to back.
                interval = schedules[name].interval_s
                slots[name] = max(slots[name] + 1, math.floor((now - phase_start(name)) / interval) + 1)

    async def _sleep_until(self, wake: float) -> bool:
        """Sleep until ``wake``; False when stop() came first."""
        delay = wake - anyio.current_time()
        if delay > 0:
            with anyio.move_on_after(delay):
                await self._stop.wait()
        return not self.stopping


__all__ = [
    "ALL_STEPS", "BACKOFF_AFTER", "MAX_BACKOFF_SLOTS", "SCHEDULE_STEPS", "FleetLimits", "MeterBackoff", "MeterPoller",
    "Scheduler", "backoff_delay", "first_slot", "login_refused", "login_secrets", "merge_attempts", "slot_time",
]
