"""SIGKILL of a process that puts events into the outbox and forwards them, at random moments.

The child (this module run as ``python -m tests.outbox.test_sigkill OUTBOX FAR COUNT``) does what
the gateway does: it puts ``COUNT`` events (``e{i}`` into stream ``i % 4``, deterministic ids, so a
restarted child puts the same facts again, as a poller re-reading its meters would) while a
``Forwarder`` drains the outbox to a real SQLite far store in small batches; it prints ``done`` and
exits once everything is forwarded. The test kills it >= 10 times at random moments, restarting it
each time, then lets it finish: the far store must hold every event exactly once, in order.
(SIGKILL keeps the page cache, so this checks transactions and the crash protocol, not fsync.)
"""
from __future__ import annotations

import os
import random
import signal
import sqlite3
import sys
from pathlib import Path

import anyio
import pytest
from anyio.streams.text import TextReceiveStream

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
STREAMS = [f"meter-{m}:2026" for m in range(4)]
COUNT = 600
PUT_PACE_S = 0.002
KILLS = 12
GUARD_S = 60.0  # a guard against a hung child, not a performance assertion


async def child(outbox_path: str, far_path: str, count: int) -> None:
    from gateway.history.outbox import Outbox
    from gateway.history.outbox_forwarder import Forwarder
    from gateway.store.sqlite import SqliteEventStore
    from tests.builders import reading
    from tests.outbox import FaultyStore

    outbox = await Outbox.open(outbox_path, 100_000_000)
    # No fault: the wrapper only logs EventIdConflict answers, which the protocol must not need.
    far = FaultyStore(await SqliteEventStore.open(far_path), conflict_log=conflict_log(far_path))
    # Small batches and few streams per round: many far appends, so kills land between them.
    forwarder = Forwarder(outbox, far, max_streams=2, max_events_per_append=3, idle_wait_s=0.01)
    print("ready", flush=True)
    async with anyio.create_task_group() as tg:
        tg.start_soon(forwarder.run)
        for i in range(count):
            put = await outbox.put(STREAMS[i % len(STREAMS)], [reading(f"e{i}", value=str(i))])
            if put.queued:
                await anyio.sleep(PUT_PACE_S)  # a poller's pace: restarts re-put known facts quickly
        while (await outbox.state()).depth:
            await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    print("done", flush=True)


def conflict_log(far_path: str | Path) -> Path:
    return Path(f"{far_path}.id-conflicts")


async def run_child(outbox: Path, far: Path, kill_after: float | None) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)}
    command = [sys.executable, "-m", "tests.outbox.test_sigkill", str(outbox), str(far), str(COUNT)]
    async with await anyio.open_process(command, env=env, cwd=REPO_ROOT) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        output = ""
        async for chunk in TextReceiveStream(proc.stdout):
            output += chunk
            if "ready\n" in output:
                break
        else:
            err = b"".join([chunk async for chunk in proc.stderr]).decode(errors="replace")
            raise AssertionError(f"child ended before it was ready: {err[-2000:]}")
        if kill_after is not None:
            await anyio.sleep(kill_after)
            try:
                proc.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass  # it finished first; the test counts kills that interrupted work
        return await proc.wait()


def far_state(far: Path) -> dict[str, list[str]]:
    if not far.exists():
        return {}
    with sqlite3.connect(far) as conn:
        rows = conn.execute("SELECT stream_id, event_id FROM events ORDER BY stream_id, version")
        out: dict[str, list[str]] = {}
        for stream_id, event_id in rows:
            out.setdefault(stream_id, []).append(event_id)
    return out


@pytest.mark.slow
async def test_sigkill_at_random_moments_forwards_each_event_exactly_once_in_order(
    tmp_path: Path,
) -> None:
    outbox, far = tmp_path / "outbox.sqlite3", tmp_path / "far.sqlite3"
    rng = random.Random(20261126)
    killed_mid_work = 0
    with anyio.fail_after(GUARD_S):
        for _ in range(KILLS):
            code = await run_child(outbox, far, kill_after=rng.uniform(0.0, 0.4))
            stored = sum(len(v) for v in far_state(far).values())
            if code == -signal.SIGKILL and stored < COUNT:
                killed_mid_work += 1
            # Whatever the moment, what is in the far store is never duplicated nor out of order.
            for stream, events in far_state(far).items():
                numbers = [int(e[1:]) for e in events]
                assert numbers == sorted(set(numbers)), f"{stream}: {events}"
        assert await run_child(outbox, far, kill_after=None) == 0
    # The kills did interrupt work (not all after the child had finished).
    assert killed_mid_work >= KILLS // 2
    expected: dict[str, list[str]] = {s: [] for s in STREAMS}
    for i in range(COUNT):
        expected[STREAMS[i % len(STREAMS)]].append(f"e{i}")
    assert far_state(far) == expected
    # Exactly once came from the recorded heads, not from SQLite refusing a repeated id.
    assert not conflict_log(far).exists(), conflict_log(far).read_text()
    with sqlite3.connect(outbox) as conn:
        assert conn.execute("SELECT count(*) FROM outbox_pending").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM outbox_poison").fetchone()[0] == 0


if __name__ == "__main__":
    anyio.run(child, sys.argv[1], sys.argv[2], int(sys.argv[3]))
