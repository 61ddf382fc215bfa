"""`gateway streams list|show`: what the local event store holds, for the operator.

Reads the SQLite store given by ``--db`` (default: $GATEWAY_STORE, else ./var/gateway.db) and never
creates one: a missing file is reported, not silently made empty. Each sub-command is one
``_register_<name>`` function below, so more (e.g. ``delete``) slot in beside them.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import anyio

from gateway.commands._streams_delete import register_delete
from gateway.config.settings import STORE_ENV_VAR, store_path
from gateway.store import codec
from gateway.store.errors import StoreError, StreamNotFound
from gateway.store.model import RecordedEvent, StreamInfo
from gateway.store.sqlite import SqliteEventStore


class NoStoreError(Exception):
    """The store file named on the command line (or by default) does not exist."""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    streams = subparsers.add_parser("streams", help="list the event streams and show their events")
    commands = streams.add_subparsers(dest="streams_command", metavar="ACTION", required=True)
    _register_list(commands)
    _register_show(commands)
    register_delete(commands)


def _add_db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        help=f"SQLite event store file (default: ${STORE_ENV_VAR}, else ./var/gateway.db)",
    )


def _register_list(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("list", help="every stream with its head and first/last time")
    _add_db_option(parser)
    parser.add_argument("--prefix", default="", help="only streams whose id starts with this")
    parser.add_argument("--json", action="store_true", help="print a JSON array")
    parser.set_defaults(func=run_list)


def _register_show(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("show", help="the events of one stream, in order")
    parser.add_argument("stream", metavar="STREAM", help="stream id, e.g. Meter:MTR000001:2026")
    _add_db_option(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON array of envelopes")
    parser.set_defaults(func=run_show)


async def _open_existing(db: str | None) -> SqliteEventStore:
    path = store_path(db)
    if not path.is_file():
        raise NoStoreError(f"no event store at {path}")
    return await SqliteEventStore.open(path)


def _run(args: argparse.Namespace, action: Any) -> int:
    try:
        return int(anyio.run(action, args))
    except NoStoreError as exc:
        print(f"gateway streams {args.streams_command}: {exc}", file=sys.stderr)
        return 1
    except StoreError as exc:
        print(f"gateway streams {args.streams_command}: {exc}", file=sys.stderr)
        return 1


# ---- list -------------------------------------------------------------------------------------


def run_list(args: argparse.Namespace) -> int:
    return _run(args, _list)


async def _list(args: argparse.Namespace) -> int:
    store = await _open_existing(args.db)
    try:
        infos = await store.list_streams(args.prefix)
    finally:
        await store.aclose()
    if args.json:
        print(json.dumps([_info_json(info) for info in infos], indent=2))
    else:
        print(_info_table(infos))
    return 0


def _time_or_none(value: Any) -> str | None:
    return None if value is None else codec.iso_utc(value)


def _info_json(info: StreamInfo) -> dict[str, Any]:
    return {
        "streamId": info.stream_id,
        "head": info.head,
        "firstRecordedAt": _time_or_none(info.first_recorded_at),
        "lastRecordedAt": _time_or_none(info.last_recorded_at),
    }


def _info_table(infos: list[StreamInfo]) -> str:
    header = ("STREAM", "HEAD", "FIRST RECORDED", "LAST RECORDED")
    rows = [
        (
            info.stream_id,
            str(info.head),
            _time_or_none(info.first_recorded_at) or "-",
            _time_or_none(info.last_recorded_at) or "-",
        )
        for info in infos
    ]
    table = _table(header, rows)
    return f"{table}\n({len(infos)} stream{'s' if len(infos) != 1 else ''})"


# ---- show -------------------------------------------------------------------------------------


def run_show(args: argparse.Namespace) -> int:
    return _run(args, _show)


async def _show(args: argparse.Namespace) -> int:
    store = await _open_existing(args.db)
    try:
        events = await store.load(args.stream)
    except StreamNotFound:
        print(f"gateway streams show: no stream {args.stream!r} in {store.path}", file=sys.stderr)
        return 1
    finally:
        await store.aclose()
    if args.json:
        print(json.dumps([_envelope(event) for event in events], indent=2))
    else:
        header = ("VERSION", "TYPE", "ID", "RECORDED AT", "DATA")
        rows = [
            (
                str(e.version),
                e.type,
                e.event_id,
                codec.iso_utc(e.metadata.recorded_at),
                codec.dumps(e.data),
            )
            for e in events
        ]
        print(_table(header, rows))
    return 0


def _envelope(event: RecordedEvent) -> dict[str, Any]:
    return {
        "streamId": event.stream_id,
        "version": event.version,
        "position": event.position,
        **codec.event_to_dict(event),
    }


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    # The last column (free text such as event data) is not padded.
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]

    def line(cells: tuple[str, ...]) -> str:
        padded = [cell.ljust(width) for cell, width in zip(cells, widths)]
        return "  ".join([*padded, cells[-1]]).rstrip()

    return "\n".join(line(r) for r in [header, *rows])

