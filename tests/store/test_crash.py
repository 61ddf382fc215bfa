"""Crash test of the SQLite store: a real writer process is SIGKILLed mid-write, again and again.

After every kill the file must hold only whole appends, gapless versions, unique event ids, a head
row equal to the last version, and every append the writer saw acknowledged.
(SIGKILL loses no page cache, so this checks transaction atomicity and recovery, not fsync; the
fsync half is ``synchronous=FULL``, checked in test_sqlite.py.)
"""
from __future__ import annotations

import os
import random
import signal
import sqlite3
import sys
from collections import defaultdict
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

from gateway.store import RecordedEvent
from gateway.store.sqlite import SqliteEventStore

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

WRITER = Path(__file__).with_name("crash_writer.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
KILLS = 25
STARTUP_TIMEOUT = 30.0  # a guard against a hung writer, not a performance assertion


async def read_until_started(proc: Process, seen: list[str]) -> None:
    assert proc.stdout is not None
    buffer = ""
    async for chunk in TextReceiveStream(proc.stdout):
        buffer += chunk
        *lines, buffer = buffer.split("\n")
        seen.extend(lines)
        if "started" in lines:
            seen.append(buffer)
            return
    raise AssertionError("the writer exited before it started writing")


async def read_rest(proc: Process, seen: list[str]) -> None:
    assert proc.stdout is not None
    rest = "".join([chunk async for chunk in TextReceiveStream(proc.stdout)])
    if seen:
        rest = seen.pop() + rest  # the partial line left by read_until_started
    seen.extend(rest.split("\n"))


async def run_and_kill(db: Path, delay: float) -> set[str]:
    """Start the writer, SIGKILL it ``delay`` s after its first write; return the acked markers."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)}
    lines: list[str] = []
    async with await anyio.open_process(
        [sys.executable, str(WRITER), str(db)], env=env
    ) as proc:
        try:
            with anyio.fail_after(STARTUP_TIMEOUT):
                await read_until_started(proc, lines)
        except (AssertionError, TimeoutError) as exc:
            proc.kill()
            await proc.wait()
            assert proc.stderr is not None
            err = b"".join([chunk async for chunk in proc.stderr]).decode(errors="replace")
            raise AssertionError(f"writer did not start writing ({exc!r}): {err[-2000:]}") from exc
        await anyio.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        await read_rest(proc, lines)
        code = await proc.wait()
    assert code == -signal.SIGKILL, f"writer ended by itself with {code}, not by the kill"
    # A line cut by the kill is incomplete (no newline), so only whole "ack" lines count.
    return {line.split()[1] for line in lines[:-1] if line.startswith("ack ")}


async def check_store(db: Path, acked: set[str]) -> int:
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = await SqliteEventStore.open(db)
    try:
        everything: list[RecordedEvent] = []
        checkpoint = None
        while True:
            page = await store.read_all(checkpoint, limit=500)
            everything.extend(page.events)
            checkpoint = page.checkpoint
            if page.done:
                break
        ids = [e.event_id for e in everything]
        assert len(ids) == len(set(ids)), "duplicate event ids"

        by_stream: dict[str, list[RecordedEvent]] = defaultdict(list)
        by_batch: dict[str, list[RecordedEvent]] = defaultdict(list)
        for e in everything:
            by_stream[e.stream_id].append(e)
            by_batch[e.data["batch"]].append(e)
        for stream, stored in by_stream.items():
            versions = [e.version for e in stored]
            assert versions == list(range(1, len(versions) + 1)), f"{stream}: gaps or disorder"
            assert await store.head(stream) == versions[-1], f"{stream}: head row is not the last version"
        assert {i.stream_id: i.head for i in await store.list_streams()} == {
            s: len(v) for s, v in by_stream.items()}
        for marker, stored in by_batch.items():
            assert len(stored) == stored[0].data["count"], f"torn append {marker}"
            assert [e.data["index"] for e in stored] == list(range(len(stored)))
            assert [e.version for e in stored] == list(
                range(stored[0].version, stored[0].version + len(stored)))
        missing = acked - by_batch.keys()
        assert not missing, f"acknowledged appends lost: {sorted(missing)[:5]}"
        return len(everything)
    finally:
        await store.aclose()


@pytest.mark.slow
async def test_sigkilled_writer_leaves_only_whole_appends(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    acked: set[str] = set()
    counts: list[int] = []
    for kill in range(KILLS):
        acked |= await run_and_kill(db, rng.uniform(0.0, 0.05))
        try:
            counts.append(await check_store(db, acked))
        except AssertionError as exc:
            raise AssertionError(f"after kill {kill + 1} (seed {seed}): {exc}") from exc
    # The loop must have exercised something: writes happened and kept happening across restarts.
    assert counts[-1] > counts[0] > 0
    assert len(acked) > KILLS
