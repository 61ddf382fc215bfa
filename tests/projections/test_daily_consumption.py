"""Daily consumption per local day: DST days, missing intervals, register fallback; latest reading."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.events import RegisterRead
from gateway.projections import DAILY_CONSUMPTION, LATEST_READING
from gateway.projections.views import DailyFigure, daily_figures, drift_exceeded
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
                    f.source) for f in figures}


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
        date(2026, 3, 27): (d(30), d(3), 96, 92, False, "intervals"),
        date(2026, 3, 28): (d(960), d(96), 96, 0, True, "intervals"),
        date(2026, 3, 29): (d(920), d(92), 92, 0, True, "intervals"),  # 23-hour day
        date(2026, 3, 30): (d(960), d(96), 96, 0, True, "intervals"),
        date(2026, 3, 31): (d(80), d(8), 96, 88, False, "intervals"),
    }
    assert _by_day(figures["autumn"])[date(2026, 10, 25)] == (d(1000), d(100), 100, 0, True, "intervals")
    # Three rows missing in the middle of the day: the cumulative counter still gives the day's
    # energy, and the day says it is not complete.
    assert _by_day(figures["gappy"])[date(2026, 3, 29)] == (d(920), d(92), 92, 3, False, "intervals")


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
