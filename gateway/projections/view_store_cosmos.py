"""``ViewStore`` on a Cosmos DB container of views: one item per view document, saved under its etag.

Each fleet has its own views container: by default ``<events container>-views`` (``[store]
views_container`` names another), so fleets whose events containers share a database never share
views or checkpoints. A checkpoint records the events container whose change feed it is a position
of (``eventsContainer``); a views container whose checkpoints are another events container's is
refused with ``ViewsOfAnotherStore`` instead of being read (or overwritten) as this fleet's.
Checkpoints written before they recorded it are taken as this fleet's.

Partition key ``/partition``: a document's partition is its meter id, so a meter's views share a
logical partition and no document is written by the whole fleet (the fleet overview is one item
per meter, added up when read). Item ids are ``<view>:<key>`` with '/' turned into ':' (Cosmos
forbids '/' in ids; meter ids contain no ':', so ids stay unique). Checkpoints are items
``checkpoint:<projection>`` in the partition ``~checkpoints``.

Optimistic concurrency is Cosmos's own: a new document is created (409 if another engine created
it first), an existing one is replaced with ``If-Match: <etag>`` (412 if it changed since it was
read). Both come back to the engine as conflicts, which it re-reads and re-applies.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import anyio
from azure.core import MatchConditions
from azure.core.exceptions import AzureError
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient
from azure.cosmos.exceptions import CosmosHttpResponseError

from gateway.projections.view_store import Checkpoint, ViewDoc, ViewStoreError, ViewStoreUnavailable
from gateway.store import codec
from gateway.store.cosmos_client import CosmosConfig, CosmosStoreStats, build_client

PARTITION_KEY_PATH = "/partition"
CHECKPOINT_PARTITION = "~checkpoints"
VIEWS_SUFFIX = "-views"
_CONFLICT, _PRECONDITION_FAILED, _NOT_FOUND = 409, 412, 404
# Documents are only ever read by id or by (view, partition, key): the bodies need no index.
INDEXING_POLICY: dict[str, Any] = {
    "indexingMode": "consistent",
    "includedPaths": [{"path": "/view/?"}, {"path": "/key/?"}, {"path": "/partition/?"}],
    "excludedPaths": [{"path": "/*"}],
}


def default_container(events_container: str) -> str:
    """The views container of a fleet whose events are in ``events_container``."""
    return f"{events_container}{VIEWS_SUFFIX}"


class ViewsOfAnotherStore(ViewStoreError):
    """The views container holds the checkpoints of another events container (another fleet)."""

    def __init__(self, views_container: str, owner: str, events_container: str, projection: str) -> None:
        self.views_container = views_container
        self.owner = owner
        self.events_container = events_container
        super().__init__(
            f"Cosmos DB views container {views_container!r} holds the views of events container "
            f"{owner!r} (checkpoint of {projection}), not of {events_container!r}: give this fleet a "
            f"views container of its own ([store] views_container, default "
            f"{default_container(events_container)!r})"
        )


def item_id(view: str, key: str) -> str:
    return f"{view}:{key}".replace("/", ":")


@contextmanager
def _translate() -> Iterator[None]:
    try:
        yield
    except CosmosHttpResponseError as exc:
        if exc.status_code in (408, 429, 449, 500, 502, 503, 504):
            raise ViewStoreUnavailable(f"Cosmos DB views answered {exc.status_code}") from exc
        raise ViewStoreError(f"Cosmos DB views answered {exc.status_code}") from exc
    except (AzureError, OSError, TimeoutError) as exc:
        raise ViewStoreUnavailable(f"Cosmos DB views unreachable ({type(exc).__name__})") from exc


def _doc(item: Mapping[str, Any]) -> ViewDoc:
    return ViewDoc(view=item["view"], key=item["key"], partition=item["partition"],
                   body=item["body"], applied=item["applied"], version=item["_etag"])


class CosmosViewStore:
    """Views and checkpoints in a Cosmos DB container. Create with ``await CosmosViewStore.open(...)``."""

    def __init__(self, client: CosmosClient, container: ContainerProxy, stats: CosmosStoreStats,
                 max_concurrent_requests: int, *, events_container: str) -> None:
        self._client = client
        self._container = container
        self.container_name = container.id
        self.events_container = events_container  # whose change feed the checkpoints are positions of
        self.stats = stats
        # Bounds the requests one save/load has in flight, so a large page cannot flood the account.
        self._requests = anyio.CapacityLimiter(max_concurrent_requests)

    @classmethod
    async def open(cls, config: CosmosConfig, *, container: str | None = None,
                   create_if_missing: bool = False, max_concurrent_requests: int = 16
                   ) -> CosmosViewStore:
        """Views of the events in ``config.container``, in ``container`` (default
        ``default_container(config.container)``) of ``config.database``."""
        if container is None:
            container = default_container(config.container)
        if container == config.container:
            raise ViewStoreError(f"the views cannot share the events container {container!r}")
        stats = CosmosStoreStats()
        client = build_client(config, stats)
        try:
            with _translate():
                if create_if_missing:
                    database = await client.create_database_if_not_exists(config.database)
                    proxy = await database.create_container_if_not_exists(
                        container, partition_key=PartitionKey(path=PARTITION_KEY_PATH),
                        indexing_policy=INDEXING_POLICY)
                else:
                    proxy = client.get_database_client(config.database).get_container_client(container)
        except BaseException:
            await client.close()
            raise
        return cls(client, proxy, stats, max_concurrent_requests, events_container=config.container)

    async def aclose(self) -> None:
        await self._client.close()

    async def _each(self, items: Sequence[Any], one: Any) -> None:
        async with anyio.create_task_group() as tg:
            for item in items:
                tg.start_soon(one, item)

    async def get_many(self, view: str, keys: Mapping[str, str]) -> dict[str, ViewDoc]:
        found: dict[str, ViewDoc] = {}

        async def read(key: str) -> None:
            async with self._requests:
                with _translate():
                    try:
                        item = await self._container.read_item(item_id(view, key), keys[key])
                    except CosmosHttpResponseError as exc:
                        if exc.status_code == _NOT_FOUND:
                            return
                        raise
            found[key] = _doc(item)

        await self._each(list(keys), read)
        return found

    async def save_many(self, docs: Sequence[ViewDoc]) -> set[str]:
        conflicts: set[str] = set()
        now = codec.iso_utc(datetime.now(timezone.utc))

        async def save(doc: ViewDoc) -> None:
            item = {"id": item_id(doc.view, doc.key), "view": doc.view, "key": doc.key,
                    "partition": doc.partition, "body": codec.to_json_value(doc.body),
                    "applied": dict(doc.applied), "updatedAt": now}
            async with self._requests:
                with _translate():
                    try:
                        if doc.version is None:
                            await self._container.create_item(item)
                        else:
                            await self._container.replace_item(
                                item["id"], item, etag=doc.version,
                                match_condition=MatchConditions.IfNotModified)
                    except CosmosHttpResponseError as exc:
                        if exc.status_code not in (_CONFLICT, _PRECONDITION_FAILED, _NOT_FOUND):
                            raise
                        conflicts.add(doc.key)  # 404: dropped meanwhile; re-read decides

        await self._each(list(docs), save)
        return conflicts

    async def query(self, view: str, partition: str | None = None, key_from: str | None = None,
                    key_to: str | None = None) -> list[ViewDoc]:
        sql = "SELECT * FROM c WHERE c.view = @view"
        params: list[dict[str, Any]] = [{"name": "@view", "value": view}]
        if key_from is not None:
            sql += " AND c.key >= @from"
            params.append({"name": "@from", "value": key_from})
        if key_to is not None:
            sql += " AND c.key <= @to"
            params.append({"name": "@to", "value": key_to})
        with _translate():
            try:
                if partition is None:
                    items = [i async for i in self._container.query_items(sql, parameters=params)]
                else:
                    # The filter repeats the partition key the request is scoped to: the query then
                    # says by itself which partition it reads.
                    sql += " AND c.partition = @partition"
                    params.append({"name": "@partition", "value": partition})
                    items = [i async for i in self._container.query_items(
                        sql, parameters=params, partition_key=partition)]
            except CosmosHttpResponseError as exc:
                if exc.status_code == _NOT_FOUND:  # a query finds no items, it does not 404
                    raise ViewStoreError(
                        f"no Cosmos DB views container {self.container_name!r} (run `gateway project` "
                        f"first)") from exc
                raise
        return sorted((_doc(i) for i in items), key=lambda d: d.key)

    async def load_checkpoint(self, projection: str) -> Checkpoint:
        with _translate():
            try:
                item = await self._container.read_item(f"checkpoint:{projection}", CHECKPOINT_PARTITION)
            except CosmosHttpResponseError as exc:
                if exc.status_code == _NOT_FOUND:
                    return Checkpoint(projection=projection, position=None)
                raise
        owner = item.get("eventsContainer")
        if owner is not None and owner != self.events_container:
            raise ViewsOfAnotherStore(self.container_name, owner, self.events_container, projection)
        return Checkpoint(projection=projection, position=item["position"],
                          events_seen=int(item["eventsSeen"]),
                          updated_at=codec.parse_utc(item["updatedAt"]))

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        item = {"id": f"checkpoint:{checkpoint.projection}", "partition": CHECKPOINT_PARTITION,
                "view": "~checkpoint", "key": checkpoint.projection, "position": checkpoint.position,
                "eventsContainer": self.events_container,
                "eventsSeen": checkpoint.events_seen,
                "updatedAt": codec.iso_utc(checkpoint.updated_at or datetime.now(timezone.utc))}
        with _translate():
            await self._container.upsert_item(item)

    async def drop(self, projection: str, view: str) -> None:
        await self.load_checkpoint(projection)  # never another fleet's views
        docs = await self.query(view)

        async def delete(doc: ViewDoc) -> None:
            async with self._requests:
                with _translate():
                    try:
                        await self._container.delete_item(item_id(doc.view, doc.key), doc.partition)
                    except CosmosHttpResponseError as exc:
                        if exc.status_code != _NOT_FOUND:
                            raise

        await self._each(docs, delete)
        with _translate():
            try:
                await self._container.delete_item(f"checkpoint:{projection}", CHECKPOINT_PARTITION)
            except CosmosHttpResponseError as exc:
                if exc.status_code != _NOT_FOUND:
                    raise
