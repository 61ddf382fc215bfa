"""Loads and snapshots meter state from the event store (any backend behind gateway.store).

``load`` reads the stream's snapshot and then only the events after it (snapshot + tail). A
snapshot is an optimisation, never a source of truth: one this code cannot read (unknown schema,
malformed) or that claims a version beyond the stream's head (e.g. after events were restored from
an older backup) is logged and ignored, and the stream is replayed in full.

``current`` answers "what do we know about this meter now" for a year whose stream may not exist
yet: then the state is the closing state of the meter's latest earlier year stream, and
``open_year`` gives the ``YearStreamOpened`` event the writer appends first to the new stream.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timezone
from typing import Sequence

from gateway.domain.events import MalformedEventData, UnknownEventType, UnsupportedSchemaVersion
from gateway.domain.mapper import decode, to_new_event
from gateway.domain.meter import SNAPSHOT_SCHEMA_VERSION, MeterState, UnsupportedSnapshot
from gateway.store import (
    NO_STREAM,
    EventMetadata,
    EventStore,
    NewEvent,
    RecordedEvent,
    Snapshot,
    StreamNotFound,
)
from gateway.domain.streams import StreamNameError, meter_stream_prefix, parse_stream_id, stream_id

log = logging.getLogger(__name__)


class MeterRepository:
    def __init__(self, store: EventStore, snapshot_every: int = 100) -> None:
        if snapshot_every < 1:
            raise ValueError(f"snapshot_every must be at least 1, not {snapshot_every}")
        self.store = store
        self.snapshot_every = snapshot_every
        # Version of the last snapshot known per stream, so maybe_snapshot needs no extra read.
        self._snapshot_versions: dict[str, int] = {}

    async def load(self, meter_id: str, year: int) -> MeterState:
        """State of the meter's ``year`` stream; an empty state (version 0) if it does not exist."""
        stream = stream_id(meter_id, year)
        snapshot = await self.store.load_snapshot(stream)
        base = self._usable_snapshot(stream, meter_id, year, snapshot)
        if base is not None:
            tail = await self._load_from(stream, base.version + 1)
            if tail and tail[0].version != base.version + 1:
                log.warning("stream %s: tail after snapshot v%d starts at v%d; replaying in full",
                            stream, base.version, tail[0].version)
            elif tail or await self.store.head(stream) == base.version:
                return self._fold(base, tail)
            else:
                log.warning("stream %s: snapshot v%d is beyond the stream's head; replaying in full",
                            stream, base.version)
        # No usable snapshot: the next maybe_snapshot must write one, whatever is stored now.
        self._snapshot_versions[stream] = NO_STREAM
        events = await self._load_from(stream, 1)
        return self._fold(MeterState.empty(meter_id, year), events)

    async def maybe_snapshot(self, meter_id: str, year: int, state: MeterState) -> bool:
        """Save a snapshot of ``state`` when at least ``snapshot_every`` events were applied since
        the last one. Returns True when a snapshot was written."""
        stream = stream_id(meter_id, year)
        if state.meter_id != meter_id or state.version < 1:
            return False
        last = self._snapshot_versions.get(stream)
        if last is None:
            snapshot = await self.store.load_snapshot(stream)
            last = snapshot.version if snapshot is not None else NO_STREAM
            self._snapshot_versions[stream] = last
        if last > state.version:
            last = NO_STREAM  # a stored snapshot ahead of the state is stale (see load)
        if state.version - last < self.snapshot_every:
            return False
        await self.store.save_snapshot(Snapshot(
            stream_id=stream,
            version=state.version,
            schema_version=SNAPSHOT_SCHEMA_VERSION,
            state=state.to_snapshot(),
            taken_at=datetime.now(timezone.utc),
        ))
        self._snapshot_versions[stream] = state.version
        return True

    async def current(self, meter_id: str, year: int) -> MeterState:
        """State as of ``year``: its stream if it exists, else the closing state of the latest earlier
        year stream (normally year-1, read only in that case) as an unwritten stream (version 0,
        no counts). Applying ``open_year``'s event to it gives the state the new stream will load as.
        """
        if await self.store.head(stream_id(meter_id, year)) != NO_STREAM:
            return await self.load(meter_id, year)
        previous = await self._latest_before(meter_id, year)
        if previous is None:
            return MeterState.empty(meter_id, year)
        opened = MeterState.from_carry_over(previous.open_year(year))
        return replace(opened, counts={}, version=NO_STREAM)

    async def open_year(
        self,
        meter_id: str,
        year: int,
        previous_state: MeterState | None,
        metadata: EventMetadata,
    ) -> NewEvent | None:
        """The YearStreamOpened event to append first to the new ``year`` stream.

        ``previous_state`` is the state of the previous year stream; when None it is loaded (the
        latest earlier year stream). None when the meter has no earlier stream: its first year
        stream starts without a carry-over.
        """
        stream_id(meter_id, year)  # validates both before any read
        if previous_state is None:
            previous_state = await self._latest_before(meter_id, year)
            if previous_state is None:
                return None
        if previous_state.meter_id != meter_id:
            raise ValueError(
                f"previous state is of meter {previous_state.meter_id!r}, not {meter_id!r}"
            )
        return to_new_event(previous_state.open_year(year), metadata)

    # --- internals -------------------------------------------------------------------------------

    async def _latest_before(self, meter_id: str, year: int) -> MeterState | None:
        """State of the meter's latest year stream before ``year``, None if there is none."""
        previous = await self.latest_year_before(meter_id, year)
        return None if previous is None else await self.load(meter_id, previous)

    async def latest_year_before(self, meter_id: str, year: int) -> int | None:
        """The year of the meter's latest stream before ``year``, None if there is none."""
        # Normally year-1 (one head read, answered from local state on the Cosmos path); a meter
        # that was silent for a whole year has no stream for it, and its state must still come
        # from the last year it was heard: only then are the meter's streams listed.
        if await self.store.head(stream_id(meter_id, year - 1)) != NO_STREAM:
            return year - 1
        years = []
        for info in await self.store.list_streams(meter_stream_prefix(meter_id)):
            try:
                stream_meter, stream_year = parse_stream_id(info.stream_id)
            except StreamNameError:
                continue
            if stream_meter == meter_id and stream_year < year and info.head != NO_STREAM:
                years.append(stream_year)
        return max(years, default=None)

    def _usable_snapshot(
        self, stream: str, meter_id: str, year: int, snapshot: Snapshot | None
    ) -> MeterState | None:
        if snapshot is None:
            return None
        try:
            state = MeterState.from_snapshot(snapshot.state, snapshot.schema_version)
        except UnsupportedSnapshot as exc:
            log.warning("stream %s: ignoring snapshot v%d (%s); replaying in full",
                        stream, snapshot.version, exc)
            return None
        if (state.meter_id, state.year, state.version) != (meter_id, year, snapshot.version):
            log.warning("stream %s: ignoring snapshot v%d of meter %r, year %r, state version %d",
                        stream, snapshot.version, state.meter_id, state.year, state.version)
            return None
        self._snapshot_versions[stream] = snapshot.version
        return state

    async def _load_from(self, stream: str, from_version: int) -> list[RecordedEvent]:
        try:
            return await self.store.load(stream, from_version)
        except StreamNotFound:
            return []

    @staticmethod
    def _fold(state: MeterState, events: Sequence[RecordedEvent]) -> MeterState:
        for recorded in events:
            try:
                state = state.apply(decode(recorded), version=recorded.version)
            except (UnknownEventType, UnsupportedSchemaVersion, MalformedEventData) as exc:
                # Written by a newer gateway, or damaged: keep going so the meter stays readable,
                # and count it so the gap in understanding is visible in the state.
                log.warning("%s; counted but not applied", exc)
                state = state.counted(recorded.type, recorded.version)
        return state
