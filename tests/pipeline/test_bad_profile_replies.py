"""A meter's bad load-profile reply fails the load_profile step alone; what it asked is all that is
stored; every other step of the same poll is still read and stored.

Real poller, real simulator (faults: ``range_slack`` widens the range the meter answers,
``ignores_range`` answers the whole buffer, ``load_profile_without_clock`` drops the clock column),
real SQLite store. The simulator's clock is frozen, so its oracle says what the meter holds.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from drivers.simulator import (
    Framing,
    MeterFaults,
    MeterSimulator,
    SimulatorConfig,
    expected_events,
    expected_profile_rows,
)
from drivers.simulator.fleet import fleet
from gateway.config import parse_config
from gateway.domain.events import DomainEvent, IntervalsRecorded, MeterEventLogged
from gateway.domain.mapper import decode
from gateway.polling.meter_reading import PollerSettings, catch_up_ranges
from gateway.domain.poll_result import STEP_ORDER, PollSummary
from gateway.polling.poller import Poller
from gateway.wiring import open_poller

from . import SECRETS, fleet_toml

pytestmark = pytest.mark.anyio

START = datetime(2026, 4, 14, 9, 5, tzinfo=timezone.utc)
METER = "sim-0000"  # omnipower, no security, on its own wrapper port
LOAD_PROFILE = "1.0.99.1.0.255"
EVENT_LOG = "0.0.99.98.0.255"


@asynccontextmanager
async def _polling(
    tmp_path: Path, faults: MeterFaults, settings: PollerSettings | None = None
) -> AsyncIterator[tuple[MeterSimulator, Poller]]:
    sim_config = SimulatorConfig(meters=fleet(2), framing=Framing.BOTH, start=START, speed=0.0)
    async with MeterSimulator(sim_config) as simulator:
        simulator.set_faults(METER, faults)
        text = fleet_toml(simulator, str(tmp_path / "events.db"), absent=False, deadline_s=20, response_s=5)
        config = parse_config(text, base_dir=tmp_path)
        async with open_poller(config, now=simulator.clock.now, environ=SECRETS, settings=settings) as poller:
            yield simulator, poller


async def _stored(poller: Poller) -> list[DomainEvent]:
    return [decode(e) for e in await poller.history.repository.store.load(f"Meter:{METER}:{START.year}")]


def _types(events: list[DomainEvent]) -> Counter[str]:
    return Counter(type(e).__name__ for e in events)


async def test_profile_rows_outside_the_requested_ranges_are_dropped_and_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Two days to catch up in two range reads; the meter answers two hours more on both sides.
    settings = PollerSettings(profile_backfill=timedelta(days=2))
    async with _polling(tmp_path, MeterFaults(range_slack=timedelta(hours=2)), settings) as (simulator, poller):
        with caplog.at_level(logging.WARNING, logger="drivers.readers"):
            summary = await poller.poll(METER, STEP_ORDER)
        stored = await _stored(poller)
        meter = simulator.meter(METER)

    assert summary.ok, summary.describe_error()
    rows = [row.end_time for e in stored if isinstance(e, IntervalsRecorded) for row in e.rows]
    want = [r.clock.astimezone(timezone.utc) for r in expected_profile_rows(meter, START - timedelta(days=2), START)]
    assert len(want) == 2 * 96 and rows == want  # exactly the intervals asked, once
    assert summary.rows_read == len(want)
    assert _types(stored)["ReadingGapDetected"] == 0

    # Each range read: one warning naming the meter, the range and how many rows were dropped (8 rows
    # in each two-hour slack that the meter holds; nothing after the second range: it ends now).
    first, second = catch_up_ranges(None, START, settings)
    profile_warnings = [r.getMessage() for r in caplog.records
                        if r.levelno == logging.WARNING and f"profile {LOAD_PROFILE}:" in r.getMessage()]
    assert profile_warnings == [
        f"meter {METER}: profile {LOAD_PROFILE}: dropped {dropped} of {96 + dropped} row(s) outside the requested "
        f"range {start.isoformat()} .. {end.isoformat()}"
        for dropped, (start, end) in ((16, first), (8, second))
    ]


@pytest.mark.parametrize("faults", [
    # As the fuzzed meter did: its whole buffer (40 days) for a day asked.
    MeterFaults(ignores_range=frozenset({LOAD_PROFILE})),
    # Three days more on both sides of the day asked.
    MeterFaults(range_slack=timedelta(days=3)),
], ids=["whole-buffer", "wider-range"])
async def test_a_profile_reply_larger_than_its_range_fails_the_load_profile_step_alone(
    tmp_path: Path, faults: MeterFaults
) -> None:
    async with _polling(tmp_path, faults) as (simulator, poller):
        summary = await poller.poll(METER, STEP_ORDER)
        stored = await _stored(poller)
        health = await poller.health.get(METER)
        meter = simulator.meter(METER)
    _assert_only_the_load_profile_failed(summary, stored, "ProfileTooLarge")
    assert health is not None and health.last_error is not None and "ProfileTooLarge" in health.last_error
    # The event log (read after the load profile, in the same session) is stored: only what was asked.
    logged = [(e.event_time, e.code) for e in stored if isinstance(e, MeterEventLogged)]
    want = expected_events(meter, START - timedelta(days=7), START, START)
    assert want, "the seed must give the week some power outages"
    assert logged == [(w.clock.astimezone(timezone.utc), w.code) for w in want]


async def test_a_load_profile_without_a_clock_column_fails_the_load_profile_step_alone(tmp_path: Path) -> None:
    async with _polling(tmp_path, MeterFaults(load_profile_without_clock=True)) as (_, poller):
        summary = await poller.poll(METER, STEP_ORDER)
        stored = await _stored(poller)
    _assert_only_the_load_profile_failed(summary, stored, "ProfileUnusable")
    assert "no clock column" in summary.errors[0].message


def _assert_only_the_load_profile_failed(summary: PollSummary, stored: list[DomainEvent], kind: str) -> None:
    assert [(e.step, e.kind, e.obis) for e in summary.errors] == [("load_profile", kind, LOAD_PROFILE)]
    assert summary.errors[0].message.startswith(f"meter {METER}: ")
    assert not summary.retryable  # the same reply comes again: a retry cannot cure it
    assert summary.rows_read == 0 and summary.log_entries_read > 0
    types = _types(stored)
    assert types["MeterRegistered"] == 1 and types["ClockChecked"] == 1 and types["RegisterRead"] == 4
    assert types["MeterEventLogged"] == summary.log_entries_read
    assert types["IntervalsRecorded"] == 0
