"""Property: whatever the interleaving of puts (including repeated facts), outages, lost
acknowledgements and crashes right after a far append (the process restarting from the outbox file),
once the far store is reachable again every distinct event is stored exactly once, in the order of
its first put within its stream, and the outbox is empty."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.history.outbox import Outbox
from gateway.history.outbox_forwarder import Forwarder
from gateway.store.errors import StoreUnavailable
from gateway.store.sqlite import SqliteEventStore
from tests.builders import ids, reading
from tests.outbox import Crash, FaultyStore

pytestmark = pytest.mark.anyio

STREAMS = ["m1:2026", "m2:2026", "m3:2026"]

put_op = st.tuples(
    st.just("put"), st.sampled_from(STREAMS), st.lists(st.integers(0, 30), min_size=1, max_size=4)
)
drain_op = st.tuples(st.just("drain"), st.sampled_from(["ok", "down", "lost_ack", "crash"]),
                     st.integers(1, 4))
operations = st.lists(st.one_of(put_op, drain_op), max_size=14)


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
async def test_any_interleaving_of_faults_forwards_each_event_once_in_order(
    ops: list[tuple[str, str, object]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        outbox_path = Path(tmp) / "outbox.sqlite3"
        far = await SqliteEventStore.open(Path(tmp) / "far.sqlite3")
        faulty = FaultyStore(far)
        outbox = await Outbox.open(outbox_path, 10_000_000)
        expected: dict[str, list[str]] = {}
        owner: dict[str, str] = {}  # event id → the stream it was first put to
        try:
            for kind, arg, extra in ops:
                if kind == "put":
                    # An id belongs to one stream (deterministic ids): qualify it with the stream.
                    assert isinstance(extra, list)
                    batch = list(dict.fromkeys(f"{arg}/e{n}" for n in extra))
                    await outbox.put(arg, [reading(i) for i in batch])
                    for i in batch:
                        if i not in owner:
                            owner[i] = arg
                            expected.setdefault(arg, []).append(i)
                    continue
                assert isinstance(extra, int)
                forwarder = Forwarder(outbox, faulty, max_events_per_append=extra)
                faulty.down = arg == "down"
                faulty.lose_acks = 1 if arg == "lost_ack" else 0
                faulty.crash_after_append = arg == "crash"
                try:
                    await forwarder.drain_once()
                except StoreUnavailable:
                    pass
                except Crash:
                    await outbox.aclose()  # the process died; a new one opens the file
                    outbox = await Outbox.open(outbox_path, 10_000_000)
                faulty.down, faulty.lose_acks, faulty.crash_after_append = False, 0, False
            await Forwarder(outbox, faulty, max_events_per_append=3).drain_once()
            assert faulty.id_conflicts == 0  # exactly once without the store's id check
            stored = {s.stream_id: ids(await far.load(s.stream_id)) for s in await far.list_streams()}
            assert stored == expected
            state = await outbox.state()
            assert (state.depth, state.poisoned) == (0, 0)
        finally:
            await outbox.aclose()
            await far.aclose()
