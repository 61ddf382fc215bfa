"""One projection runner per store on this box: `gateway project` (following or rebuilding) and the
projections inside `gateway run` each hold an exclusive lock while they run.

Two runners over the same views are at best wasted work, and a rebuild beside a follower is unsafe
(the follower may save a checkpoint the rebuild has just dropped). The lock is an advisory ``flock``
on a small file next to the store's local files (SQLite: next to the event store; Cosmos DB: next to
the outbox), so the kernel releases it when its process dies, however it dies: no stale lease to
expire. It holds the owner's pid, for the error message only. It covers the runners of this box; a
Cosmos DB database projected from several machines is not covered (one config is one gateway).
"""
from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.config.model import SqliteStoreConfig, StoreConfig
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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ViewStoreError(f"cannot use the projection runner lock {path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise ProjectionRunnerBusy(
                f"another projection runner (pid {holder}) is using these views ({path} is locked); "
                "stop it first (`gateway project`, or `gateway run` with [projections] enabled)"
            ) from None
        except OSError as exc:  # e.g. no locks on this file system
            raise ViewStoreError(f"cannot lock the projection runner lock {path}: {exc.strerror}") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the pid is for the message of a refused runner only; the lock is what counts
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


__all__ = ["ProjectionRunnerBusy", "projection_runner", "runner_lock_path"]
