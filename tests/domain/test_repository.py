"""MeterRepository on a real SQLite event store: snapshot + tail, year rollover, bad snapshots."""
from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.domain.events import (
    CarryOver,
    ClockChecked,
    ClockDriftDetected,
    DomainEvent,
    IntervalRow,
    IntervalsRecorded,
    MeterEventLogged,
    MeterIdentity,
    MeterRegistered,
    ReadingGapDetected,
    RegisterRead,
    RegisterValue,
    SuspectReadingFlagged,
    YearStreamOpened,
)
from gateway.domain.mapper import decode, to_new_event
from gateway.domain.meter import SNAPSHOT_SCHEMA_VERSION, MeterState
from gateway.history.repository import MeterRepository
from gateway.store import NO_STREAM, EventMetadata, EventStore, NewEvent, Snapshot
from gateway.domain.streams import stream_id
from tests.backends import opened_sqlite
from tests.builders import EXPORT, IMPORT, PROFILE, fold, register_read

pytestmark = pytest.mark.anyio

UTC = timezone.utc
T0 = datetime(2025, 6, 1, tzinfo=UTC)
META = EventMetadata(gateway_id="gw-test", recorded_at=datetime(2026, 1, 2, tzinfo=UTC))


@pytest.fixture
def store(sqlite_store: EventStore) -> EventStore:
    return sqlite_store


async def append(store: EventStore, year: int, events: Sequence[DomainEvent | NewEvent]) -> None:
    stream = stream_id("M1", year)
    new = [e if isinstance(e, NewEvent) else to_new_event(e, META) for e in events]
    await store.append(stream, new, await store.head(stream))


def every_type() -> list[DomainEvent]:
    return [
        MeterRegistered("M1", "Iskra", "AM550", "ISK1", "v2", T0),
        register_read("12345678.901", T0),
        IntervalsRecorded("M1", PROFILE, 900, (
            IntervalRow(T0, {IMPORT: Decimal("0.001"), EXPORT: Decimal("0")},
                        {IMPORT: "Wh", EXPORT: "Wh"}, 0x80),
        )),
        ClockChecked("M1", T0 + timedelta(seconds=1), T0, Decimal("1.5")),
        ClockDriftDetected("M1", T0 + timedelta(seconds=45), T0, Decimal("45"), Decimal("30")),
        MeterEventLogged("M1", "0.0.99.98.0.255", T0, 7, "terminal cover opened"),
        ReadingGapDetected("M1", PROFILE, T0, T0 + timedelta(hours=1), "no answer"),
        SuspectReadingFlagged("M1", IMPORT, "negative step", Decimal("-12.000"), T0),
        YearStreamOpened("M1", 2025, 3, CarryOver(
            MeterIdentity("Iskra", "AM550", "ISK1", "v2", T0),
            {EXPORT: RegisterValue("active_energy_export", Decimal("0.000"), "Wh", T0)},
            {PROFILE: T0}, None, None,
        )),
    ]


async def test_events_round_trip_through_the_store(store: EventStore) -> None:
    events = every_type()
    await append(store, 2025, events)
    loaded = [decode(r) for r in await store.load(stream_id("M1", 2025))]
    assert loaded == events
    assert str(loaded[1].value) == "12345678.901"
    assert [r.event_id for r in await store.load(stream_id("M1", 2025))] == [
        e.event_id() for e in events
    ]


async def test_missing_stream_is_an_empty_state(store: EventStore) -> None:
    state = await MeterRepository(store).load("M1", 2025)
    assert state == MeterState.empty("M1", 2025)
    assert state.version == NO_STREAM


async def test_load_is_a_full_fold_without_snapshot(store: EventStore) -> None:
    events = every_type()[:-1]
    await append(store, 2025, events)
    assert await MeterRepository(store).load("M1", 2025) == fold(events, MeterState.empty("M1", 2025))


async def test_year_rollover_needs_only_the_new_stream(store: EventStore) -> None:
    repo = MeterRepository(store)
    year_2025 = [
        MeterRegistered("M1", "Iskra", "AM550", "ISK1", "v2", T0),
        register_read("1000.000", T0),
        register_read("5.000", T0, obis=EXPORT),
        ClockChecked("M1", T0, T0, Decimal("0.5")),
        register_read("1500.250", datetime(2025, 12, 31, 23, 45, tzinfo=UTC)),
    ]
    await append(store, 2025, year_2025)
    state_2025 = await repo.load("M1", 2025)

    opening = await repo.open_year("M1", 2026, state_2025, META)
    assert opening is not None and opening.type == "YearStreamOpened"
    jan = datetime(2026, 1, 1, 0, 15, tzinfo=UTC)
    await append(store, 2026, [opening, register_read("1500.500", jan)])

    # Proof that 2026 needs nothing older: the 2025 stream is gone before loading 2026.
    await store.delete_stream(stream_id("M1", 2025))
    state_2026 = await MeterRepository(store).load("M1", 2026)
    assert state_2026.version == 2 and state_2026.year == 2026
    assert state_2026.identity == state_2025.identity
    assert state_2026.registers[IMPORT].value == Decimal("1500.500")
    assert state_2026.registers[EXPORT] == state_2025.registers[EXPORT]  # carried from 2025
    assert state_2026.clock_offset_s == Decimal("0.5")
    assert state_2026.counts == {"YearStreamOpened": 1, "RegisterRead": 1}


async def test_current_before_the_new_stream_exists(store: EventStore) -> None:
    repo = MeterRepository(store)
    await append(store, 2025, [register_read("10", T0), register_read("3", T0, obis=EXPORT)])
    current = await repo.current("M1", 2026)
    assert current.version == NO_STREAM and current.year == 2026 and current.counts == {}
    assert current.registers == (await repo.load("M1", 2025)).registers

    # The writer appends open_year's event first; folding it onto `current` matches the store.
    opening = await repo.open_year("M1", 2026, None, META)
    assert opening is not None
    await append(store, 2026, [opening])
    loaded = await repo.load("M1", 2026)
    assert current.apply(decode_new(opening), version=1) == loaded
    assert await repo.current("M1", 2026) == loaded


def decode_new(event: NewEvent) -> DomainEvent:
    return YearStreamOpened.from_data(event.data, event.schema_version)


async def test_current_skips_a_silent_year(store: EventStore) -> None:
    await append(store, 2024, [register_read("10", datetime(2024, 5, 1, tzinfo=UTC))])
    current = await MeterRepository(store).current("M1", 2026)
    assert current.registers[IMPORT].value == Decimal("10") and current.version == NO_STREAM


async def test_current_of_a_new_meter_is_empty(store: EventStore) -> None:
    repo = MeterRepository(store)
    assert await repo.current("M1", 2026) == MeterState.empty("M1", 2026)
    assert await repo.open_year("M1", 2026, None, META) is None  # first stream: no carry-over


async def test_open_year_ids_are_deterministic(store: EventStore) -> None:
    state = MeterState.empty("M1", 2025).apply(register_read("1", T0))
    repo = MeterRepository(store)
    first = await repo.open_year("M1", 2026, state, META)
    again = await repo.open_year("M1", 2026, state, META)
    other = await repo.open_year("M1", 2027, state, META)
    assert first is not None and again is not None and other is not None
    assert first.event_id == again.event_id != other.event_id


async def test_snapshot_every_n_events_and_tail_load(store: EventStore) -> None:
    repo = MeterRepository(store, snapshot_every=10)
    stream = stream_id("M1", 2025)
    events = [register_read(str(i), T0 + timedelta(minutes=15 * i)) for i in range(1, 26)]
    state = MeterState.empty("M1", 2025)
    written = []
    for batch_start in range(0, len(events), 4):  # the writer appends in batches of 4
        batch = events[batch_start:batch_start + 4]
        await append(store, 2025, batch)
        state = fold(batch, state)
        if await repo.maybe_snapshot("M1", 2025, state):
            written.append(state.version)
    assert written == [12, 24]
    snapshot = await store.load_snapshot(stream)
    assert snapshot is not None and snapshot.version == 24
    assert await MeterRepository(store).load("M1", 2025) == state


async def test_load_uses_the_snapshot_then_the_tail(store: EventStore) -> None:
    await append(store, 2025, [register_read("1", T0), register_read("2", T0 + timedelta(hours=1))])
    # A snapshot whose content differs from the events shows that load starts from it.
    marker = MeterState.empty("M1", 2025).apply(register_read("999", T0, obis=EXPORT), version=1)
    await store.save_snapshot(Snapshot(stream_id("M1", 2025), 1, SNAPSHOT_SCHEMA_VERSION,
                                       marker.to_snapshot(), T0))
    state = await MeterRepository(store).load("M1", 2025)
    assert state.registers[EXPORT].value == Decimal("999")  # from the snapshot
    assert state.registers[IMPORT].value == Decimal("2")  # from the tail
    assert state.version == 2


async def full_replay(store: EventStore, meter_id: str, year: int) -> MeterState:
    events = [decode(r) for r in await store.load(stream_id(meter_id, year))]
    return fold(events, MeterState.empty(meter_id, year))


async def test_unknown_snapshot_schema_means_full_replay(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    await append(store, 2025, every_type()[:-1])
    expected = await full_replay(store, "M1", 2025)
    bogus = MeterState.empty("M1", 2025).apply(register_read("999", T0), version=3)
    await store.save_snapshot(Snapshot(stream_id("M1", 2025), 3, SNAPSHOT_SCHEMA_VERSION + 1,
                                       bogus.to_snapshot(), T0))
    with caplog.at_level(logging.WARNING, logger="gateway.history.repository"):
        assert await MeterRepository(store).load("M1", 2025) == expected
    assert "replaying in full" in caplog.text


async def test_malformed_snapshot_means_full_replay(store: EventStore) -> None:
    await append(store, 2025, every_type()[:-1])
    expected = await full_replay(store, "M1", 2025)
    await store.save_snapshot(Snapshot(stream_id("M1", 2025), 3, SNAPSHOT_SCHEMA_VERSION,
                                       {"meterId": "M1", "surprise": True}, T0))
    assert await MeterRepository(store).load("M1", 2025) == expected


async def test_snapshot_beyond_the_head_is_ignored(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    await append(store, 2025, [register_read("1", T0), register_read("2", T0 + timedelta(hours=1))])
    expected = await full_replay(store, "M1", 2025)
    ahead = MeterState.empty("M1", 2025).apply(register_read("999", T0 + timedelta(days=1)), version=50)
    await store.save_snapshot(Snapshot(stream_id("M1", 2025), 50, SNAPSHOT_SCHEMA_VERSION,
                                       ahead.to_snapshot(), T0))
    repo = MeterRepository(store, snapshot_every=1)
    with caplog.at_level(logging.WARNING, logger="gateway.history.repository"):
        state = await repo.load("M1", 2025)
    assert state == expected
    assert "beyond the stream's head" in caplog.text
    # The next snapshot replaces the bad one rather than being held back by its version.
    state = state.apply(register_read("3", T0 + timedelta(hours=2)))
    await append(store, 2025, [register_read("3", T0 + timedelta(hours=2))])
    assert await repo.maybe_snapshot("M1", 2025, state)
    assert (await store.load_snapshot(stream_id("M1", 2025))).version == 3


async def test_unknown_event_types_are_counted_not_fatal(store: EventStore) -> None:
    future = NewEvent("f-1", "MeterLevitated", 1, {"meterId": "M1"}, META)
    await append(store, 2025, [register_read("1", T0), future, register_read("2", T0 + timedelta(hours=1))])
    state = await MeterRepository(store).load("M1", 2025)
    assert state.version == 3
    assert state.registers[IMPORT].value == Decimal("2")
    assert state.counts == {"RegisterRead": 2, "MeterLevitated": 1}


# --- property: snapshot + tail == full replay ----------------------------------------------------

_obis = st.sampled_from([IMPORT, EXPORT, "1.0.32.7.0.255"])
_times = st.integers(min_value=0, max_value=300).map(lambda q: T0 + timedelta(minutes=15 * q))
_values = st.decimals(min_value=-10**9, max_value=10**9, places=3, allow_nan=False)

_event = st.one_of(
    st.builds(lambda o, v, t: RegisterRead("M1", o, "q", v, "Wh", t, t), _obis, _values, _times),
    st.builds(
        lambda ends: IntervalsRecorded("M1", PROFILE, 900, tuple(
            IntervalRow(e, {IMPORT: Decimal(1)}, {IMPORT: "Wh"}, 0) for e in sorted(set(ends))
        )),
        st.lists(_times, min_size=1, max_size=3),
    ),
    st.builds(lambda t, s: ClockChecked("M1", t, t, Decimal(s)), _times, st.integers(-99, 99)),
    st.builds(lambda t: MeterRegistered("M1", "m", "x", "s", "f", t), _times),
    st.builds(lambda t, c: MeterEventLogged("M1", "0.0.99.98.0.255", t, c, "e"), _times,
              st.integers(0, 255)),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(_event, min_size=1, max_size=30), cut=st.integers(min_value=0))
def test_snapshot_plus_tail_equals_full_replay(events: list[DomainEvent], cut: int) -> None:
    unique = list({e.event_id(): e for e in reversed(events)}.values())[::-1]
    cut = cut % (len(unique) + 1)

    async def scenario(directory: str) -> None:
        async with opened_sqlite(Path(directory) / "events.db") as store:
            await append(store, 2025, unique)
            expected = await full_replay(store, "M1", 2025)
            repo = MeterRepository(store, snapshot_every=1)
            if cut:
                partial = fold(unique[:cut], MeterState.empty("M1", 2025))
                assert await repo.maybe_snapshot("M1", 2025, partial)
            assert await MeterRepository(store).load("M1", 2025) == expected

    with tempfile.TemporaryDirectory() as directory:
        anyio.run(scenario, directory)
