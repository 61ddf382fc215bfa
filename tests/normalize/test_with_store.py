"""plan_poll / load_states against a real SQLite event store: plans append cleanly at their expected
versions, a re-read appends nothing new, and a new year stream opens from the stored previous year."""
from __future__ import annotations

from collections.abc import Sequence

import pytest

from gateway.domain.mapper import decode
from gateway.domain.normalize import AppendPlan, load_states, plan_poll
from gateway.domain.poll_result import PollResult
from gateway.history.repository import MeterRepository
from gateway.store.sqlite import SqliteEventStore
from gateway.domain.streams import stream_id
from tests.normalize import (
    IMPORT,
    LOAD_PROFILE,
    METER_ID,
    SETTINGS,
    at,
    clock,
    event_entry,
    identity,
    meter_config,
    poll,
    profile,
    register,
    steady_rows,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def repository(sqlite_store: SqliteEventStore) -> MeterRepository:
    return MeterRepository(sqlite_store)


async def run(repository: MeterRepository, p: PollResult) -> list[AppendPlan]:
    plans = await plan_poll(repository, p, meter_config(), SETTINGS)
    await append(repository, plans)
    return plans


async def append(repository: MeterRepository, plans: Sequence[AppendPlan]) -> None:
    for plan in plans:
        result = await repository.store.append(plan.stream_id, plan.events, plan.expected_version)
        assert result.last_version == plan.state_after.version and not result.already_done


async def test_poll_appends_and_a_re_read_appends_nothing(repository: MeterRepository) -> None:
    t = at("2026-04-01T10:00:05")
    p = poll(t, identity=identity(), clock=clock(t, 1), registers=(register(IMPORT, 2_000_000),),
             profiles=(profile(steady_rows(at("2026-04-01T08:00"), 8, start_wh=1_998_000)),))
    plans = await run(repository, p)
    stored = await repository.store.load(stream_id(METER_ID, 2026))
    assert [e.type for e in stored] == ["MeterRegistered", "ClockChecked", "RegisterRead", "IntervalsRecorded"]
    assert decode(stored[3]).rows[-1].end_time == at("2026-04-01T09:45")  # type: ignore[attr-defined]
    assert (await repository.load(METER_ID, 2026)) .interval_ends[LOAD_PROFILE] == at("2026-04-01T09:45")
    assert plans[0].state_after == await repository.load(METER_ID, 2026)
    assert await plan_poll(repository, p, meter_config(), SETTINGS) == []


async def test_new_year_stream_opens_from_the_stored_previous_year(repository: MeterRepository) -> None:
    await run(repository, poll(at("2025-12-31T23:50"), identity=identity(),
                               registers=(register(IMPORT, 1_000_000),),
                               profiles=(profile(steady_rows(at("2025-12-31T23:00"), 3)),)))
    read_time = at("2026-01-01T00:20")
    plans = await run(repository, poll(read_time, identity=identity(), registers=(register(IMPORT, 1_001_000),),
                                       profiles=(profile(steady_rows(at("2025-12-31T23:45"), 3,
                                                                     start_wh=1_000_750)),)))
    assert [p.year for p in plans] == [2025, 2026]
    new = await repository.store.load(stream_id(METER_ID, 2026))
    assert new[0].type == "YearStreamOpened" and new[0].version == 1
    opened = decode(new[0])
    assert opened.previous_version == await repository.store.head(stream_id(METER_ID, 2025))  # type: ignore[attr-defined]
    # Loading the new stream from the store gives the same state the plan predicted.
    assert (await repository.load(METER_ID, 2026)).interval_ends == plans[1].state_after.interval_ends
    assert (await repository.load(METER_ID, 2026)).identity is not None


async def test_gap_reaching_into_a_year_the_poll_did_not_touch_is_loaded_on_demand(
    repository: MeterRepository,
) -> None:
    await run(repository, poll(at("2025-12-31T23:40"), profiles=(profile(steady_rows(at("2025-12-31T23:00"), 2)),)))
    # A register read early on 1 January creates the 2026 stream; the profile stays at 23:15.
    await run(repository, poll(at("2026-01-01T00:01"), registers=(register(IMPORT, 1_000_300),)))
    assert await load_states(repository, METER_ID, {2026}) == {2026: await repository.load(METER_ID, 2026)}
    # Rows from 00:45: the gap starts at 23:15 on 31 December, in the 2025 stream.
    plans = await run(repository, poll(at("2026-01-01T01:05"),
                                       profiles=(profile(steady_rows(at("2026-01-01T00:45"), 2, start_wh=1_000_500)),)))
    assert [(p.year, [e.TYPE for e in p.domain_events]) for p in plans] == [
        (2025, ["ReadingGapDetected"]), (2026, ["IntervalsRecorded"])]


async def test_event_log_re_read_adds_nothing(repository: MeterRepository) -> None:
    # MeterState keeps the newest stored entry per log, so an overlapping re-read is empty.
    t = at("2026-04-01T10:00")
    p = poll(t, events=(event_entry(at("2026-04-01T09:00"), 1), event_entry(at("2026-04-01T09:05"), 2)))
    await run(repository, p)
    stored = {e.event_id for e in await repository.store.load(stream_id(METER_ID, 2026))}
    assert len(stored) == 2
    again = await plan_poll(repository, p, meter_config(), SETTINGS)
    assert [e for plan in again for e in plan.events] == []
    newer = poll(at("2026-04-01T11:00"), events=(event_entry(at("2026-04-01T09:05"), 2),
                                               event_entry(at("2026-04-01T10:30"), 1)))
    (plan,) = await plan_poll(repository, newer, meter_config(), SETTINGS)
    assert [(e.type, e.event_id in stored) for e in plan.events] == [("MeterEventLogged", False)]
