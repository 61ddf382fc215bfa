"""`gateway backup --to FILE [--db FILE] [--with-keys] [--json]`: an online backup of the SQLite store.

On a box without Cosmos DB the event store file is the only copy of the fleet's history. This copies
it while `gateway run` goes on (gateway.store.sqlite_backup: one consistent snapshot, integrity-checked,
never overwriting) and reports what the copy holds. The views are not copied (`gateway project`
rebuilds them); the health table and the HLS invocation counters are operational state.

The personal-data key store is copied only with ``--with-keys``: a copy of the keys keeps every key
that a later erasure (crypto-shredding) destroys in the live store, so the copy must then be erased
or expired with the same care. Without it, the copy's encrypted personal data cannot be read, which
is what a backup kept for the meter history alone should be.
To restore: stop the gateway, remove the store file and its ``-wal``/``-shm``, copy the backup to the
store path (and the key-store copy beside it), start the gateway.
Exit codes: 0 done, 1 the backup could not be made (nothing left under the target name).
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

from gateway.personal.keys import key_store_path_for
from gateway.config.settings import STORE_ENV_VAR, store_path
from gateway.store.sqlite_backup import BackupCopy, BackupError, backup_file


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "backup",
        help="copy the SQLite event store while the gateway runs",
        description="Make a consistent, integrity-checked copy of the SQLite event store into a new "
        "file, while the gateway may be writing to it.",
    )
    parser.add_argument("--to", type=Path, required=True, metavar="FILE",
                        help="the backup file to create (must not exist)")
    parser.add_argument("--db", help=f"SQLite event store file (default: ${STORE_ENV_VAR}, else ./var/gateway.db)")
    parser.add_argument("--with-keys", action="store_true",
                        help="also copy the personal-data key store (the copy keeps keys that later erasures destroy)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    source = store_path(args.db)
    keys, keys_target = key_store_path_for(source), key_store_path_for(args.to)
    with_keys = args.with_keys and keys.is_file()
    copies: list[BackupCopy] = []
    try:
        if with_keys and keys_target.exists():  # before anything is copied: all or nothing
            raise BackupError(f"{keys_target} exists already: a backup never overwrites a file")
        copies.append(backup_file(source, args.to))
        try:
            contents = _contents(args.to)
            if with_keys:
                copies.append(backup_file(keys, keys_target))
        except BackupError:
            args.to.unlink()  # not a backup of the store, or not the whole one asked for
            raise
    except BackupError as exc:
        print(f"gateway backup: {exc}", file=sys.stderr)
        return 1
    report: dict[str, Any] = {
        "source": str(source), "backup": str(args.to), "bytes": copies[0].bytes, **contents,
        "keyStore": str(copies[1].target) if len(copies) > 1 else None,
    }
    if args.json:
        print(json.dumps(report, sort_keys=True))
        return 0
    print(f"backed up {source} to {args.to}: {contents['events']} events in {contents['streams']} streams "
          f"(up to position {contents['lastPosition']}), {copies[0].bytes} bytes, integrity ok")
    if len(copies) > 1:
        print(f"key store copied to {copies[1].target}: erasures made from now on do not reach this copy")
    elif args.with_keys:
        print(f"no key store at {keys}: nothing else to copy")
    else:
        print("key store not copied: personal data in this backup cannot be decrypted (--with-keys to copy it)")
    return 0


def _contents(backup: Path) -> dict[str, int]:
    """What the copy holds, read from the copy itself."""
    try:
        conn = sqlite3.connect(f"{backup.resolve().as_uri()}?mode=ro", uri=True)
        try:
            events, last = conn.execute("SELECT count(*), coalesce(max(position), 0) FROM events").fetchone()
            (streams,) = conn.execute("SELECT count(*) FROM streams").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise BackupError(f"{backup} is not an event store: {exc}") from exc
    return {"events": int(events), "streams": int(streams), "lastPosition": int(last)}
