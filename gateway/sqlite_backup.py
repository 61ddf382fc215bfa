"""Online backup of one of the box's SQLite files (`gateway backup`), taken while the gateway runs.

SQLite's backup API copies the file as of one moment: the copy is taken in a single step under a read
transaction, so it is consistent even while `gateway run` appends (in WAL mode a reader does not block
the writer). The copy is written under a temporary name, switched to the rollback journal (one
self-contained file, no ``-wal`` beside it), checked with ``PRAGMA integrity_check``, synced, and only
then linked to its final name, which must not exist: a backup never overwrites anything, and a backup
that failed half-way never carries the name of a good one.
"""
from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path


class BackupError(Exception):
    """The backup could not be made; nothing was left under the target name."""


@dataclass(frozen=True, slots=True)
class BackupCopy:
    source: Path
    target: Path
    bytes: int


def backup_file(source: Path, target: Path, *, busy_timeout_s: float = 30.0) -> BackupCopy:
    """Copy the SQLite database ``source`` to the new file ``target`` (blocking; run it in a worker
    thread from async code)."""
    if not source.is_file():
        raise BackupError(f"no database at {source}")
    if target.exists():
        raise BackupError(f"{target} exists already: a backup never overwrites a file")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        _copy(source, partial, busy_timeout_s)
        try:
            # A hard link fails if the target appeared meanwhile, where a rename would replace it.
            os.link(partial, target)
        except FileExistsError:
            raise BackupError(f"{target} appeared while the backup was made; not overwritten") from None
        _sync_directory(target.parent)
    finally:
        partial.unlink(missing_ok=True)
    return BackupCopy(source=source, target=target, bytes=target.stat().st_size)


def _copy(source: Path, partial: Path, busy_timeout_s: float) -> None:
    try:
        src = sqlite3.connect(source, timeout=busy_timeout_s)
        try:
            dst = sqlite3.connect(partial)
            try:
                src.backup(dst)  # pages=-1: one step, one consistent snapshot of the source
                dst.execute("PRAGMA journal_mode = DELETE")
                problems = [row[0] for row in dst.execute("PRAGMA integrity_check")]
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as exc:
        raise BackupError(f"cannot back up {source}: {exc}") from exc
    if problems != ["ok"]:
        raise BackupError(f"the copy of {source} fails its integrity check: {'; '.join(problems[:5])}")
    os.chmod(partial, 0o600)  # the history of the fleet, maybe personal data: the owner's only
    fd = os.open(partial, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["BackupCopy", "BackupError", "backup_file"]
