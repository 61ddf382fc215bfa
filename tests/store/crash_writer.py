"""Crash-test writer: appends batches to a SQLite event store until it is killed.

Usage: ``python crash_writer.py DBPATH``. Run by tests/store/test_crash.py, which SIGKILLs it at
random moments and then checks the file. Each append carries a batch marker and its event count in
every event's data, so the checker can tell whole appends from torn ones. Expected versions come from
the writer's own cache (empty at start, as after a real restart) and are reloaded on a conflict.
After each acknowledged ``append_batch`` it prints ``ack MARKER`` per appended request, so the
checker can also verify that nothing acknowledged was lost.
"""
from __future__ import annotations

import random
import sys
import uuid
from datetime import datetime, timezone

import anyio

from gateway.store import NO_STREAM, AppendRequest, WrongExpectedVersion
from gateway.store.sqlite import SqliteEventStore
from tests.builders import new_event

STREAMS = [f"meter-{i}" for i in range(5)]


def append_request(stream: str, expected: int, rng: random.Random) -> AppendRequest:
    marker = uuid.uuid4().hex
    count = rng.randint(1, 6)
    now = datetime.now(timezone.utc)
    return AppendRequest(
        stream_id=stream,
        expected_version=expected,
        events=tuple(
            new_event(
                f"{marker}-{i}",
                data={"batch": marker, "count": count, "index": i, "padding": "x" * rng.randint(0, 2000)},
                recorded_at=now,
                gateway_id="crash-writer",
            )
            for i in range(count)
        ),
    )


async def main(path: str) -> None:
    rng = random.Random()
    store = await SqliteEventStore.open(path)
    heads = {stream: NO_STREAM for stream in STREAMS}  # deliberately stale after a restart
    started = False
    while True:
        chosen = rng.sample(STREAMS, rng.randint(1, len(STREAMS)))
        requests = [append_request(s, heads[s], rng) for s in chosen]
        outcomes = await store.append_batch(requests)
        acked = []
        for outcome in outcomes:
            stream = outcome.request.stream_id
            if outcome.result is not None:
                heads[stream] = outcome.result.last_version
                acked.append(outcome.request.events[0].data["batch"])
            elif isinstance(outcome.error, WrongExpectedVersion):
                heads[stream] = await store.head(stream)
            else:
                raise AssertionError(f"unexpected outcome {outcome!r}")
        if not started:
            print("started", flush=True)
            started = True
        for marker in acked:
            print(f"ack {marker}", flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
