"""One `gateway run` per store on this box: the gateway holds an exclusive lock for its store while
it runs, so a second one (a second unit, a forgotten shell) is refused at once, naming the holder's
pid, instead of polling every meter twice and racing the first for the stream versions.

The lock is a lock file next to the store's local files (gateway.store.lock_file: an advisory
``flock``, released however its holder dies): ``<store>.run.lock`` for SQLite, ``<outbox>.run.lock``
for Cosmos DB. Only `gateway run` takes it. `gateway poll` beside a running gateway stays allowed:
a field engineer's one-off poll of one meter goes through the same store with optimistic concurrency
(a version clash is reconciled by the writer, gateway.store.reconcile), and the health table takes both processes' results.
The projection runner has its own lock (gateway.projections.runner_lock).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.config.model import SqliteStoreConfig, StoreConfig
from gateway.store.errors import StoreError
from gateway.store.lock_file import exclusive_lock


class GatewayAlreadyRunning(StoreError):
    """Another `gateway run` holds this store."""


def run_lock_path(store: StoreConfig) -> Path:
    """The lock file of `gateway run` for ``store``."""
    local = store.path if isinstance(store, SqliteStoreConfig) else store.outbox_path
    return local.with_name(local.name + ".run.lock")


@contextmanager
def gateway_run_lock(store: StoreConfig) -> Iterator[None]:
    """Hold the run lock of ``store`` for the block, or raise ``GatewayAlreadyRunning`` at once
    (``StoreError`` if the lock file cannot be created or locked)."""
    path = run_lock_path(store)

    def busy(holder: str) -> Exception:
        return GatewayAlreadyRunning(
            f"another gateway (pid {holder}) is running on this store ({path} is locked); stop it first")

    with exclusive_lock(path, busy=busy, unusable=StoreError):
        yield


__all__ = ["GatewayAlreadyRunning", "gateway_run_lock", "run_lock_path"]
