"""Gap detection: capture periods without a row inside the read range become ReadingGapDetected."""
from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.events import ReadingGapDetected
from tests.normalize import (
    BlankableRow,
    LOAD_PROFILE,
    QUARTER,
    FakeHistory,
    at,
    events_of,
    only,
    poll,
    profile,
    steady_rows,
)

T = at("2026-07-01T12:00:05")
START = at("2026-07-01T09:00")


def gaps(plans: list) -> list[tuple[datetime, datetime]]:
    found = events_of(plans, "ReadingGapDetected")
    assert all(isinstance(g, ReadingGapDetected) and g.profile_obis == LOAD_PROFILE for g in found)
    return [(g.gap_start, g.gap_end) for g in found]


def test_missing_rows_between_read_rows_are_one_gap() -> None:
    rows = steady_rows(START, 8)
    del rows[3:6]  # 09:45, 10:00, 10:15 missing
    plans = FakeHistory().run(poll(T, profiles=(profile(rows),)))
    assert gaps(plans) == [(at("2026-07-01T09:30"), at("2026-07-01T10:15"))]
    assert "3 capture period(s) of 900 s with no row" in only(events_of(plans, "ReadingGapDetected")).reason


def test_requested_range_the_meter_could_not_fill_at_the_start() -> None:
    rows = steady_rows(at("2026-07-01T10:00"), 4)
    plans = FakeHistory().run(poll(T, profiles=(profile(rows, start=START, end=T),)))
    # Requested from 09:00: the rows ending 09:00 .. 09:45 are missing.
    assert gaps(plans) == [(at("2026-07-01T08:45"), at("2026-07-01T09:45"))]


def test_gap_after_the_last_stored_interval() -> None:
    history = FakeHistory()
    history.run(poll(T, profiles=(profile(steady_rows(START, 2)),)))  # stored up to 09:15
    plans = history.run(poll(T + QUARTER, profiles=(profile(steady_rows(at("2026-07-01T10:00"), 2)),)))
    assert gaps(plans) == [(at("2026-07-01T09:15"), at("2026-07-01T09:45"))]


def test_no_gap_for_a_contiguous_read_or_a_short_row_after_power_up() -> None:
    rows = steady_rows(START, 4)
    # A row captured at power-up (09:22) in the period ending 09:30, instead of the regular row.
    rows[2] = (at("2026-07-01T09:22"), 0x80, rows[2][2], rows[2][3])
    plans = FakeHistory().run(poll(T, profiles=(profile(rows),)))
    assert gaps(plans) == []


def test_rows_without_values_count_as_missing_with_their_own_reason() -> None:
    rows: list[BlankableRow] = [*steady_rows(START, 4)]
    rows[1] = (rows[1][0], 0x80, None, None)  # a meter that blanks the cells of a power-down interval
    plans = FakeHistory().run(poll(T, profiles=(profile(rows),)))
    gap = only(events_of(plans, "ReadingGapDetected"))
    assert (gap.gap_start, gap.gap_end) == (START, START + QUARTER)
    assert "rows without values" in gap.reason
    assert len(only(events_of(plans, "IntervalsRecorded")).rows) == 3


def test_missing_tail_is_not_reported_until_a_later_row_arrives() -> None:
    history = FakeHistory()
    first = history.run(poll(T, profiles=(profile(steady_rows(START, 2), start=START, end=T),)))
    assert gaps(first) == []  # 09:30 .. 12:00 may simply not be captured yet
    again = history.run(poll(T + QUARTER, profiles=(profile([], start=START + QUARTER, end=T + QUARTER),)))
    assert again == []
    later = history.run(poll(T + 2 * QUARTER, profiles=(
        profile(steady_rows(at("2026-07-01T12:15"), 1), start=START + QUARTER, end=T + 2 * QUARTER),)))
    assert gaps(later) == [(START + QUARTER, at("2026-07-01T12:00"))]
    assert not history.run(poll(T + 2 * QUARTER, profiles=(
        profile(steady_rows(at("2026-07-01T12:15"), 1), start=START + QUARTER, end=T + 2 * QUARTER),)))


def test_gap_across_new_year_goes_to_the_stream_of_its_start() -> None:
    history = FakeHistory()
    history.run(poll(at("2025-12-31T23:20"), profiles=(profile(steady_rows(at("2025-12-31T23:00"), 1)),)))
    plans = history.run(poll(at("2026-01-01T01:05"), profiles=(profile(steady_rows(at("2026-01-01T01:00"), 1)),)))
    assert [(p.year, [e.TYPE for e in p.domain_events]) for p in plans] == [
        (2025, ["ReadingGapDetected"]), (2026, ["YearStreamOpened", "IntervalsRecorded"])]
    assert gaps(plans) == [(at("2025-12-31T23:00"), at("2026-01-01T00:45"))]


@settings(max_examples=50, deadline=None)
@given(present=st.lists(st.booleans(), min_size=2, max_size=60))
def test_gaps_are_exactly_the_runs_of_missing_rows(present: list[bool]) -> None:
    present[0] = present[-1] = True  # first and last row read: every hole is inside the range
    rows = [row for row, keep in zip(steady_rows(START, len(present)), present) if keep]
    plans = FakeHistory().run(poll(START + len(present) * QUARTER, profiles=(profile(rows),)))
    expected = []
    i = 0
    while i < len(present):
        if present[i]:
            i += 1
            continue
        j = i
        while j < len(present) and not present[j]:
            j += 1
        # rows i..j-1 missing: from the end of row i-1 to the end of row j-1
        expected.append((START + (i - 1) * QUARTER, START + (j - 1) * QUARTER))
        i = j
    assert gaps(plans) == expected
    recorded = only(events_of(plans, "IntervalsRecorded"))
    assert len(recorded.rows) == sum(present)


def test_a_period_that_does_not_divide_the_hour_still_uses_the_meters_period() -> None:
    period = timedelta(minutes=10)
    rows = [(START + i * period, 0, Decimal(1000 + i), Decimal(0)) for i in (0, 1, 4)]
    plans = FakeHistory().run(poll(T, profiles=(profile(rows, period_s=600),)))
    assert gaps(plans) == [(START + period, START + 3 * period)]


@settings(max_examples=60, deadline=None)
@given(windows=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), min_size=1, max_size=8))
def test_any_sequence_of_reads_stores_each_row_once_and_accounts_for_the_rest(
    windows: list[tuple[int, int]],
) -> None:
    served = steady_rows(START, 40)
    history = FakeHistory()
    recorded: list[datetime] = []
    gap_spans: list[tuple[datetime, datetime]] = []
    for i, (a, b) in enumerate(windows):
        lo, hi = min(a, b), max(a, b)
        plans = history.run(poll(T + i * QUARTER, profiles=(profile(served[lo:hi]),)))
        recorded += [row.end_time for e in events_of(plans, "IntervalsRecorded") for row in e.rows]
        gap_spans += gaps(plans)
    assert len(recorded) == len(set(recorded)) and recorded == sorted(recorded)
    in_gap = {end for end, *_ in served if any(s < end <= e for s, e in gap_spans)}
    assert not in_gap & set(recorded)
    if recorded:
        # Between the first and the last stored row, every served row is stored or inside a gap.
        inside = {end for end, *_ in served if recorded[0] <= end <= recorded[-1]}
        assert inside <= set(recorded) | in_gap
