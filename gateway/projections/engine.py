"""The projection engine: from the event store's read-all feed to saved views, exactly once in effect.

For each projection the engine loops: read a page of the feed after the projection's checkpoint,
decode the events whose type the projection subscribes to, group them by the documents they land
in, read those documents, apply each event a document has not yet applied, save the documents with
optimistic concurrency, and only then save the new checkpoint.

Why it is exactly once in effect: every document records, per stream, the last stream version it
has applied, and an event at or below that mark is skipped. A page re-delivered after a crash
between "views saved" and "checkpoint saved" therefore changes nothing. Stream versions are used
instead of a global sequence number because on Cosmos DB each feed range has its own order (a
global LSN skip is only right on one physical partition), while a stream always comes in version
order. Two engines running the same projection are safe too: a save whose version is stale is
refused, and the loser re-reads the documents and re-applies what they still lack.

Views know their store: each checkpoint records the event store's identity (``IdentifiedStore``,
SQLite). At start-up ``check_store`` drops the views whose checkpoint is of another store (the store
file was replaced, e.g. by a new ``gateway demo``) or lies beyond the store's head (an older backup
of the same store was restored) or at an event other than the one it was taken after (that backup
was written to since), with one WARNING, so they are projected again from the start
instead of showing the old data and never seeing the new events.

A checkpoint may move back when two engines race (the slower one saves an older position); that
only costs re-reading events that are then skipped. Rebuild (drop views and checkpoint) must run
with no other engine on the same projection.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Protocol

import anyio
import anyio.to_thread

from gateway.domain.events import DomainEvent, EventError
from gateway.domain.mapper import decode
from gateway.projections.view_store import Checkpoint, ViewDoc, ViewStore, ViewStoreUnavailable
from gateway.projections.views import Target
from gateway.store.base import EventStore, IdentifiedStore
from gateway.store.errors import CheckpointMismatch, StoreUnavailable
from gateway.store.model import RecordedEvent

log = logging.getLogger("gateway.projections")


class ProjectionError(Exception):
    """Base class of the errors of the projection engine; each names its projection."""

    def __init__(self, projection: str, message: str) -> None:
        self.projection = projection
        super().__init__(f"projection {projection!r}: {message}")


class UnknownProjection(ProjectionError):
    def __init__(self, projection: str, known: Sequence[str]) -> None:
        super().__init__(projection, f"no such projection (known: {', '.join(sorted(known))})")


class ConflictsPersist(ProjectionError):
    """Saving views kept conflicting with other writers beyond the retry limit."""


class CheckpointNotOfThisStore(ProjectionError):
    """The projection's checkpoint is no position of the event store's feed (see
    ``CheckpointMismatch``): its views are not this store's as they stand; a rebuild makes them so."""

    def __init__(self, projection: str, cause: CheckpointMismatch) -> None:
        super().__init__(projection, f"{cause}; rebuild its view from the start: "
                                     f"gateway project --rebuild {projection}")


class Projection(Protocol):
    name: str  # also the name of the view it maintains
    event_types: frozenset[str]

    def targets(self, event: DomainEvent) -> Sequence[Target]: ...

    def apply(
        self, body: dict[str, Any] | None, event: DomainEvent, recorded: RecordedEvent, key: str
    ) -> dict[str, Any]: ...

    def finish(self, body: dict[str, Any], key: str) -> dict[str, Any]:
        """Derive summary fields once per document per batch, after its events were applied."""
        ...


@dataclass(slots=True)
class ProjectionStats:
    events_read: int = 0  # from the feed, of every type
    applied: int = 0  # (event, document) applications
    skipped_duplicates: int = 0  # already applied to that document (re-delivery, a racing engine)
    skipped_undecodable: int = 0
    conflicts: int = 0  # documents whose save was refused because another writer changed them
    batches: int = 0


@dataclass(frozen=True, slots=True)
class Lag:
    projection: str
    checkpoint: str | None
    events_behind: int | None  # None where the store cannot count (Cosmos)
    seconds_behind: float  # now - recorded_at of the oldest event not yet read; 0 when none

    def to_json(self) -> dict[str, Any]:
        return {"projection": self.projection, "checkpoint": self.checkpoint,
                "eventsBehind": self.events_behind, "secondsBehind": round(self.seconds_behind, 3)}


Hook = Callable[[str, int], Awaitable[None]]  # (projection name, batch number)


@dataclass(frozen=True, slots=True)
class EngineHooks:
    """Points where tests interleave engines or simulate a crash. Not for production logic."""

    before_save: Hook | None = None  # documents read and applied in memory, not yet saved
    after_views_saved: Hook | None = None  # views saved, checkpoint not yet saved


@dataclass(slots=True)
class _Planned:
    target: Target
    events: list[tuple[RecordedEvent, DomainEvent]] = field(default_factory=list)


class ProjectionEngine:
    """Runs projections over ``store`` into ``views``; one checkpoint per projection."""

    def __init__(
        self,
        store: EventStore,
        views: ViewStore,
        projections: Sequence[Projection],
        *,
        batch_size: int = 1000,
        max_conflict_retries: int = 20,
        hooks: EngineHooks = EngineHooks(),
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.store = store
        self.views = views
        self.projections = {p.name: p for p in projections}
        self.batch_size = batch_size
        self.max_conflict_retries = max_conflict_retries
        self.hooks = hooks
        self.clock = clock
        self.stats = {name: ProjectionStats() for name in self.projections}
        # Projections following the feed together read the same events: decode each once.
        self._decoded: OrderedDict[str, DomainEvent] = OrderedDict()
        self._decoded_max = 4 * batch_size

    def projection(self, name: str) -> Projection:
        try:
            return self.projections[name]
        except KeyError:
            raise UnknownProjection(name, list(self.projections)) from None

    # -- running --------------------------------------------------------------------------------

    async def step(self, name: str) -> bool:
        """Process one page of the feed for projection ``name``; True when the feed was drained."""
        projection = self.projection(name)
        stats = self.stats[name]
        checkpoint = await self.views.load_checkpoint(name)
        try:
            page = await self.store.read_all(checkpoint.position, limit=self.batch_size)
        except CheckpointMismatch as exc:
            raise CheckpointNotOfThisStore(name, exc) from exc
        stats.batches += 1
        stats.events_read += len(page.events)
        plan = self._plan(projection, page.events, stats)
        if plan:
            await self._apply(projection, plan, stats)
        if self.hooks.after_views_saved is not None:
            await self.hooks.after_views_saved(name, stats.batches)
        if page.events or page.checkpoint != checkpoint.position:
            await self.views.save_checkpoint(Checkpoint(
                projection=name,
                position=page.checkpoint,
                events_seen=checkpoint.events_seen + len(page.events),
                updated_at=self.clock(),
                store_id=self._store_id(),
                last_event_id=page.events[-1].event_id if page.events else checkpoint.last_event_id,
            ))
        return page.done

    async def drain(self, name: str) -> int:
        """Run ``name`` until the feed has nothing more; returns the events read."""
        before = self.stats[self.projection(name).name].events_read
        while not await self.step(name):
            pass
        return self.stats[name].events_read - before

    async def drain_all(self) -> dict[str, int]:
        """Drain every projection concurrently; events read per projection."""
        read: dict[str, int] = {}

        async def one(name: str) -> None:
            read[name] = await self.drain(name)

        async with anyio.create_task_group() as tg:
            for name in self.projections:
                tg.start_soon(one, name, name=f"projection {name}")
        return read

    async def run_forever(self, poll_interval_s: float = 1.0, max_backoff_s: float = 30.0) -> None:
        """Keep every projection up to date until cancelled; idle ``poll_interval_s`` when drained.

        While the event store or the view store is unavailable, retry with a backoff doubling up
        to ``max_backoff_s``: an outage of the store is normal for a long-running projection."""

        async def follow(name: str) -> None:
            backoff = poll_interval_s
            while True:
                try:
                    drained = await self.step(name)
                except (StoreUnavailable, ViewStoreUnavailable) as exc:
                    log.warning("projection %s: %s; retrying in %.1f s", name, exc, backoff)
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, max_backoff_s)
                    continue
                backoff = poll_interval_s
                if drained:
                    await anyio.sleep(poll_interval_s)

        async with anyio.create_task_group() as tg:
            for name in self.projections:
                tg.start_soon(follow, name, name=f"projection {name}")

    def _store_id(self) -> str | None:
        return self.store.store_id if isinstance(self.store, IdentifiedStore) else None

    async def check_store(self) -> list[str]:
        """Drop the views and checkpoints of the projections whose checkpoint is not of this store
        as it stands (another store's identity, or a position beyond its head), so that they are
        projected again from the start; one WARNING says which and why. Returns their names.

        Run it at start-up, with no other engine on the store (like ``rebuild``). A checkpoint that
        names no store (saved before checkpoints did) and is not beyond the head is taken as this
        store's, and its store and event are recorded now. A checkpoint whose event was deleted
        since (``gateway forget``) is kept: positions are never reused in one history."""
        if not isinstance(self.store, IdentifiedStore):
            return []  # Cosmos: the views store checks its events container (ViewsOfAnotherStore)
        store_id = self.store.store_id
        reasons: dict[str, list[str]] = {}
        for name in self.projections:
            checkpoint = await self.views.load_checkpoint(name)
            if checkpoint.position is None:
                continue
            if checkpoint.store_id is not None and checkpoint.store_id != store_id:
                reason = (f"their checkpoints are of another event store (id {checkpoint.store_id}, "
                          f"this store is {store_id}: the store was replaced)")
            elif await self.store.beyond_head(checkpoint.position):
                reason = ("their checkpoints are beyond the event store's last position "
                          "(an older copy of the store was restored)")
            elif checkpoint.last_event_id is not None and await self.store.event_at(
                    checkpoint.position) not in (None, checkpoint.last_event_id):
                reason = ("the event store holds other events at their checkpoints (an older copy "
                          "of the store was restored and written to since)")
            else:
                if checkpoint.store_id is None or checkpoint.last_event_id is None:
                    await self.views.save_checkpoint(replace(
                        checkpoint, store_id=store_id,
                        last_event_id=await self.store.event_at(checkpoint.position)))
                continue
            reasons.setdefault(reason, []).append(name)
        if not reasons:
            return []
        stale = [name for names in reasons.values() for name in names]
        log.warning("rebuilding views %s from the start: %s", ", ".join(stale),
                    "; ".join(f"{', '.join(names)}: {reason}" if len(reasons) > 1 else reason
                              for reason, names in reasons.items()))
        for name in stale:
            await self.views.drop(name, self.projections[name].name)
            self.stats[name] = ProjectionStats()
        return stale

    async def rebuild(self, name: str) -> int:
        """Drop the views and checkpoint of ``name`` and project it again from the start."""
        projection = self.projection(name)
        await self.views.drop(projection.name, projection.name)
        self.stats[name] = ProjectionStats()
        return await self.drain(name)

    # -- lag ------------------------------------------------------------------------------------

    async def lag(self, name: str) -> Lag:
        return await projection_lag(self.store, self.views, self.projection(name).name, self.clock())

    # -- internals ------------------------------------------------------------------------------

    def _plan(
        self, projection: Projection, events: Sequence[RecordedEvent], stats: ProjectionStats
    ) -> dict[str, _Planned]:
        plan: dict[str, _Planned] = {}
        for recorded in events:
            if recorded.type not in projection.event_types:
                continue
            try:
                event = self._decode(recorded)
            except EventError as exc:
                # One unreadable event must not stop every view; it is logged and counted, and a
                # rebuild after the code learns to read it brings it in.
                log.error("projection %s: skipping %s v%d: %s", projection.name,
                          recorded.stream_id, recorded.version, exc)
                stats.skipped_undecodable += 1
                continue
            for target in projection.targets(event):
                plan.setdefault(target.key, _Planned(target)).events.append((recorded, event))
        return plan

    def _decode(self, recorded: RecordedEvent) -> DomainEvent:
        event = self._decoded.get(recorded.event_id)
        if event is None:
            event = decode(recorded)
            self._decoded[recorded.event_id] = event
            if len(self._decoded) > self._decoded_max:
                self._decoded.popitem(last=False)
        return event

    async def _apply(
        self, projection: Projection, plan: dict[str, _Planned], stats: ProjectionStats
    ) -> None:
        pending = list(plan)
        for _attempt in range(self.max_conflict_retries + 1):
            stored = await self.views.get_many(
                projection.name, {key: plan[key].target.partition for key in pending})
            to_save: list[ViewDoc] = []
            for key in pending:
                doc = stored.get(key)
                body = dict(doc.body) if doc is not None else None
                applied = dict(doc.applied) if doc is not None else {}
                changed = False
                for recorded, event in plan[key].events:
                    if applied.get(recorded.stream_id, 0) >= recorded.version:
                        stats.skipped_duplicates += 1
                        continue
                    body = projection.apply(body, event, recorded, key)
                    applied[recorded.stream_id] = recorded.version
                    stats.applied += 1
                    changed = True
                if changed and body is not None:
                    body = projection.finish(body, key)
                    to_save.append(ViewDoc(
                        view=projection.name, key=key, partition=plan[key].target.partition,
                        body=body, applied=applied, version=None if doc is None else doc.version,
                    ))
            if self.hooks.before_save is not None:
                await self.hooks.before_save(projection.name, stats.batches)
            if not to_save:
                return
            conflicts = await self.views.save_many(to_save)
            if not conflicts:
                return
            stats.conflicts += len(conflicts)
            # What the other writer applied is now in the stored document: re-read and re-apply
            # only what is still missing, for the conflicting documents only.
            pending = [key for key in pending if key in conflicts]
        raise ConflictsPersist(
            projection.name,
            f"{len(pending)} documents still conflicting after {self.max_conflict_retries} retries",
        )


async def projection_lag(store: EventStore, views: ViewStore, name: str, now: datetime) -> Lag:
    """How far projection ``name`` is behind ``store``, from its saved checkpoint."""
    checkpoint = await views.load_checkpoint(name)
    try:
        behind = await events_after(store, checkpoint.position)
        page = await store.read_all(checkpoint.position, limit=1)
    except CheckpointMismatch as exc:
        raise CheckpointNotOfThisStore(name, exc) from exc
    seconds = 0.0
    if page.events:
        seconds = max((now - page.events[0].metadata.recorded_at).total_seconds(), 0.0)
    return Lag(name, checkpoint.position, behind, seconds)


async def events_after(store: EventStore, checkpoint: str | None) -> int | None:
    """Events in the store after a read-all checkpoint; None when the backend cannot count them
    (a change feed cannot say how much is left). Backends that can offer ``events_after``."""
    count = getattr(store, "events_after", None)
    return None if count is None else int(await count(checkpoint))
