"""Scheduler rules: concurrency limits, deadlines, retries with bounded backoff, spread, clean stop.

The limits tests drive the real scheduler with a stand-in poller that only records which sessions
overlap (the real one needs meters; the end-to-end test covers it). The deadline test uses the real
poller against the simulator, with a meter on the bus that never answers.
"""
from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.simulator import Framing, MeterSimulator, SimulatorConfig
from drivers.simulator.fleet import fleet
from gateway.config import FleetConfig, Schedule, parse_config
from gateway.domain.poll_result import PollStep, StepError
from gateway.polling.meter_reading import PollerSettings, catch_up_ranges
from gateway.domain.poll_result import PollSummary
from gateway.polling.scheduler import ALL_STEPS, Scheduler, backoff_delay, first_slot, slot_time
from gateway.wiring import open_poller

from . import ABSENT, SECRETS, fleet_toml

NOW = datetime(2026, 2, 3, 10, 0, tzinfo=timezone.utc)


def _config(meters_on_bus: int, ip_meters: int, *, ip_sessions: int, global_polls: int, retries: int = 1,
            interval_s: float = 0.2) -> FleetConfig:
    lines = [
        'gateway_id = "t"', 'default_timezone = "UTC"', "[store]", 'kind = "sqlite"', 'path = "unused.db"',
        "[limits]", f"max_concurrent_polls = {global_polls}", "meter_deadline_s = 30", f"retries = {retries}",
        "backoff_initial_s = 0.01", "backoff_max_s = 0.02",
        "[[concentrators]]", 'id = "bus"', 'host = "127.0.0.1"', "port = 4059", 'framing = "hdlc"', "max_sessions = 1",
        "[[concentrators]]", 'id = "dc"', 'host = "127.0.0.1"', "port = 4060", 'framing = "wrapper"',
        f"max_sessions = {ip_sessions}",
    ]
    for name in ("registers", "load_profile", "clock_check", "event_log"):
        lines += [f"[schedules.{name}]", f"interval_s = {interval_s}", "jitter_s = 0"]
    for i in range(meters_on_bus):
        lines += ["[[meters]]", f'id = "bus-{i}"', 'make = "landis_gyr"', 'profile = "e450"', 'connection = "bus"',
                  f"physical_address = {17 + i}", 'security = { level = "none" }', "max_power_w = 10000"]
    for i in range(ip_meters):
        lines += ["[[meters]]", f'id = "ip-{i}"', 'make = "kamstrup"', 'profile = "omnipower"', 'connection = "dc"',
                  f"wport = {i + 1}", 'security = { level = "none" }', "max_power_w = 10000"]
    return parse_config("\n".join(lines) + "\n")


class RecordingPoller:
    """Stands in for the real poller: holds a "session" for ``hold_s`` and records overlaps."""

    def __init__(self, config: FleetConfig, hold_s: float = 0.01, fail_first: Iterable[str] = (),
                 retryable: bool = True) -> None:
        self.connection_of = {m.id: m.connection for m in config.meters}
        self.hold_s = hold_s
        self.active: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.calls: list[tuple[str, frozenset[PollStep]]] = []
        self.fail_first = set(fail_first)
        self.retryable = retryable

    def now(self) -> datetime:
        return NOW

    async def poll(self, meter_id: str, steps: Iterable[PollStep], *, deadline: float | None = None) -> PollSummary:
        steps = frozenset(steps)
        self.calls.append((meter_id, steps))
        connection = self.connection_of[meter_id]
        for key in (connection, "global"):
            self.active[key] += 1
            self.peak[key] = max(self.peak[key], self.active[key])
        try:
            await anyio.sleep(self.hold_s)
        finally:
            for key in (connection, "global"):
                self.active[key] -= 1
        if meter_id in self.fail_first:
            self.fail_first.discard(meter_id)
            errors = (StepError("registers", "MeterTimeout", "no answer"),
                      StepError("load_profile", "NotAttempted", "not read"))
            return PollSummary(meter_id, NOW, steps, errors, retryable=self.retryable)
        return PollSummary(meter_id, NOW, steps, ())


@pytest.mark.anyio
@pytest.mark.parametrize("ip_sessions,global_polls", [(1, 8), (3, 8), (4, 2)])
async def test_limits_hold_per_bus_per_concentrator_and_globally(ip_sessions: int, global_polls: int) -> None:
    config = _config(meters_on_bus=5, ip_meters=6, ip_sessions=ip_sessions, global_polls=global_polls)
    poller = RecordingPoller(config)
    summaries = await Scheduler(config, poller).run_cycle()

    assert [s.meter_id for s in summaries] == [m.id for m in config.meters] and all(s.ok for s in summaries)
    assert poller.peak["bus"] == 1  # never two sessions on one RS-485 bus
    assert poller.peak["dc"] == min(ip_sessions, global_polls)
    assert poller.peak["global"] <= global_polls
    # The limits were actually contended (otherwise the peaks prove nothing).
    assert poller.peak["global"] == min(global_polls, 1 + ip_sessions)


@pytest.mark.anyio
async def test_retry_rereads_only_the_failed_steps() -> None:
    config = _config(meters_on_bus=1, ip_meters=1, ip_sessions=1, global_polls=2, retries=2)
    poller = RecordingPoller(config, fail_first={"bus-0"})
    summaries = {s.meter_id: s for s in await Scheduler(config, poller).run_cycle()}

    assert summaries["bus-0"].ok and summaries["bus-0"].attempts == 2
    assert [steps for meter, steps in poller.calls if meter == "bus-0"] == [
        ALL_STEPS, frozenset({"registers", "load_profile"})]


@pytest.mark.anyio
async def test_a_failure_a_new_session_cannot_cure_is_not_retried() -> None:
    config = _config(meters_on_bus=1, ip_meters=0, ip_sessions=1, global_polls=2, retries=3)
    poller = RecordingPoller(config, fail_first={"bus-0"}, retryable=False)
    (summary,) = await Scheduler(config, poller).run_cycle()
    assert not summary.ok and summary.attempts == 1 and len(poller.calls) == 1


@given(
    attempt=st.integers(min_value=1, max_value=200),
    initial=st.floats(min_value=0.001, max_value=10),
    ceiling=st.floats(min_value=0.001, max_value=600),
    seed=st.integers(),
)
def test_backoff_is_exponential_capped_and_jittered_within_bounds(
    attempt: int, initial: float, ceiling: float, seed: int
) -> None:
    ceiling = max(ceiling, initial)
    delay = backoff_delay(attempt, initial, ceiling, random.Random(seed))
    cap = min(ceiling, initial * 2 ** (attempt - 1))
    assert cap / 2 <= delay <= cap <= ceiling


def test_backoff_jitter_spreads_retries() -> None:
    rng = random.Random(1)
    delays = {round(backoff_delay(3, 0.5, 60, rng), 6) for _ in range(50)}
    assert len(delays) > 40 and min(delays) >= 1.0 and max(delays) <= 2.0


def test_polls_spread_over_the_interval_reproducibly() -> None:
    schedule = Schedule(interval_s=900, jitter_s=60, enabled=True)
    count = 100

    def first_slots(seed: int) -> list[float]:
        return [slot_time(0.0, i, count, schedule, 0, seed=seed, meter_id=f"m{i}", name="registers")
                for i in range(count)]

    slots = first_slots(7)
    assert slots == first_slots(7)  # seeded: the same plan after a restart
    assert slots != first_slots(8)
    assert all(0 <= t < 900 + 60 for t in slots)
    # Spread, not bunched at :00: every tenth of the interval gets its share of the meters.
    per_tenth = Counter(min(int(t // 90), 9) for t in slots)
    assert len(per_tenth) == 10 and max(per_tenth.values()) <= 2 * count // 10
    # The next slot of a meter is one interval later (plus its own jitter).
    later = slot_time(0.0, 5, count, schedule, 3, seed=7, meter_id="m5", name="registers")
    assert 3 * 900 <= later - (900 * 5 / count) < 3 * 900 + 60


def test_a_continued_grid_resumes_at_each_meters_next_slot() -> None:
    daily = Schedule(interval_s=86_400, jitter_s=0, enabled=True)
    count = 4

    def first(resumed: float, index: int, schedule: Schedule = daily) -> int:
        return first_slot(resumed, 1000.0, index, count, schedule, seed=0, meter_id=f"m{index}", name="clock_check")

    # A fresh grid: every meter starts at its slot 0.
    assert [first(1000.0, i) for i in range(count)] == [0, 0, 0, 0]
    # Reloaded 31 hours into the grid: meter 0 (phase 0 h) and meter 1 (phase 6 h) had their slot 1
    # before the reload, so they go on at slot 2; meters 2 and 3 (12 h, 18 h) at slot 1, later today.
    # Nobody is polled at once, and nobody's daily schedule starts over from a new slot 0.
    resumed = 1000.0 + 31 * 3600
    assert [first(resumed, i) for i in range(count)] == [2, 2, 1, 1]

    # With jitter: the slot resumed at is the first one due at or after the reload, never one later
    # (which would lose a poll) nor one earlier (already polled, or due before the reload).
    jittery = Schedule(interval_s=900, jitter_s=120, enabled=True)
    for index in range(count):
        for step in range(0, 40 * 900, 37):
            at = 1000.0 + step
            slot = first(at, index, jittery)

            def due(n: int) -> float:
                return slot_time(1000.0, index, count, jittery, n, seed=0, meter_id=f"m{index}", name="clock_check")

            assert due(slot) >= at and (slot == 0 or due(slot - 1) < at), (index, step, slot)


def test_load_profile_catch_up_reads_at_most_a_day_per_range() -> None:
    settings = PollerSettings(max_catch_up=timedelta(days=3))
    last_end = NOW - timedelta(days=5, minutes=30)
    ranges = catch_up_ranges(last_end, NOW, settings)

    assert ranges[0][0] == last_end + timedelta(seconds=1)
    assert all(end - start <= timedelta(days=1) for start, end in ranges)
    assert all(b[0] == a[1] + timedelta(seconds=1) for a, b in zip(ranges, ranges[1:]))  # no hole, no overlap
    assert ranges[-1][1] == last_end + timedelta(seconds=1) + timedelta(days=3)  # the rest next poll
    # Caught up: one short range to now; never read: the backfill window.
    assert catch_up_ranges(NOW - timedelta(minutes=15), NOW, settings) == [
        (NOW - timedelta(minutes=15) + timedelta(seconds=1), NOW)]
    assert catch_up_ranges(None, NOW, settings)[0][0] == NOW - settings.profile_backfill


@pytest.mark.anyio
async def test_stop_lets_polls_in_flight_finish_and_starts_no_new_one() -> None:
    config = _config(meters_on_bus=3, ip_meters=3, ip_sessions=3, global_polls=8, interval_s=0.05)
    poller = RecordingPoller(config, hold_s=0.05)
    scheduler = Scheduler(config, poller)
    finished: list[str] = []
    scheduler.on_poll = lambda summary: finished.append(summary.meter_id)

    async with anyio.create_task_group() as tg:
        tg.start_soon(scheduler.run)
        while len(finished) < 12:  # a few rounds of every meter's schedule
            await anyio.sleep(0.01)
        started = len(poller.calls)
        scheduler.stop()
    # run() returned by itself (the task group did not need cancelling); every poll started finished
    # and reported, and none started after stop().
    assert poller.active["global"] == 0
    assert len(finished) == len(poller.calls) == started


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_dead_meter_ends_at_its_deadline_and_the_rest_of_its_bus_is_read(tmp_path: Path) -> None:
    sim_config = SimulatorConfig(meters=fleet(4), framing=Framing.BOTH, start=NOW, speed=0.0)
    async with MeterSimulator(sim_config) as simulator:
        # Response timeout and retries long enough that only the deadline can end the dead meter's poll.
        text = fleet_toml(simulator, str(tmp_path / "e.db"), deadline_s=1.0, response_s=0.9, connect_s=0.05,
                          retries=3)
        config = parse_config(text, base_dir=tmp_path)
        async with open_poller(config, now=simulator.clock.now, environ=SECRETS) as poller:
            scheduler = Scheduler(config, poller)
            # The dead meter first in line for the bus: the others wait for it, then are read.
            dead_first = (config.meter(ABSENT), *[m for m in config.meters if m.id != ABSENT])
            scheduler.meters = dead_first
            summaries = {s.meter_id: s for s in await scheduler.run_cycle()}

    dead = summaries.pop(ABSENT)
    assert not dead.ok and dead.first_error is not None
    assert dead.first_error.kind == "MeterTimeout" and "deadline" in dead.first_error.message
    assert all(s.ok for s in summaries.values()), {m: s.describe_error() for m, s in summaries.items()}
    assert {s.meter_id for s in summaries.values()} == set(simulator.meters)
