"""Shared helpers of the projection tests: a synthetic meter history, backends, view snapshots.

The history is what a poller writes for meters with 15-minute load profiles: every 4 hours one
``IntervalsRecorded`` block of 16 rows (cumulative import rising 10 Wh and export 1 Wh per interval),
the import/export registers and a clock check (every 3rd poll also a drift detection), appended per
poll to the meter's year stream. Energy per local day is therefore known exactly: 10 Wh import per
interval present, whatever the day's length.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gateway.domain.events import (
    ClockChecked,
    ClockDriftDetected,
    DomainEvent,
    IntervalRow,
    IntervalsRecorded,
    MeterRegistered,
    RegisterRead,
)
from gateway.domain.mapper import to_new_event
from gateway.projections import (
    VIEW_NAMES,
    ProjectionEngine,
    SqliteViewStore,
    ViewStore,
    default_projections,
    zone_lookup,
)
from gateway.store.base import EventStore
from gateway.store.model import EventMetadata
from gateway.store.sqlite import SqliteEventStore
from gateway.domain.streams import stream_id, year_of

COPENHAGEN = ZoneInfo("Europe/Copenhagen")
IMPORT = "1.0.1.8.0.255"
EXPORT = "1.0.2.8.0.255"
PROFILE = "1.0.99.1.0.255"
PERIOD = timedelta(minutes=15)
IMPORT_PER_INTERVAL = Decimal(10)
EXPORT_PER_INTERVAL = Decimal(1)


def zones(meters: Iterable[str]) -> dict[str, ZoneInfo]:
    return {meter: COPENHAGEN for meter in meters}


def engine_for(store: EventStore, views: ViewStore, meters: Iterable[str], **kwargs: Any) -> ProjectionEngine:
    return ProjectionEngine(store, views, default_projections(zone_lookup(zones(meters))), **kwargs)


def meter_polls(
    meter_id: str, start: datetime, hours: int, *, missing: frozenset[datetime] = frozenset(),
) -> list[list[DomainEvent]]:
    """Polls of one meter from ``start`` (UTC, on a quarter hour) for ``hours`` hours."""
    polls: list[list[DomainEvent]] = [[MeterRegistered(
        meter_id=meter_id, make="kamstrup", model="OMNIPOWER", serial=f"S-{meter_id}",
        firmware="1.0", first_contact=start)]]
    base_import, base_export = Decimal(1_000_000), Decimal(50_000)
    intervals = hours * 4
    for poll_no, first in enumerate(range(0, intervals, 16)):
        rows = []
        for k in range(first + 1, min(first + 16, intervals) + 1):
            end = start + k * PERIOD
            if end in missing:
                continue
            rows.append(IntervalRow(
                end_time=end,
                values={IMPORT: base_import + k * IMPORT_PER_INTERVAL,
                        EXPORT: base_export + k * EXPORT_PER_INTERVAL},
                units={IMPORT: "Wh", EXPORT: "Wh"}, status=0))
        poll_end = start + min(first + 16, intervals) * PERIOD
        k_end = min(first + 16, intervals)
        events: list[DomainEvent] = []
        if rows:
            events.append(IntervalsRecorded(meter_id=meter_id, profile_obis=PROFILE,
                                            capture_period_s=900, rows=tuple(rows)))
        read_time = poll_end + timedelta(minutes=1)
        for obis, quantity, value in (
            (IMPORT, "active_energy_import", base_import + k_end * IMPORT_PER_INTERVAL),
            (EXPORT, "active_energy_export", base_export + k_end * EXPORT_PER_INTERVAL),
        ):
            events.append(RegisterRead(meter_id=meter_id, obis=obis, quantity=quantity, value=value,
                                       unit="Wh", capture_time=read_time, read_time=read_time))
        offset = Decimal(poll_no % 7)
        meter_time = read_time + timedelta(seconds=int(offset))
        events.append(ClockChecked(meter_id=meter_id, meter_time=meter_time, gateway_time=read_time,
                                   offset_s=offset))
        if poll_no % 3 == 2:
            events.append(ClockDriftDetected(meter_id=meter_id, meter_time=meter_time,
                                             gateway_time=read_time, offset_s=offset,
                                             threshold_s=Decimal(1)))
        polls.append(events)
    return polls


async def append_polls(store: EventStore, polls: list[list[DomainEvent]]) -> int:
    """Append each poll to its year stream (one append per poll and stream); returns events written."""
    heads: dict[str, int] = {}
    written = 0
    for events in polls:
        by_stream: dict[str, list[DomainEvent]] = {}
        for event in events:
            by_stream.setdefault(stream_id(event.meter_id, year_of(event)), []).append(event)
        for stream, stream_events in by_stream.items():
            if stream not in heads:
                heads[stream] = await store.head(stream)
            recorded_at = max(_moment(e) for e in stream_events) + timedelta(seconds=30)
            meta = EventMetadata(gateway_id="gw-test", recorded_at=recorded_at)
            result = await store.append(
                stream, [to_new_event(e, meta) for e in stream_events], heads[stream])
            heads[stream] = result.last_version
            written += len(stream_events)
    return written


def _moment(event: DomainEvent) -> datetime:
    if isinstance(event, IntervalsRecorded):
        return event.last_end
    if isinstance(event, MeterRegistered):
        return event.first_contact
    return getattr(event, "read_time", None) or event.gateway_time  # type: ignore[attr-defined]


def interleave(*histories: list[list[DomainEvent]]) -> list[list[DomainEvent]]:
    """Polls of several meters in the order a fleet poller would write them."""
    out: list[list[DomainEvent]] = []
    for i in range(max(len(h) for h in histories)):
        out.extend(h[i] for h in histories if i < len(h))
    return out


async def snapshot(views: ViewStore) -> dict[tuple[str, str], tuple[Any, Any]]:
    """Every document of every view, without its concurrency version (which counts saves)."""
    out: dict[tuple[str, str], tuple[Any, Any]] = {}
    for view in VIEW_NAMES:
        for doc in await views.query(view):
            out[(view, doc.key)] = (doc.body, dict(doc.applied))
    return out


@dataclass(frozen=True, slots=True)
class Backend:
    """How to open (new connections to) one event store and its views, for a given backend."""

    name: str
    open: Callable[[str], Awaitable[tuple[EventStore, ViewStore]]]  # arg: which views (a label)
    spec: Callable[[str], dict[str, str]]  # the same, as JSON for a subprocess (open_from_spec)

    @asynccontextmanager
    async def session(self, views: str = "views") -> AsyncIterator[tuple[EventStore, ViewStore]]:
        store, view_store = await self.open(views)
        try:
            yield store, view_store
        finally:
            await view_store.aclose()
            await store.aclose()


def sqlite_backend(directory: Path) -> Backend:
    async def open_(views: str) -> tuple[EventStore, ViewStore]:
        store = await SqliteEventStore.open(directory / "events.db")
        return store, await SqliteViewStore.open(directory / f"{views}.db")

    def spec(views: str) -> dict[str, str]:
        return {"backend": "sqlite", "events": str(directory / "events.db"),
                "views": str(directory / f"{views}.db")}

    return Backend("sqlite", open_, spec)


async def open_from_spec(spec: dict[str, str]) -> tuple[EventStore, ViewStore]:
    """Open what ``Backend.spec`` describes (in a subprocess that has no pytest fixtures)."""
    if spec["backend"] == "sqlite":
        store = await SqliteEventStore.open(spec["events"])
        return store, await SqliteViewStore.open(spec["views"])
    from gateway.projections.view_store_cosmos import CosmosViewStore
    from gateway.store.cosmos import CosmosEventStore
    from gateway.store.cosmos_client import CosmosConfig

    config = CosmosConfig(endpoint=spec["endpoint"], database=spec["database"],
                          container=spec["container"], key_env=spec["key_env"], verify_tls=False)
    return (await CosmosEventStore.open(config),
            await CosmosViewStore.open(config, container=spec["views"]))


def cosmos_backend(server: Any) -> Backend:
    """Events in a fresh Cosmos container of the session's test server, views in containers of
    their own (one per label), all through the real SDK over HTTPS."""
    from gateway.projections.view_store_cosmos import CosmosViewStore
    from gateway.store.cosmos import CosmosEventStore

    config = server.config()
    suffix = config.container

    async def open_(views: str) -> tuple[EventStore, ViewStore]:
        store = await CosmosEventStore.open(config, create_if_missing=True)
        view_store = await CosmosViewStore.open(config, container=f"{views}-{suffix}",
                                                create_if_missing=True)
        return store, view_store

    def spec(views: str) -> dict[str, str]:
        # The key travels by environment variable name only, as in production.
        return {"backend": "cosmos", "endpoint": config.endpoint, "database": config.database,
                "container": config.container, "key_env": config.key_env,
                "views": f"{views}-{suffix}"}

    return Backend("cosmos", open_, spec)
