"""Daily consumption per local day: DST days, missing intervals, register fallback; latest reading."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.domain.events import RegisterRead
from gateway.projections import DAILY_CONSUMPTION, LATEST_READING
from gateway.config import parse_config
from gateway.projections.views import DAY_SETTLE, DailyFigure, daily_figures, day_settle, drift_exceeded
from tests.config.conftest import BASE, WRAPPER_METER
from tests.projections import (
    EXPORT,
    IMPORT,
    PERIOD,
    append_polls,
    engine_for,
    meter_polls,
    sqlite_backend,
)

# Local 23:00 the evening before each DST change (Europe/Copenhagen).
SPRING = datetime(2026, 3, 27, 22, 0, tzinfo=timezone.utc)  # 29 March has 23 hours
AUTUMN = datetime(2026, 10, 24, 21, 0, tzinfo=timezone.utc)  # 25 October has 25 hours
GAP = frozenset(datetime(2026, 3, 29, 8, 0, tzinfo=timezone.utc) + i * PERIOD for i in range(3))


async def _project(tmp_path: Path, polls: list, meters: tuple[str, ...]) -> dict[str, list[DailyFigure]]:
    backend = sqlite_backend(tmp_path)
    async with backend.session() as (store, views):
        await append_polls(store, polls)
        await engine_for(store, views, meters, batch_size=50).drain_all()
        return {
            meter: daily_figures(doc.body for doc in await views.query(DAILY_CONSUMPTION, meter))
            for meter in meters
        }


def _by_day(figures: list[DailyFigure]) -> dict[date, tuple]:
    return {f.day: (f.import_wh, f.export_wh, f.intervals_expected, f.intervals_missing, f.complete,
                    f.source, f.in_progress) for f in figures}


@pytest.mark.anyio
async def test_daily_consumption_on_dst_days_counts_local_days_and_their_intervals(tmp_path: Path) -> None:
    polls = [
        *meter_polls("spring", SPRING, 1 + 24 + 23 + 24 + 2),
        *meter_polls("autumn", AUTUMN, 1 + 25 + 1),
        *meter_polls("gappy", SPRING, 1 + 24 + 23 + 24 + 2, missing=GAP),
    ]
    figures = await _project(tmp_path, polls, ("spring", "autumn", "gappy"))
    d = Decimal
    assert _by_day(figures["spring"]) == {
        # Only the last hour of the 27th, and no value at its start: 3 of its 4 intervals.
        date(2026, 3, 27): (d(30), d(3), 96, 92, False, "intervals", False),
        date(2026, 3, 28): (d(960), d(96), 96, 0, True, "intervals", False),
        date(2026, 3, 29): (d(920), d(92), 92, 0, True, "intervals", False),  # 23-hour day
        date(2026, 3, 30): (d(960), d(96), 96, 0, True, "intervals", False),
        # The newest data is from 02:01 local: the 8 intervals ended by then are all there.
        date(2026, 3, 31): (d(80), d(8), 8, 0, False, "intervals", True),
    }
    assert _by_day(figures["autumn"])[date(2026, 10, 25)] == (
        d(1000), d(100), 100, 0, True, "intervals", False)
    # Three rows missing in the middle of the day: the cumulative counter still gives the day's
    # energy, and the day says it is not complete.
    assert _by_day(figures["gappy"])[date(2026, 3, 29)] == (d(920), d(92), 92, 3, False, "intervals", False)


# 2026-06-10 in Copenhagen (CEST, UTC+2): polls from 23:00 local the evening before.
JUNE_EVE = datetime(2026, 6, 9, 21, 0, tzinfo=timezone.utc)
JUNE_10 = date(2026, 6, 10)


@pytest.mark.anyio
async def test_the_day_in_progress_expects_only_the_intervals_that_have_ended(tmp_path: Path) -> None:
    # Data up to 14:00 local (register read 14:01): 56 intervals have ended, 40 have not begun.
    gap = frozenset(datetime(2026, 6, 10, 5, 0, tzinfo=timezone.utc) + i * PERIOD for i in range(3))
    polls = [*meter_polls("today", JUNE_EVE, 1 + 14), *meter_polls("holes", JUNE_EVE, 1 + 14, missing=gap)]
    figures = await _project(tmp_path, polls, ("today", "holes"))
    d = Decimal
    assert _by_day(figures["today"])[JUNE_10] == (d(560), d(56), 56, 0, False, "intervals", True)
    # Only the three rows that should be there and are not count as missing.
    assert _by_day(figures["holes"])[JUNE_10] == (d(560), d(56), 56, 3, False, "intervals", True)
    # The evening before is a finished day as ever: 4 of its 96 intervals (without start value).
    assert _by_day(figures["today"])[date(2026, 6, 9)] == (d(30), d(3), 96, 92, False, "intervals", False)


@pytest.mark.anyio
async def test_a_day_stops_being_in_progress_once_a_later_day_has_data(tmp_path: Path) -> None:
    backend = sqlite_backend(tmp_path)
    async with backend.session() as (store, views):
        await append_polls(store, meter_polls("m-1", JUNE_EVE, 1 + 14))
        await engine_for(store, views, ("m-1",)).drain_all()
        before = daily_figures(doc.body for doc in await views.query(DAILY_CONSUMPTION, "m-1"))
        # Silent from 14:00 local until the next morning: the afternoon was never recorded.
        next_morning = datetime(2026, 6, 11, 4, 0, tzinfo=timezone.utc)
        await append_polls(store, meter_polls("m-1", next_morning, 4))
        await engine_for(store, views, ("m-1",)).drain_all()
        docs = [doc.body for doc in await views.query(DAILY_CONSUMPTION, "m-1")]
    d = Decimal
    assert _by_day(before)[JUNE_10][2:] == (56, 0, False, "intervals", True)
    after = _by_day(daily_figures(docs))
    assert after[JUNE_10] == (d(560), d(56), 96, 40, False, "intervals", False)
    # Back at 06:00 local, data until 10:01: of the 40 ended intervals the first 24 were not recorded.
    assert after[date(2026, 6, 11)][2:] == (40, 24, False, "intervals", True)
    # View documents written before `inProgress` existed read as finished days.
    old = [{k: v for k, v in body.items() if k != "inProgress"} for body in docs]
    assert [f.in_progress for f in daily_figures(old)] == [False, False, False]


@pytest.mark.anyio
async def test_a_silent_meters_newest_day_is_finished_once_it_is_over(tmp_path: Path) -> None:
    # Data until 14:00 local on 10 June (CEST), then nothing: the meter died.
    backend = sqlite_backend(tmp_path)
    async with backend.session() as (store, views):
        await append_polls(store, meter_polls("dead", JUNE_EVE, 1 + 14))
        await engine_for(store, views, ("dead",)).drain_all()
        docs = [doc.body for doc in await views.query(DAILY_CONSUMPTION, "dead")]
    d = Decimal
    local_midnight = datetime(2026, 6, 10, 22, 0, tzinfo=timezone.utc)  # 11 June 00:00 CEST
    # Read during the day, and just after midnight (the midnight intervals come with the next poll).
    for now in (datetime(2026, 6, 10, 13, 0, tzinfo=timezone.utc), local_midnight + timedelta(minutes=59)):
        assert _by_day(daily_figures(docs, now=now))[JUNE_10] == (d(560), d(56), 56, 0, False, "intervals", True)
    # An hour after the day's end it is over: its missing afternoon counts as missing.
    for now in (local_midnight + timedelta(hours=1), datetime(2026, 11, 26, tzinfo=timezone.utc)):
        assert _by_day(daily_figures(docs, now=now))[JUNE_10] == (d(560), d(56), 96, 40, False, "intervals", False)
    # An hourly load-profile schedule reads the midnight intervals up to an hour and more later.
    hourly = timedelta(seconds=3600 + 60 + 30)
    assert _by_day(daily_figures(docs, now=local_midnight + timedelta(hours=1), settle=hourly))[JUNE_10][-1] is True
    # The projection itself does not depend on the clock: without `now` the day reads as stored.
    assert _by_day(daily_figures(docs))[JUNE_10][-1] is True


@pytest.mark.anyio
async def test_days_without_intervals_use_register_differences(tmp_path: Path) -> None:
    start = datetime(2026, 6, 1, 22, 30, tzinfo=timezone.utc)  # 00:30 local (CEST)
    reads = [
        [RegisterRead(meter_id="reg-only", obis=obis, quantity=quantity, value=base + 100 * i,
                      unit="Wh", capture_time=start + i * timedelta(hours=6),
                      read_time=start + i * timedelta(hours=6))
         for obis, quantity, base in ((IMPORT, "active_energy_import", Decimal(5000)),
                                      (EXPORT, "active_energy_export", Decimal(700)))]
        for i in range(12)
    ]
    figures = await _project(tmp_path, reads, ("reg-only",))
    assert [(f.day, f.import_wh, f.export_wh, f.source, f.intervals_expected) for f in figures["reg-only"]] == [
        (date(2026, 6, 2), Decimal(300), Decimal(300), "registers", None),  # first to last read
        (date(2026, 6, 3), Decimal(400), Decimal(400), "registers", None),  # last read to last read
        (date(2026, 6, 4), Decimal(400), Decimal(400), "registers", None),
    ]


@pytest.mark.anyio
async def test_latest_reading_keeps_newest_register_values_and_clock_state(tmp_path: Path) -> None:
    backend = sqlite_backend(tmp_path)
    polls = meter_polls("m-1", SPRING, 12)
    async with backend.session() as (store, views):
        await append_polls(store, polls)
        await engine_for(store, views, ("m-1",)).drain_all()
        (doc,) = await views.query(LATEST_READING, "m-1")
    last_read = SPRING + 12 * timedelta(hours=1) + timedelta(minutes=1)
    body = doc.body
    assert body["registers"][IMPORT] == {
        "quantity": "active_energy_import", "value": str(1_000_000 + 48 * 10), "unit": "Wh",
        "captureTime": last_read.isoformat().replace("+00:00", "Z"),
        "readTime": last_read.isoformat().replace("+00:00", "Z"),
    }
    assert body["lastContact"] == last_read.isoformat().replace("+00:00", "Z")
    assert body["identity"]["serial"] == "S-m-1"
    # Polls 0..2: the third (poll 2, offset 2 s) detected drift, and it is the latest check.
    assert body["clock"]["offsetS"] == "2" and drift_exceeded(body)


def test_day_settle_follows_the_fleets_load_profile_schedule(tmp_path: Path) -> None:
    base = BASE + WRAPPER_METER + """
[limits]
meter_deadline_s = 30
[schedules.load_profile]
interval_s = INTERVAL
jitter_s = 60
enabled = ENABLED
"""
    hourly = parse_config(base.replace("INTERVAL", "3600").replace("ENABLED", "true"), base_dir=tmp_path)
    assert day_settle(hourly) == timedelta(seconds=3600 + 60 + 30)
    quarter = parse_config(base.replace("INTERVAL", "900").replace("ENABLED", "true"), base_dir=tmp_path)
    assert day_settle(quarter) == DAY_SETTLE  # at least an hour
    off = parse_config(base.replace("INTERVAL", "3600").replace("ENABLED", "false"), base_dir=tmp_path)
    assert day_settle(off) == DAY_SETTLE
