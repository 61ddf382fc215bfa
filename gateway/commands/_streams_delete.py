"""`gateway streams delete STREAM --yes`: remove one stream completely from the local SQLite store.

For the cases where erasing a whole stream is right (a test meter, a stream written under a wrong id,
an assignment stream that must not even keep its ciphertext). The stream, its events and its
snapshot go (``EventStore.delete_stream``); then the file is compacted (VACUUM, then a truncating WAL
checkpoint) so the deleted rows leave no copy in free pages of the database file or in its -wal file.
Compaction rewrites the whole file: on a large store it takes a while (``--no-compact`` skips it), and
while another process (a running gateway) has the store open the WAL cannot be truncated; the command
then says so and the WAL is cleared when the last connection closes.

Not auto-discovered (leading underscore): ``gateway/commands/streams.py`` attaches it with
``register_delete(commands)``, next to ``list`` and ``show``.
Exit codes: 0 deleted, 1 no such stream / store trouble, 2 not confirmed with --yes.
"""
from __future__ import annotations

import argparse
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread

from gateway.config.settings import STORE_ENV_VAR, store_path
from gateway.store.errors import StoreError, StreamNotFound
from gateway.store.sqlite import SqliteEventStore


@dataclass(frozen=True, slots=True)
class Compaction:
    wal_truncated: bool  # False: another connection kept the WAL from being truncated


def register_delete(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("delete", help="remove one stream completely (events and snapshot)")
    parser.add_argument("stream", metavar="STREAM", help="stream id, e.g. Assignment:<id>")
    parser.add_argument(
        "--db", help=f"SQLite event store file (default: ${STORE_ENV_VAR}, else ./var/gateway.db)"
    )
    parser.add_argument("--yes", action="store_true", help="confirm: the stream cannot be restored")
    parser.add_argument("--no-compact", action="store_true",
                        help="skip rewriting the file (deleted bytes may then remain in free pages)")
    parser.set_defaults(func=run_delete)


def run_delete(args: argparse.Namespace) -> int:
    if not args.yes:
        print(f"gateway streams delete: deleting {args.stream!r} cannot be undone; add --yes",
              file=sys.stderr)
        return 2
    path = store_path(args.db)
    if not path.is_file():
        print(f"gateway streams delete: no event store at {path}", file=sys.stderr)
        return 1
    try:
        compaction = anyio.run(_delete, path, args.stream, not args.no_compact)
    except StreamNotFound:
        print(f"gateway streams delete: no stream {args.stream!r} in {path}", file=sys.stderr)
        return 1
    except (StoreError, sqlite3.Error) as exc:
        print(f"gateway streams delete: {exc}", file=sys.stderr)
        return 1
    print(f"stream {args.stream} deleted from {path}")
    if compaction is not None and not compaction.wal_truncated:
        print("gateway streams delete: the store is open elsewhere; its WAL is cleared when that "
              "process closes it", file=sys.stderr)
    return 0


async def _delete(path: Path, stream_id: str, compact: bool) -> Compaction | None:
    store = await SqliteEventStore.open(path)
    try:
        await store.delete_stream(stream_id)
    finally:
        await store.aclose()
    if not compact:
        return None
    return await anyio.to_thread.run_sync(compact_sqlite_store, path)


def compact_sqlite_store(path: Path) -> Compaction:
    """Rewrite the store file from its live rows and truncate its WAL (blocking; run in a thread)."""
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    try:
        conn.execute("VACUUM")
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return Compaction(wal_truncated=busy == 0)
    finally:
        conn.close()
