"""Online backup of one of the box's SQLite files (`gateway backup`), taken while the gateway runs.

SQLite's backup API copies the file as of one moment: the copy is taken in a single step under a read
transaction, so it is consistent even while `gateway run` appends (in WAL mode a reader does not block
the writer). The copy is written under a temporary name (created 0600 before any byte is written),
switched to the rollback journal (one self-contained file, no ``-wal`` beside it), checked with
``PRAGMA integrity_check``, synced, and only then given its final name, which must not exist: a backup
never overwrites anything, and a backup that failed half-way never carries the name of a good one.
The final name is a hard link, or on a file system without them (FAT/exFAT media, some network
shares) a byte copy into a file created exclusively.
"""
from __future__ import annotations

import errno
import os
import shutil
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
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # The history of the fleet, maybe personal data: the owner's only, from the first byte.
        os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError as exc:
        raise BackupError(f"cannot create {partial}: {exc.strerror}") from None
    try:
        _copy(source, partial, busy_timeout_s)
        _publish(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return BackupCopy(source=source, target=target, bytes=target.stat().st_size)


def _publish(partial: Path, target: Path) -> None:
    """Give the finished copy its final name, never replacing a file that appeared meanwhile."""
    try:
        try:
            os.link(partial, target)  # a rename would replace a target that appeared meanwhile
        except FileExistsError:
            raise BackupError(f"{target} appeared while the backup was made; not overwritten") from None
        except OSError:  # no hard links on this file system
            with partial.open("rb") as copy, open(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600),
                                                  "wb") as out:
                shutil.copyfileobj(copy, out)
                out.flush()
                os.fsync(out.fileno())
        _sync_directory(target.parent)
    except BackupError:
        raise
    except OSError as exc:
        if not isinstance(exc, FileExistsError):
            target.unlink(missing_ok=True)
        raise BackupError(f"cannot write {target}: {exc.strerror}") from None


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
    fd = os.open(partial, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):  # file systems that cannot sync a directory
            raise
    finally:
        os.close(fd)


__all__ = ["BackupCopy", "BackupError", "backup_file"]
