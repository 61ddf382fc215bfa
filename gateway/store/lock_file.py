"""Exclusive, crash-safe lock files for the long-running processes of one store on this box.

Each lock is an advisory ``flock`` on a small file next to the store's local files (SQLite: next to
the event store; Cosmos DB: next to the outbox), so the kernel releases it when its process dies,
however it dies: no stale lease to expire. The file holds the owner's pid, for the refusal message
only. Two locks use it: the projection runner (gateway.projections.runner_lock) and the gateway
itself (gateway.commands._run_lock, one `gateway run` per store).
"""
from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive_lock(
    path: Path,
    *,
    busy: Callable[[str], Exception],
    unusable: Callable[[str], Exception],
) -> Iterator[None]:
    """Hold the lock at ``path`` (created if missing) for the block, or raise ``busy(holder_pid)`` at
    once if another holder has it, ``unusable(reason)`` if the file cannot be created or locked.
    Not re-entrant within a process: a second holder in the same process is refused too (flock
    locks belong to open files)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise unusable(f"cannot use the lock file {path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise busy(holder) from None
        except OSError as exc:  # e.g. no locks on this file system
            raise unusable(f"cannot lock the lock file {path}: {exc.strerror}") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the pid is for the message of a refused holder only; the lock is what counts
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


__all__ = ["exclusive_lock"]
