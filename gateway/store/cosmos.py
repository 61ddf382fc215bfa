"""Azure Cosmos DB (NoSQL API) backend of the event store: one item per append, one round trip.

Each append creates one commit item in the stream's partition (``/streamId``) whose id is its first
version, so a stale expected version is a 409 (``WrongExpectedVersion``); a per-store head cache
validates the expected version without a read when warm. Layout, concurrency, change feed and error
mapping: docs/architecture.md, "Stores".
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Sequence

import anyio
from azure.core import MatchConditions
from azure.cosmos.aio import ContainerProxy, CosmosClient
from azure.cosmos.exceptions import CosmosHttpResponseError

from gateway.store import codec
from gateway.store.base import BatchOutcome, ReadAllPage
from gateway.store.cosmos_client import (
    CosmosConfig,
    CosmosStoreStats,
    build_client,
    ensure_container,
)
from gateway.store.cosmos_feed import ChangeFeedReader
from gateway.store.cosmos_items import (
    COMMIT,
    SNAPSHOT,
    SNAPSHOT_ID,
    commit_item,
    recorded_events,
    translate_errors,
)
from gateway.store.errors import (
    AppendTooLarge,
    EventIdConflict,
    StoreError,
    StoreUnavailable,
    StreamNotFound,
    WrongExpectedVersion,
)
from gateway.store.model import (
    NO_STREAM,
    AppendRequest,
    AppendResult,
    NewEvent,
    RecordedEvent,
    Snapshot,
    StreamInfo,
)
from gateway.history.version_cache import StreamVersionCache

__all__ = ["CosmosEventStore", "translate_errors"]

_SNAPSHOT_SAVE_ATTEMPTS = 5

_HEAD_QUERY = (
    "SELECT TOP 1 c.lastVersion FROM c WHERE c.streamId = @stream AND c.kind = 'commit' "
    "ORDER BY c.firstVersion DESC"
)
_LOAD_QUERY = (
    "SELECT * FROM c WHERE c.streamId = @stream AND c.kind = 'commit' AND c.lastVersion >= @from "
    "ORDER BY c.firstVersion"
)
_IDS_QUERY = (
    "SELECT c.streamId, e.id FROM c JOIN e IN c.events "
    "WHERE c.kind = 'commit' AND ARRAY_CONTAINS(@ids, e.id)"
)
_ITEMS_OF_STREAM_QUERY = "SELECT c.id, c.kind FROM c WHERE c.streamId = @stream"
_LIST_QUERY = (
    "SELECT c.streamId, c.firstVersion, c.lastVersion, c.firstRecordedAt, c.lastRecordedAt "
    "FROM c WHERE c.kind = 'commit' AND STARTSWITH(c.streamId, @prefix)"
)


# -- the store -----------------------------------------------------------------------------------


class CosmosEventStore:
    """The event store on Azure Cosmos DB; open with :meth:`open`, close with :meth:`aclose`."""

    def __init__(self, config: CosmosConfig, client: CosmosClient, container: ContainerProxy,
                 stats: CosmosStoreStats, head_cache_size: int = 100_000) -> None:
        self.config = config
        self.stats: CosmosStoreStats = stats
        self._client = client
        self._container = container
        self._heads = StreamVersionCache(head_cache_size)
        self._feed = ChangeFeedReader(container)
        self._appends_in_flight = anyio.CapacityLimiter(config.max_concurrent_appends)

    @classmethod
    async def open(cls, config: CosmosConfig, *, create_if_missing: bool = False,
                   head_cache_size: int = 100_000) -> "CosmosEventStore":
        """Connect (lazily: the first request happens on first use unless creating the container)."""
        stats = CosmosStoreStats()
        client = build_client(config, stats)
        try:
            if create_if_missing:
                with translate_errors(None):
                    container = await ensure_container(client, config)
            else:
                container = client.get_database_client(config.database).get_container_client(
                    config.container)
        except BaseException:
            await client.close()
            raise
        return cls(config, client, container, stats, head_cache_size)

    async def aclose(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> "CosmosEventStore":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- queries ---------------------------------------------------------------------------------

    async def _query(self, query: str, parameters: list[dict[str, Any]],
                     partition_key: str | None = None) -> list[dict[str, Any]]:
        if partition_key is None:
            items = self._container.query_items(query, parameters=parameters)
        else:
            items = self._container.query_items(query, parameters=parameters,
                                                partition_key=partition_key)
        return [item async for item in items]

    async def _query_head(self, stream_id: str) -> int:
        with translate_errors(stream_id):
            rows = await self._query(_HEAD_QUERY, [{"name": "@stream", "value": stream_id}],
                                     stream_id)
        head = int(rows[0]["lastVersion"]) if rows else NO_STREAM
        self._heads.set(stream_id, head)
        return head

    async def _load_commits(self, stream_id: str, from_version: int) -> list[dict[str, Any]]:
        with translate_errors(stream_id):
            return await self._query(
                _LOAD_QUERY,
                [{"name": "@stream", "value": stream_id}, {"name": "@from", "value": from_version}],
                stream_id)

    def _remember_head(self, stream_id: str, head: int) -> None:
        known = self._heads.get(stream_id)
        if known is None or head > known:
            self._heads.set(stream_id, head)

    # -- append ----------------------------------------------------------------------------------

    async def append(self, stream_id: str, events: Sequence[NewEvent], expected_version: int
                     ) -> AppendResult:
        if not events:
            raise ValueError(f"stream {stream_id!r}: an append needs at least one event")
        if expected_version < NO_STREAM:
            raise ValueError(f"stream {stream_id!r}: expected version {expected_version} < 0")
        first = expected_version + 1
        item = commit_item(stream_id, first, events)
        size = len(codec.dumps(item).encode())
        if size > self.config.max_commit_bytes:
            raise AppendTooLarge(stream_id, size, self.config.max_commit_bytes)
        self.stats.appends += 1

        head = self._heads.get(stream_id)
        if head != expected_version:
            head = await self._query_head(stream_id)
        if head != expected_version:
            return await self._stale(stream_id, events, expected_version, head)
        if self.config.check_event_ids_across_streams:
            await self._check_ids_unused(stream_id, events)
        try:
            with translate_errors(stream_id):
                try:
                    await self._container.create_item(item)
                except CosmosHttpResponseError as exc:
                    if exc.status_code == 409:
                        head = await self._query_head(stream_id)
                        return await self._stale(stream_id, events, expected_version, head)
                    if exc.status_code == 413:
                        raise AppendTooLarge(stream_id, size, self.config.max_commit_bytes) from exc
                    raise
        except StoreUnavailable:
            # The create may have been applied with its answer lost: the next append must look.
            self._heads.invalidate(stream_id)
            raise
        self.stats.items_written += 1
        last = item["lastVersion"]
        self._remember_head(stream_id, last)
        return AppendResult(stream_id, first, last)

    async def _stale(self, stream_id: str, events: Sequence[NewEvent], expected: int, head: int
                     ) -> AppendResult:
        """The head is not `expected`: an idempotent retry (already stored) or a conflict."""
        last = expected + len(events)
        if expected < head and last <= head:
            stored = [e for c in await self._load_commits(stream_id, expected + 1)
                      for e in recorded_events(c, expected + 1, 0)][: len(events)]
            if [e.event_id for e in stored] == [e.event_id for e in events]:
                return AppendResult(stream_id, expected + 1, last, already_done=True)
        raise WrongExpectedVersion(stream_id, expected, head)

    async def _check_ids_unused(self, stream_id: str, events: Sequence[NewEvent]) -> None:
        with translate_errors(stream_id):
            rows = await self._query(
                _IDS_QUERY, [{"name": "@ids", "value": [e.event_id for e in events]}])
        if rows:
            taken = {row["id"] for row in rows}
            first_taken = next(e.event_id for e in events if e.event_id in taken)
            raise EventIdConflict(stream_id, first_taken)

    async def append_batch(self, requests: Sequence[AppendRequest]) -> list[BatchOutcome]:
        """Each request is its own single-partition append; they run concurrently, at most
        ``config.max_concurrent_appends`` at a time, each with its own outcome."""
        outcomes: list[BatchOutcome | None] = [None] * len(requests)

        async def one(index: int, request: AppendRequest) -> None:
            try:
                async with self._appends_in_flight:
                    result = await self.append(request.stream_id, request.events,
                                               request.expected_version)
            except StoreError as exc:
                outcomes[index] = BatchOutcome(request, error=exc)
            else:
                outcomes[index] = BatchOutcome(request, result=result)

        async with anyio.create_task_group() as tg:
            for index, request in enumerate(requests):
                tg.start_soon(one, index, request)
        return [o for o in outcomes if o is not None]

    # -- reads -----------------------------------------------------------------------------------

    async def load(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]:
        from_version = max(from_version, 1)
        commits = await self._load_commits(stream_id, from_version)
        if not commits:
            if await self._query_head(stream_id) == NO_STREAM:
                raise StreamNotFound(stream_id)
            return []
        out: list[RecordedEvent] = []
        for commit in commits:
            out.extend(recorded_events(commit, from_version, len(out) + 1))
        self._remember_head(stream_id, int(commits[-1]["lastVersion"]))
        return out

    async def head(self, stream_id: str) -> int:
        return await self._query_head(stream_id)

    async def list_streams(self, prefix: str = "") -> list[StreamInfo]:
        with translate_errors(None):
            rows = await self._query(_LIST_QUERY, [{"name": "@prefix", "value": prefix}])
        first: dict[str, dict[str, Any]] = {}
        last: dict[str, dict[str, Any]] = {}
        for row in rows:
            sid = row["streamId"]
            if sid not in first or row["firstVersion"] < first[sid]["firstVersion"]:
                first[sid] = row
            if sid not in last or row["lastVersion"] > last[sid]["lastVersion"]:
                last[sid] = row
        return [
            StreamInfo(
                stream_id=sid,
                head=int(last[sid]["lastVersion"]),
                first_recorded_at=codec.parse_utc(first[sid]["firstRecordedAt"]),
                last_recorded_at=codec.parse_utc(last[sid]["lastRecordedAt"]),
            )
            for sid in sorted(first)
        ]

    async def delete_stream(self, stream_id: str) -> None:
        with translate_errors(stream_id):
            rows = await self._query(_ITEMS_OF_STREAM_QUERY,
                                     [{"name": "@stream", "value": stream_id}], stream_id)
            # Newest commit first, the snapshot last: a reader racing the delete never sees a
            # stream with a hole at its start.
            commits = sorted((r["id"] for r in rows if r.get("kind") == COMMIT), reverse=True)
            others = [r["id"] for r in rows if r.get("kind") != COMMIT]
            self._heads.invalidate(stream_id)
            for item_id in commits + others:
                try:
                    await self._container.delete_item(item_id, partition_key=stream_id)
                except CosmosHttpResponseError as exc:
                    if exc.status_code != 404:  # already gone: someone else deleted it
                        raise
        if not commits:
            raise StreamNotFound(stream_id)

    # -- snapshots -------------------------------------------------------------------------------

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Create or replace the stream's snapshot under its etag; a newer stored one is kept."""
        item = {
            "id": SNAPSHOT_ID,
            "kind": SNAPSHOT,
            "streamId": snapshot.stream_id,
            "version": snapshot.version,
            "schemaVersion": snapshot.schema_version,
            "state": codec.to_json_value(snapshot.state),
            "takenAt": codec.iso_utc(snapshot.taken_at),
        }
        stream_id = snapshot.stream_id
        with translate_errors(stream_id):
            for _ in range(_SNAPSHOT_SAVE_ATTEMPTS):
                current = await self._read_snapshot_item(stream_id)
                try:
                    if current is None:
                        await self._container.create_item(item)
                    elif int(current["version"]) > snapshot.version:
                        return
                    else:
                        await self._container.replace_item(
                            SNAPSHOT_ID, item, etag=current["_etag"],
                            match_condition=MatchConditions.IfNotModified)
                    return
                except CosmosHttpResponseError as exc:
                    if exc.status_code not in (409, 412):  # 409/412: raced another saver
                        raise
        raise StoreUnavailable("snapshot kept changing while saving it", stream_id)

    async def _read_snapshot_item(self, stream_id: str) -> dict[str, Any] | None:
        try:
            return await self._container.read_item(SNAPSHOT_ID, partition_key=stream_id)
        except CosmosHttpResponseError as exc:
            if exc.status_code == 404:
                return None
            raise

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        with translate_errors(stream_id):
            item = await self._read_snapshot_item(stream_id)
        if item is None:
            return None
        return Snapshot(
            stream_id=stream_id,
            version=int(item["version"]),
            schema_version=int(item["schemaVersion"]),
            state=item["state"],
            taken_at=codec.parse_utc(item["takenAt"]),
        )

    # -- queries across streams -----------------------------------------------------------------

    async def query_events(
        self, *, event_type: str | None = None, stream_ids: Sequence[str] | None = None,
        stream_prefix: str | None = None, recorded_from: datetime | None = None,
        recorded_to: datetime | None = None, limit: int = 1000,
    ) -> list[RecordedEvent]:
        """Events matching all given filters, across streams (one query, ``JOIN e IN c.events``).

        ``recorded_from`` is inclusive and ``recorded_to`` exclusive, on the event's recorded-at
        time. Results are ordered by stream, then version.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        where = ["c.kind = 'commit'"]
        params: list[dict[str, Any]] = []
        if event_type is not None:
            where.append("e.type = @type")
            params.append({"name": "@type", "value": event_type})
        if stream_ids is not None:
            where.append("ARRAY_CONTAINS(@streams, c.streamId)")
            params.append({"name": "@streams", "value": list(stream_ids)})
        if stream_prefix is not None:
            where.append("STARTSWITH(c.streamId, @prefix)")
            params.append({"name": "@prefix", "value": stream_prefix})
        # Stored times are ISO-8601 UTC strings whose fraction digits vary, so the query bounds are
        # whole seconds (string order is right at that precision) and the exact bounds apply below.
        if recorded_from is not None:
            where.append("e.metadata.recordedAt >= @from")
            params.append({"name": "@from", "value": codec.iso_utc(recorded_from)[:19]})
        if recorded_to is not None:
            upper = recorded_to.replace(microsecond=0) + timedelta(seconds=1)
            where.append("e.metadata.recordedAt < @to")
            params.append({"name": "@to", "value": codec.iso_utc(upper)[:19]})
        query = ("SELECT c.streamId, e AS event FROM c JOIN e IN c.events WHERE "
                 + " AND ".join(where))
        with translate_errors(None):
            rows = await self._query(query, params)
        out: list[RecordedEvent] = []
        for row in rows:
            raw = row["event"]
            recorded = codec.parse_utc(raw["metadata"]["recordedAt"])
            if recorded_from is not None and recorded < recorded_from:
                continue
            if recorded_to is not None and recorded >= recorded_to:
                continue
            out.append(codec.recorded_from_dict(
                raw, stream_id=row["streamId"], version=int(raw["version"]), position=0))
        out.sort(key=lambda e: (e.stream_id, e.version))
        return [replace(e, position=i + 1) for i, e in enumerate(out[:limit])]

    # -- change feed -----------------------------------------------------------------------------

    async def read_all(self, checkpoint: str | None = None, limit: int = 1000) -> ReadAllPage:
        """Events after ``checkpoint`` from the change feed (see ``gateway.store.cosmos_feed``)."""
        return await self._feed.read(checkpoint, limit)
