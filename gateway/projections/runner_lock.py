"""One projection runner per store on this box: `gateway project` (following or rebuilding) and the
projections inside `gateway run` each hold an exclusive lock while they run.

Two runners over the same views are at best wasted work, and a rebuild beside a follower is unsafe
(the follower may save a checkpoint the rebuild has just dropped). The lock is a lock file next to the
store's local files (gateway.store.lock_file: an advisory ``flock``, released however its holder
dies). It covers the runners of this box; a
Cosmos DB database projected from several machines is not covered (one config is one gateway).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.config.model import SqliteStoreConfig, StoreConfig
from gateway.store.lock_file import exclusive_lock
from gateway.projections.view_store import ViewStoreError, views_path


class ProjectionRunnerBusy(ViewStoreError):
    """Another projection runner holds the views of this store; try again once it has stopped."""


def runner_lock_path(store: StoreConfig) -> Path:
    """The lock file of the projection runner of ``store``."""
    if isinstance(store, SqliteStoreConfig):
        views = views_path(store.path)
        return views.with_name(views.name + ".lock")
    return store.outbox_path.with_name(store.outbox_path.name + ".projections.lock")


@contextmanager
def projection_runner(path: Path) -> Iterator[None]:
    """Hold the runner lock at ``path`` (created if missing) for the block, or raise
    ``ProjectionRunnerBusy`` at once if another process holds it. Not re-entrant within a process:
    a second holder in the same process is refused too (flock locks belong to open files)."""

    def busy(holder: str) -> Exception:
        return ProjectionRunnerBusy(
            f"another projection runner (pid {holder}) is using these views ({path} is locked); "
            "stop it first (`gateway project`, or `gateway run` with [projections] enabled)"
        )

    def unusable(reason: str) -> Exception:
        return ViewStoreError(f"projection runner: {reason}")

    with exclusive_lock(path, busy=busy, unusable=unusable):
        yield


__all__ = ["ProjectionRunnerBusy", "projection_runner", "runner_lock_path"]
