"""`gateway events query`: events by type, meter and time range across streams (Cosmos DB store).

One query over the events container (``JOIN e IN c.events``): with ``--meter`` it is restricted to
that meter's year streams (``Meter:<id>:<year>``), the years covered by ``--from``/``--to`` when
given. The time range applies to each event's recorded-at time (UTC), ``--from`` inclusive, ``--to``
exclusive.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone

import anyio

from gateway.commands.store import add_cosmos_arguments, cosmos_config_from_args
from gateway.store import codec
from gateway.store.errors import StoreError
from gateway.store.model import RecordedEvent
from gateway.commands._args import positive


def _utc(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO-8601 time: {text!r} (e.g. 2026-03-01T00:00:00Z)") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)  # a time without zone means UTC here
    return value.astimezone(timezone.utc)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    events = subparsers.add_parser("events", help="query stored events across streams (Cosmos DB)")
    actions = events.add_subparsers(dest="events_action", metavar="ACTION", required=True)
    query = actions.add_parser(
        "query",
        help="events by type, meter and recorded-time range",
        description="Find events across streams in the Cosmos DB store.",
    )
    query.add_argument("--type", dest="event_type", help="event type, e.g. RegisterRead")
    query.add_argument("--meter", help="meter id (its streams are Meter:<id>:<year>)")
    query.add_argument("--from", dest="start", type=_utc, help="recorded at or after (ISO-8601)")
    query.add_argument("--to", dest="end", type=_utc, help="recorded before (ISO-8601)")
    query.add_argument("--limit", type=positive, default=1000, help="at most N events (1000)")
    query.add_argument("--json", action="store_true", help="one JSON object per line")
    add_cosmos_arguments(query)
    query.set_defaults(func=run_query)


def meter_streams(meter: str, start: datetime | None, end: datetime | None) -> tuple[
        list[str] | None, str | None]:
    """(stream ids, or None) and (stream prefix, or None) selecting one meter's year streams."""
    if start is not None and end is not None:
        return [f"Meter:{meter}:{year}" for year in range(start.year, end.year + 1)], None
    return None, f"Meter:{meter}:"


def _as_json(event: RecordedEvent) -> dict[str, object]:
    return {
        "streamId": event.stream_id,
        "version": event.version,
        "id": event.event_id,
        "type": event.type,
        "schemaVersion": event.schema_version,
        "data": dict(event.data),
        "metadata": codec.metadata_to_dict(event.metadata),
    }


def run_query(args: argparse.Namespace) -> int:
    from gateway.store.cosmos import CosmosEventStore

    if args.start is not None and args.end is not None and args.start >= args.end:
        print("gateway events query: --from must be before --to", file=sys.stderr)
        return 2
    stream_ids, prefix = (meter_streams(args.meter, args.start, args.end) if args.meter
                          else (None, None))
    try:
        config = cosmos_config_from_args(args)

        async def main() -> list[RecordedEvent]:
            async with await CosmosEventStore.open(config) as store:
                return await store.query_events(
                    event_type=args.event_type, stream_ids=stream_ids, stream_prefix=prefix,
                    recorded_from=args.start, recorded_to=args.end, limit=args.limit)

        found = anyio.run(main)
    except StoreError as exc:
        print(f"gateway events query: {exc}", file=sys.stderr)
        return 1
    for event in found:
        if args.json:
            print(json.dumps(_as_json(event), sort_keys=True))
        else:
            print(f"{codec.iso_utc(event.metadata.recorded_at)}  {event.stream_id}  "
                  f"v{event.version}  {event.type}  {codec.dumps(event.data)}")
    if not args.json:
        print(f"{len(found)} event(s)", file=sys.stderr)
    return 0
