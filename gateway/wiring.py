"""The composition root: the one place that picks backends for a fleet's ``[store]``.

``open_poller`` (the polling side), ``open_views`` (the read side: event store and view store) and
``open_assignments`` (personal data: key store and unique index) each build SQLite or Cosmos DB
objects from the config; ``cosmos_config_for`` is the one builder of a Cosmos client configuration
from it. Nothing else in the package chooses a backend.

``open_poller(fleet, ...)`` wires a ``gateway.polling.poller.Poller`` to its backend. SQLite (the default,
or ``db_path``): the event store file, the batched writer as the sink, the health table in the same
file and the HLS invocation counters next to it. Cosmos DB: store-and-forward through the local
outbox file (which also holds the health table), the outbox view as what the poller reads from, and
optionally a background forwarder draining the outbox to Cosmos while the poller is open. The
poller itself knows none of this: it talks to a ``MeterHistory`` (``gateway.history.meter_history``) and a
``HealthStore``.
"""
from __future__ import annotations

import logging
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, AsyncIterator, Callable, Mapping

import anyio

from drivers.session import FileInvocationCounterStore, InvocationCounterStore
from gateway.config.model import CosmosStoreConfig, FleetConfig, SqliteStoreConfig, StoreConfig
from gateway.history.meter_history import embedded_history, forwarded_history
from gateway.history.outbox import Outbox
from gateway.history.outbox_forwarder import Forwarder
from gateway.history.sinks import OutboxSink, OutboxView, describe_outbox
from gateway.history.writer import BatchedWriter
from gateway.personal.assignments import Assignments
from gateway.personal.keys import KeyStore, SqliteKeyStore, key_store_path_for
from gateway.personal.unique_index import UniqueIndex, unique_index_path_for
from gateway.polling.health import HealthStore
from gateway.polling.meter_reading import PollerSettings
from gateway.polling.poller import Poller, utc_now
from gateway.projections import SqliteViewStore, ViewStore, ViewsUnavailable, views_path
from gateway.store.base import EventStore
from gateway.store.sqlite import SqliteEventStore

if TYPE_CHECKING:
    from gateway.store.cosmos_client import CosmosConfig

log = logging.getLogger(__name__)


class UnsupportedStore(Exception):
    """The fleet's store kind cannot be polled into by this build."""


def counters_directory(db_path: Path) -> Path:
    """Where the client invocation counters of HLS meters live: next to the store file."""
    return db_path.with_name(db_path.name + ".invocation-counters")


@dataclass(frozen=True, slots=True)
class ForwarderSettings:
    """How ``open_poller`` forwards the outbox to Cosmos DB (see ``gateway.history.outbox_forwarder``)."""

    run: bool = True  # a background forwarder while the poller is open (gateway run); False: drain()
    store_timeout_s: float = 30.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 60.0
    idle_wait_s: float = 1.0


@asynccontextmanager
async def open_poller(
    fleet: FleetConfig,
    *,
    db_path: Path | None = None,
    now: Callable[[], datetime] = utc_now,
    settings: PollerSettings | None = None,
    counters: InvocationCounterStore | None = None,
    environ: Mapping[str, str] | None = None,
    forwarding: ForwarderSettings | None = None,
) -> AsyncIterator[Poller]:
    """A ``Poller`` with its store, health table and event sink; leaving flushes the sink.

    SQLite (or ``db_path``, which overrides the fleet's store): the batched writer on the store
    file, health in the same file. Cosmos DB: store-and-forward through the outbox file
    (``outbox_path``), which also holds the health table and has the HLS invocation counters next
    to it; with ``forwarding.run`` a forwarder drains the outbox in the background while the poller
    is open and is stopped on leaving (what is pending stays in the outbox file). The far store is
    not contacted on opening: the gateway starts and polls while Cosmos is out of reach.
    """
    if db_path is None and isinstance(fleet.store, CosmosStoreConfig):
        async with _open_cosmos_poller(
            fleet, fleet.store, now=now, settings=settings, counters=counters, environ=environ,
            forwarding=forwarding or ForwarderSettings(),
        ) as poller:
            yield poller
        return
    if db_path is None:
        assert isinstance(fleet.store, SqliteStoreConfig)
        db_path = fleet.store.path
    db_path.parent.mkdir(parents=True, exist_ok=True)
    store = await SqliteEventStore.open(db_path)
    try:
        health = await HealthStore.open(db_path)
        try:
            async with BatchedWriter(store) as writer:
                yield Poller(
                    fleet, embedded_history(store, writer), health,
                    counters=counters or FileInvocationCounterStore(counters_directory(db_path)),
                    settings=settings, now=now, environ=environ,
                )
        finally:
            await health.aclose()
    finally:
        await store.aclose()


def cosmos_config_for(store: CosmosStoreConfig) -> CosmosConfig:
    """The Cosmos client configuration of a fleet's ``[store]`` (the key stays in its variable)."""
    from gateway.store.cosmos_client import CosmosConfig  # the SDK only where Cosmos is used

    if store.key.kind != "env":
        raise UnsupportedStore("the Cosmos DB key must be given by environment variable")
    return CosmosConfig(endpoint=store.endpoint, database=store.database, container=store.container,
                        key_env=store.key.target, verify_tls=store.verify_tls)


@asynccontextmanager
async def _open_cosmos_poller(
    fleet: FleetConfig,
    config: CosmosStoreConfig,
    *,
    now: Callable[[], datetime],
    settings: PollerSettings | None,
    counters: InvocationCounterStore | None,
    environ: Mapping[str, str] | None,
    forwarding: ForwarderSettings,
) -> AsyncIterator[Poller]:
    from gateway.store.cosmos import CosmosEventStore  # the SDK only where Cosmos is used

    azure_log = logging.getLogger("azure")
    if azure_log.level == logging.NOTSET:
        # The SDK logs every HTTP request and response at INFO: thousands of lines per hour.
        azure_log.setLevel(logging.WARNING)
    outbox_path = config.outbox_path
    outbox_path.parent.mkdir(parents=True, exist_ok=True)
    far = await CosmosEventStore.open(cosmos_config_for(config))
    try:
        outbox = await Outbox.open(outbox_path, config.outbox_max_bytes)
        try:
            health = await HealthStore.open(outbox_path)
            try:
                view = OutboxView(far, outbox)
                forwarder = Forwarder(
                    outbox, far, store_timeout_s=forwarding.store_timeout_s,
                    backoff_initial_s=forwarding.backoff_initial_s, backoff_max_s=forwarding.backoff_max_s,
                    idle_wait_s=forwarding.idle_wait_s,
                )
                poller = Poller(
                    fleet, forwarded_history(view, OutboxSink(outbox, view, forwarder)), health,
                    counters=counters or FileInvocationCounterStore(counters_directory(outbox_path)),
                    settings=settings, now=now, environ=environ,
                )
                if not forwarding.run:
                    yield poller
                    return
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_supervised, forwarder, forwarding.backoff_max_s, name="outbox forwarder")
                    try:
                        yield poller
                    finally:
                        # Pending events stay in the outbox file for the next start.
                        tg.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    log.info("outbox forwarder stopped: %s", describe_outbox(await outbox.state()))
            finally:
                await health.aclose()
        finally:
            await outbox.aclose()
    finally:
        await far.aclose()


async def _supervised(forwarder: Forwarder, backoff_max_s: float) -> None:
    """Run the forwarder until cancelled, restarting it after any failure: the events are safe in the
    outbox, and a forwarder bug or an unmapped SDK error must not stop the polls with it."""
    backoff = 1.0
    while True:
        try:
            await forwarder.run()
        except Exception:
            log.exception("outbox forwarder failed; restarting in %.1f s (events stay in the outbox)", backoff)
        else:
            backoff = 1.0
        await anyio.sleep(backoff)
        backoff = min(backoff * 2, backoff_max_s)


# -- personal data -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PersonalDataPaths:
    """The files of personal-data handling beside a SQLite event store."""

    store: Path
    keys: Path
    unique_index: Path

    @classmethod
    def next_to(cls, store_path: Path) -> PersonalDataPaths:
        return cls(store_path, key_store_path_for(store_path), unique_index_path_for(store_path))


@asynccontextmanager
async def open_assignments(fleet: FleetConfig) -> AsyncIterator[Assignments]:
    """``Assignments`` on the fleet's store. SQLite: key store and unique index are files beside the
    store file. Cosmos DB: keys in the ``keys`` container of the store's database (created if
    missing), the unique index beside the outbox file (one fleet = one gateway's config)."""
    async with AsyncExitStack() as stack:
        store: EventStore
        keys: KeyStore
        if isinstance(fleet.store, SqliteStoreConfig):
            paths = PersonalDataPaths.next_to(fleet.store.path)
            paths.store.parent.mkdir(parents=True, exist_ok=True)
            sqlite_store = await SqliteEventStore.open(paths.store)
            stack.push_async_callback(sqlite_store.aclose)
            sqlite_keys = await SqliteKeyStore.open(paths.keys)
            stack.push_async_callback(sqlite_keys.aclose)
            store, keys, index_path = sqlite_store, sqlite_keys, paths.unique_index
        else:
            # Imported here: the SQLite-only box never loads the Cosmos SDK.
            from gateway.personal.keys_cosmos import CosmosKeyStore
            from gateway.store.cosmos import CosmosEventStore

            config = cosmos_config_for(fleet.store)
            cosmos_store = await CosmosEventStore.open(config)
            stack.push_async_callback(cosmos_store.aclose)
            cosmos_keys = await CosmosKeyStore.open(config, create_if_missing=True)
            stack.push_async_callback(cosmos_keys.aclose)
            fleet.store.outbox_path.parent.mkdir(parents=True, exist_ok=True)
            store, keys, index_path = cosmos_store, cosmos_keys, unique_index_path_for(fleet.store.outbox_path)
        index = await UniqueIndex.open(index_path)
        stack.push_async_callback(index.aclose)
        yield Assignments(store, keys, index, fleet.gateway_id)


# -- views ---------------------------------------------------------------------------------------


@asynccontextmanager
async def open_views(store: StoreConfig, *, create: bool = False
                     ) -> AsyncIterator[tuple[EventStore | None, ViewStore]]:
    """The event store (None for SQLite when it does not exist) and its views. Only ``create``
    makes views that do not exist yet: reading commands report them missing instead."""
    events: EventStore | None = None
    if isinstance(store, SqliteStoreConfig):
        path = views_path(store.path)
        if not create and not path.is_file():
            raise ViewsUnavailable(f"no views at {path} (run `gateway project` first)")
        views: ViewStore = await SqliteViewStore.open(path)
        try:
            if create or store.path.is_file():
                events = await SqliteEventStore.open(store.path)
        except BaseException:
            await views.aclose()
            raise
    else:
        from gateway.projections.view_store_cosmos import CosmosViewStore
        from gateway.store.cosmos import CosmosEventStore

        try:
            cosmos = cosmos_config_for(store)
        except UnsupportedStore as exc:
            raise ViewsUnavailable(str(exc)) from None
        views = await CosmosViewStore.open(cosmos, container=store.views_container_name,
                                           create_if_missing=create)
        try:
            events = await CosmosEventStore.open(cosmos)
        except BaseException:
            await views.aclose()
            raise
    try:
        yield events, views
    finally:
        # Shielded: the caller may be leaving because it was cancelled (gateway run restarting its
        # projections after a reload), and an unshielded close would stop at its first await,
        # leaving both connections open.
        with anyio.CancelScope(shield=True):
            await views.aclose()
            if events is not None:
                await events.aclose()


__all__ = [
    "ForwarderSettings", "PersonalDataPaths", "UnsupportedStore", "cosmos_config_for", "counters_directory",
    "open_assignments", "open_poller", "open_views",
]
