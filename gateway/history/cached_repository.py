"""The poller's meter repository: the states of recently polled meter-year streams kept in memory,
and (Cosmos DB) saved as local states in the outbox file so that they survive a restart.

Without it every poll folds the stream's tail after its snapshot twice (for the catch-up cursors, then
for the normalizer). See ``CachingRepository`` for when a cached state is trusted.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Iterable, Protocol

import anyio

from gateway.domain.meter import SNAPSHOT_SCHEMA_VERSION, MeterState
from gateway.history.repository import MeterRepository
from gateway.store.base import EventStore
from gateway.store.errors import StoreError
from gateway.store.model import NO_STREAM, Snapshot
from gateway.domain.streams import meter_stream_prefix, stream_id

log = logging.getLogger(__name__)

SNAPSHOT_WAIT_S = 2.0  # a snapshot save waits no longer for a far store (the poll's bus slot is held)


class LocalStates(Protocol):
    """Where the last known state of each stream is kept across restarts (``gateway.history.sinks.OutboxView``:
    the outbox file); the store read through then prefers it to the far store."""

    async def save_local(self, snapshot: Snapshot) -> None: ...

    async def drop_local(self, stream_id: str) -> None: ...

    async def drop_local_unless_verified(self, stream_id: str) -> bool:
        """Drop the stream's local state unless records independent of whoever saved it (the
        forwarder's) vouch for it; True when dropped."""
        ...


class CachingRepository(MeterRepository):
    """``MeterRepository`` that keeps the state of recently polled meter-year streams in memory.

    Without it every poll folds the stream's tail after its snapshot twice (for the catch-up
    cursors, then for the normalizer): up to ``snapshot_every`` events, about 0.15 ms each.

    ``verify_head=True`` (SQLite): a cached state is used only while the stream's head is still its
    version (one cheap local read), so a state is never stale. ``verify_head=False`` (Cosmos DB
    through the outbox): the cache is trusted without asking the far store, which may be out of
    reach for hours; this is sound because the gateway is the only writer of its meters' streams,
    and every append of ours updates (``remember``) or drops (``forget``) the cached state.

    ``local``: the cached state is also kept there (``keep``/``discard``), one write per stream and
    poll, so the state survives a restart.
    """

    def __init__(
        self, store: EventStore, snapshot_every: int = 100, capacity: int = 20_000, *, verify_head: bool = True,
        local: LocalStates | None = None,
    ) -> None:
        super().__init__(store, snapshot_every)
        self.capacity = capacity
        self.verify_head = verify_head
        self.local = local
        self._states: OrderedDict[str, MeterState] = OrderedDict()

    async def _cached(self, stream: str) -> MeterState | None:
        cached = self._states.get(stream)
        if cached is None or (self.verify_head and await self.store.head(stream) != cached.version):
            return None
        self._states.move_to_end(stream)
        return cached

    async def load(self, meter_id: str, year: int) -> MeterState:
        cached = await self._cached(stream_id(meter_id, year))
        if cached is not None:
            return cached
        state = await super().load(meter_id, year)
        self.remember(meter_id, year, state)
        return state

    async def current(self, meter_id: str, year: int) -> MeterState:
        if not self.verify_head:
            cached = await self._cached(stream_id(meter_id, year))
            if cached is not None and cached.version != NO_STREAM:
                return cached
        return await super().current(meter_id, year)

    def cached_states(self, meter_id: str, years: Iterable[int]) -> dict[int, MeterState] | None:
        """The states ``load_states`` would give, when the (trusted) cache has them all: every year
        wanted, the earliest an existing stream (else its carry-over needs a look at older streams)."""
        if self.verify_head:
            return None
        wanted = sorted(set(years))
        states = {year: self._states.get(stream_id(meter_id, year)) for year in wanted}
        if not wanted or any(state is None for state in states.values()):
            return None
        if states[wanted[0]].version == NO_STREAM:  # type: ignore[union-attr]
            return None
        return {year: state for year, state in states.items() if state is not None}

    async def maybe_snapshot(self, meter_id: str, year: int, state: MeterState) -> bool:
        stream = stream_id(meter_id, year)
        reason = f"the store did not answer within {SNAPSHOT_WAIT_S:g} s"
        with anyio.move_on_after(SNAPSHOT_WAIT_S):
            try:
                return await super().maybe_snapshot(meter_id, year, state)
            except StoreError as exc:
                reason = str(exc)
        # A snapshot is an optimisation and the events are stored: try again after another
        # snapshot_every events rather than at every poll of an outage.
        log.info("stream %s: snapshot skipped: %s", stream, reason)
        self._snapshot_versions[stream] = state.version
        return False

    def forget_meter(self, meter_id: str) -> None:
        """Drop the cached states of every stream of the meter."""
        prefix = meter_stream_prefix(meter_id)
        for stream in [s for s in self._states if s.startswith(prefix)]:
            del self._states[stream]

    def is_cached(self, meter_id: str, year: int) -> bool:
        return stream_id(meter_id, year) in self._states

    async def distrust_meter(self, meter_id: str) -> None:
        """``forget_meter``, and drop the local states of the streams it had cached that nothing
        vouches for: another process stored to them at the same time, and the state saved last may
        lack the other's events. A local state the forwarder's records confirm is kept (dropping it
        would make the meter wait for the far store during an outage)."""
        prefix = meter_stream_prefix(meter_id)
        streams = [s for s in self._states if s.startswith(prefix)]
        self.forget_meter(meter_id)
        if self.local is None:
            return
        for stream in streams:
            try:
                await self.local.drop_local_unless_verified(stream)
            except StoreError as exc:
                log.warning("stream %s: local state not dropped: %s", stream, exc)

    def remember(self, meter_id: str, year: int, state: MeterState) -> None:
        """Keep ``state`` as the state of the meter's ``year`` stream (after an append of ours)."""
        stream = stream_id(meter_id, year)
        self._states[stream] = state
        self._states.move_to_end(stream)
        while len(self._states) > self.capacity:
            self._states.popitem(last=False)

    def forget(self, meter_id: str, year: int) -> None:
        """Drop the cached state of the meter's ``year`` stream (it is not what the store holds)."""
        self._states.pop(stream_id(meter_id, year), None)

    async def keep(self, meter_id: str, year: int, state: MeterState) -> None:
        """``remember``, and save the state as the stream's local state (after an append of ours)."""
        self.remember(meter_id, year, state)
        if self.local is None or state.version < 1:
            return
        stream = stream_id(meter_id, year)
        try:
            await self.local.save_local(Snapshot(
                stream_id=stream, version=state.version, schema_version=SNAPSHOT_SCHEMA_VERSION,
                state=state.to_snapshot(), taken_at=datetime.now(timezone.utc),
            ))
        except StoreError as exc:
            # The events are stored; an older local state is still consistent with them (its tail
            # holds them) or is found inconsistent and not used.
            log.warning("stream %s: local state not saved: %s", stream, exc)

    async def discard(self, meter_id: str, year: int) -> None:
        """``forget``, and drop the stream's local state too."""
        self.forget(meter_id, year)
        if self.local is None:
            return
        stream = stream_id(meter_id, year)
        try:
            await self.local.drop_local(stream)
        except StoreError as exc:
            log.warning("stream %s: local state not dropped: %s", stream, exc)


__all__ = ["CachingRepository", "LocalStates", "SNAPSHOT_WAIT_S"]
