"""Checks of the store's local file before `gateway run` starts polling into it, and the bound on
write failures while it runs: fail fast, fail clear.

A gateway that cannot write its store must not run on as if it could: it would read every meter,
lose every reading and log the same failure at each poll. So `gateway run` refuses to start, with
one ERROR line naming the file and the cause, when the store's local file (SQLite: the event store;
Cosmos DB: the outbox) cannot be created, is not writable, is not an SQLite database or fails
``PRAGMA quick_check``; and it stops the same way when writes keep failing while it runs
(``StoreWriteWatch``). Exit 1 then: systemd restarts it, and the operator sees the line in the
journal. quick_check reads the whole file (a few ms per MiB), so a file above
``QUICK_CHECK_MAX_BYTES`` is not checked at start (an INFO line says so; `gateway backup` checks its
copy); a corruption there still fails the first writes, which the watch turns into a stop.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

from gateway.config.model import SqliteStoreConfig, StoreConfig
from gateway.domain.poll_result import PollSummary
from gateway.store.errors import StoreError

log = logging.getLogger("gateway.run")

QUICK_CHECK_MAX_BYTES = 256 * 1024 * 1024


class StoreUnusable(StoreError):
    """The store's local file cannot be used: the gateway must not run on it."""


def local_store_file(store: StoreConfig) -> Path:
    return store.path if isinstance(store, SqliteStoreConfig) else store.outbox_path


def check_store_file(store: StoreConfig) -> None:
    """Raise ``StoreUnusable`` naming the file and the cause unless the store's local file can be
    created, written and passes a quick integrity check."""
    path = local_store_file(store)
    what = "store" if isinstance(store, SqliteStoreConfig) else "outbox"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreUnusable(f"{what} {path}: cannot create its directory {path.parent}: {exc.strerror}") from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise StoreUnusable(f"{what} {path}: its directory {path.parent} is not writable")
    if not path.exists():
        return  # created on opening
    if not path.is_file():
        raise StoreUnusable(f"{what} {path}: not a file")
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists() and not os.access(file, os.R_OK | os.W_OK):
            raise StoreUnusable(f"{what} {path}: {file} is not writable (read-only file or file system)")
    size = path.stat().st_size
    if size > QUICK_CHECK_MAX_BYTES:
        log.info("%s %s is %d MiB: integrity not checked at start", what, path, size // (1024 * 1024))
        return
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5.0)
        try:
            problems = [" ".join(str(row[0]).split()) for row in conn.execute("PRAGMA quick_check(1)")]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreUnusable(f"{what} {path}: cannot open it: {exc}") from None
    if problems != ["ok"]:
        raise StoreUnusable(f"{what} {path}: damaged (PRAGMA quick_check: {problems[0]}); "
                            "restore it from a backup (README: Stores)")


class StoreWriteWatch:
    """Counts polls whose results could not be written to the local store (event store, outbox or
    health table), and raises ``StoreUnusable`` once ``limit`` polls in a row over at least
    ``grace_s`` seconds have failed so. A poll that wrote resets it. A full outbox is not a failure
    here: it is bounded on purpose and raises its own alarm."""

    def __init__(self, limit: int = 5, grace_s: float = 10.0, clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        self.limit = limit
        self.grace_s = grace_s
        self._clock = clock
        self.failed = 0
        self._since: float | None = None

    def __call__(self, summary: PollSummary) -> None:
        cause = _write_failure(summary)
        if cause is None:
            self.failed, self._since = 0, None
            return
        now = self._clock()
        if self._since is None:
            self._since = now
        self.failed += 1
        if self.failed >= self.limit and now - self._since >= self.grace_s:
            raise StoreUnusable(f"the store cannot be written: {self.failed} polls in a row over "
                                f"{now - self._since:.0f} s failed, last: {cause}")


WRITE_FAILURE_KINDS = frozenset({"HealthError", "StoreError", "StoreUnavailable"})


def _write_failure(summary: PollSummary) -> str | None:
    if summary.store_error is not None and not summary.store_error.startswith("StoreFull"):
        return summary.store_error
    for error in summary.errors:
        if error.kind in WRITE_FAILURE_KINDS:
            return error.message
    return None


__all__ = ["StoreUnusable", "StoreWriteWatch", "check_store_file", "local_store_file"]
