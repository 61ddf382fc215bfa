"""Behaviour of the Cosmos DB backend that the shared contract suite does not pin down: racing
writers in separate processes' worth of clients, lost answers, change-feed resumption, outages,
throttling, the one-request append, size limits and TLS/key configuration.

Everything runs against the local Cosmos-compatible server (tests/cosmos_server) through the
official SDK; faults are made by a real TLS proxy (conftest.FaultyProxy) or by stopping the server.
"""
from __future__ import annotations

import os
import signal
import uuid
from dataclasses import replace
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.backends import read_everything
from tests.builders import T0, event, events, ids
from tests.cosmos_fixture import CosmosServer, start_cosmos_server
from gateway.store import (
    NO_STREAM,
    AppendTooLarge,
    EventIdConflict,
    RecordedEvent,
    Snapshot,
    StoreUnavailable,
    WrongExpectedVersion,
)
from gateway.store.cosmos import CosmosEventStore
from gateway.store.cosmos_client import CosmosConfig, CosmosConfigError

from .conftest import FaultyProxy

pytestmark = pytest.mark.anyio

async def test_two_clients_racing_on_one_stream_lose_nothing_and_duplicate_nothing(
        cosmos_config: CosmosConfig) -> None:
    # Two store instances = two SDK clients with their own head caches, as two gateways would be.
    a = await CosmosEventStore.open(cosmos_config, create_if_missing=True)
    b = await CosmosEventStore.open(cosmos_config)
    stream = f"Meter:race-{uuid.uuid4().hex[:8]}:2026"
    sent: dict[str, list[str]] = {"a": [], "b": []}
    outcomes = {"won": 0, "lost": 0}
    try:
        async def writer(name: str, store: CosmosEventStore) -> None:
            expected = NO_STREAM
            for _ in range(8):
                mine = events(2, id_prefix=name)
                while True:
                    try:
                        result = await store.append(stream, mine, expected)
                    except WrongExpectedVersion as exc:
                        outcomes["lost"] += 1
                        assert exc.actual > expected
                        expected = exc.actual
                    else:
                        outcomes["won"] += 1
                        expected = result.last_version
                        sent[name].extend(ids(mine))
                        break

        async with anyio.create_task_group() as tg:
            tg.start_soon(writer, "a", a)
            tg.start_soon(writer, "b", b)

        loaded = await a.load(stream)
        assert [e.version for e in loaded] == list(range(1, 33))
        assert sorted(ids(loaded)) == sorted(sent["a"] + sent["b"])
        assert outcomes["won"] == 16
        # Each append is one commit item: every pair of events is adjacent and in order.
        stored = ids(loaded)
        for start in range(0, 32, 2):
            assert stored[start][0] == stored[start + 1][0]
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_lost_answer_is_resolved_by_the_idempotent_retry(
        faulty_proxy: FaultyProxy, cosmos_server: CosmosServer) -> None:
    config = replace(cosmos_server.config(), endpoint=faulty_proxy.endpoint,
                     endpoint_discovery=False)
    store = await CosmosEventStore.open(config, create_if_missing=True)
    stream = f"Meter:lost-{uuid.uuid4().hex[:8]}:2026"
    try:
        await store.append(stream, events(1), NO_STREAM)

        # One lost answer: the SDK sends the create again, gets 409 Conflict, and the store
        # recognises its own events at the expected versions.
        batch = events(6)
        creates = faulty_proxy.creates_seen
        faulty_proxy.lose_next_create_answers = 1
        result = await store.append(stream, batch, 1)
        assert faulty_proxy.answers_lost == 1 and faulty_proxy.creates_seen == creates + 2
        assert result.already_done and (result.first_version, result.last_version) == (2, 7)

        # Every answer lost: the caller gets StoreUnavailable, and its own retry later is
        # reported as already done.
        again = events(3)
        faulty_proxy.lose_next_create_answers = 100
        with pytest.raises(StoreUnavailable):
            await store.append(stream, again, 7)
        faulty_proxy.lose_next_create_answers = 0
        retry = await store.append(stream, again, 7)
        assert retry.already_done and (retry.first_version, retry.last_version) == (8, 10)

        loaded = await store.load(stream)
        assert ids(loaded[1:]) == ids(batch + again)
        assert len(loaded) == 10 and len(set(ids(loaded))) == 10
        assert (await store.append(stream, events(1), 10)).last_version == 11
    finally:
        await store.aclose()


async def test_throttled_create_is_retried_after_retry_after_then_gives_up_bounded(
        faulty_proxy: FaultyProxy, cosmos_server: CosmosServer) -> None:
    config = replace(cosmos_server.config(), endpoint=faulty_proxy.endpoint,
                     endpoint_discovery=False, throttle_retries=2)
    store = await CosmosEventStore.open(config, create_if_missing=True)
    stream = f"Meter:throttle-{uuid.uuid4().hex[:8]}:2026"
    try:
        await store.append(stream, events(1), NO_STREAM)
        faulty_proxy.throttle_next_creates = 2  # within the bound: the SDK waits and retries
        assert (await store.append(stream, events(1), 1)).last_version == 2
        assert faulty_proxy.throttled == 2

        faulty_proxy.throttle_next_creates = 10  # beyond it: a typed, retryable error
        with pytest.raises(StoreUnavailable) as info:
            await store.append(stream, events(1), 2)
        assert info.value.stream_id == stream and "429" in str(info.value)
        assert faulty_proxy.throttled == 5  # the first try plus `throttle_retries` retries
        assert await store.head(stream) == 2
    finally:
        await store.aclose()


async def test_change_feed_resumes_from_a_persisted_checkpoint_and_sees_each_commit_once(
        cosmos_config: CosmosConfig, tmp_path: Path) -> None:
    checkpoint_file = tmp_path / "projection.checkpoint"
    streams = [f"Meter:feed{i}-{uuid.uuid4().hex[:6]}:2026" for i in range(3)]
    sent: dict[str, list[str]] = {s: [] for s in streams}
    seen: list[RecordedEvent] = []

    async def append_round(store: CosmosEventStore, size: int) -> None:
        for s in streams:
            batch = events(size)
            await store.append(s, batch, len(sent[s]))
            sent[s].extend(ids(batch))

    async def read_some(store: CosmosEventStore, pages: int | None) -> bool:
        """Read pages, persisting the checkpoint after each; True when the feed was drained."""
        checkpoint = checkpoint_file.read_text() if checkpoint_file.exists() else None
        count = 0
        while pages is None or count < pages:
            page = await store.read_all(checkpoint, limit=4)
            assert len(page.events) <= 4
            seen.extend(page.events)
            checkpoint = page.checkpoint
            assert checkpoint is not None
            checkpoint_file.write_text(checkpoint)
            count += 1
            if page.done:
                return True
        return False

    store = await CosmosEventStore.open(cosmos_config, create_if_missing=True)
    try:
        await append_round(store, 3)
        await append_round(store, 5)  # commits larger than a page are split across pages
        assert not await read_some(store, pages=3)
    finally:
        await store.aclose()

    # A new process: a new client, only the persisted checkpoint carries over.
    store = await CosmosEventStore.open(cosmos_config)
    try:
        await append_round(store, 1)
        assert await read_some(store, pages=None)
        assert await read_some(store, pages=None)  # nothing new: a done, empty page
        await append_round(store, 2)
        assert await read_some(store, pages=None)
    finally:
        await store.aclose()

    assert len(seen) == len(set(ids(seen))) == sum(len(v) for v in sent.values())
    for s in streams:
        mine = [e for e in seen if e.stream_id == s]
        assert ids(mine) == sent[s]
        assert [e.version for e in mine] == list(range(1, len(sent[s]) + 1))


@pytest.mark.slow
async def test_store_unavailable_while_the_server_is_down_then_appends_succeed_again() -> None:
    server = start_cosmos_server()  # its own server: this test stops it
    store: CosmosEventStore | None = None
    try:
        config = replace(server.config(), read_timeout_s=0.5, connect_retries=0)
        store = await CosmosEventStore.open(config, create_if_missing=True)
        stream = f"Meter:outage-{uuid.uuid4().hex[:8]}:2026"
        await store.append(stream, events(2), NO_STREAM)

        # Frozen server: the request times out. Whether the server applied it after waking up is
        # unknown to the writer; retrying the same events settles it without a duplicate.
        pending = events(1)
        os.kill(server.pid, signal.SIGSTOP)
        try:
            with pytest.raises(StoreUnavailable) as info:
                await store.append(stream, pending, 2)
            assert info.value.stream_id == stream
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert (await store.append(stream, pending, 2)).last_version == 3
        assert ids((await store.load(stream))[2:]) == ids(pending)

        # Stopped server: connections are refused.
        server.stop()
        with pytest.raises(StoreUnavailable) as info:
            await store.append(stream, events(1), 3)
        assert info.value.stream_id == stream
        with pytest.raises(StoreUnavailable):
            await store.load(stream)
        with pytest.raises(StoreUnavailable):
            await store.read_all(None)

        # Back on the same endpoint (the stand-in keeps data in memory: it comes back empty and
        # the operator runs `gateway store init`); the same store instance works again.
        server = start_cosmos_server(server.port)
        async with await CosmosEventStore.open(config, create_if_missing=True):
            pass
        fresh = f"Meter:outage-{uuid.uuid4().hex[:8]}:2026"
        assert (await store.append(fresh, events(2), NO_STREAM)).last_version == 2
        assert len(await store.load(fresh)) == 2
    finally:
        if store is not None:
            await store.aclose()
        server.stop()


async def test_append_with_a_warm_cache_is_one_request_and_one_item(
        cosmos_server: CosmosServer) -> None:
    config = cosmos_server.config()  # the default: no cross-partition id check
    async with await CosmosEventStore.open(config, create_if_missing=True) as store:
        stream = f"Meter:one-{uuid.uuid4().hex[:8]}:2026"
        before = store.stats.http_requests
        await store.append(stream, events(6), NO_STREAM)  # cold: one head query + the create
        assert store.stats.http_requests - before == 2
        for round_ in range(5):
            before, items = store.stats.http_requests, store.stats.items_written
            await store.append(stream, events(6), 6 * (round_ + 1))
            assert store.stats.http_requests - before == 1
            assert store.stats.items_written - items == 1
        assert store.stats.request_charge > 0  # the server sends x-ms-request-charge


async def test_append_checking_event_ids_across_streams_is_two_requests(
        cosmos_server: CosmosServer) -> None:
    config = cosmos_server.config(check_event_ids_across_streams=True)
    async with await CosmosEventStore.open(config, create_if_missing=True) as store:
        stream = f"Meter:two-{uuid.uuid4().hex[:8]}:2026"
        await store.append(stream, events(6), NO_STREAM)
        before = store.stats.http_requests
        await store.append(stream, events(6), 6)
        assert store.stats.http_requests - before == 2
        taken = events(1)[0]
        await store.append(f"Meter:other-{uuid.uuid4().hex[:8]}:2026", [taken], NO_STREAM)
        with pytest.raises(EventIdConflict):
            await store.append(stream, [taken], 12)


async def test_commit_over_the_size_limit_is_refused_naming_the_stream(
        cosmos_server: CosmosServer) -> None:
    config = cosmos_server.config(max_commit_bytes=4096)
    async with await CosmosEventStore.open(config, create_if_missing=True) as store:
        stream = f"Meter:big-{uuid.uuid4().hex[:8]}:2026"
        with pytest.raises(AppendTooLarge) as info:
            await store.append(stream, [event(blob="x" * 5000)], NO_STREAM)
        assert info.value.stream_id == stream and info.value.limit == 4096
        assert stream in str(info.value)
        assert await store.head(stream) == NO_STREAM
        assert (await store.append(stream, [event(blob="x" * 100)], NO_STREAM)).last_version == 1


async def test_tls_is_verified_by_default(cosmos_server: CosmosServer) -> None:
    config = replace(cosmos_server.config(), verify_tls=True)
    async with await CosmosEventStore.open(config) as store:
        with pytest.raises(CosmosConfigError, match="not trusted"):
            await store.head("Meter:x:2026")
    assert CosmosConfig(endpoint="https://example.documents.azure.com:443/").verify_tls


def test_key_is_only_referenced_by_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CosmosConfigError, match="key_env"):
        CosmosConfig.from_mapping({"endpoint": "https://a.example/", "key": "s3cret"})
    config = CosmosConfig.from_mapping({"endpoint": "https://a.example/", "key_env": "GW_TEST_KEY"})
    monkeypatch.delenv("GW_TEST_KEY", raising=False)
    with pytest.raises(CosmosConfigError, match="GW_TEST_KEY"):
        config.key()
    monkeypatch.setenv("GW_TEST_KEY", "s3cret-value")
    assert config.key() == "s3cret-value"
    assert "s3cret" not in repr(config)
    with pytest.raises(CosmosConfigError, match="unknown cosmos config keys: colour"):
        CosmosConfig.from_mapping({"endpoint": "https://a.example/", "colour": "blue"})


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(commits=st.lists(st.tuples(st.integers(0, 2), st.integers(1, 7)), min_size=1, max_size=12),
       limit=st.integers(1, 5))
async def test_read_all_pages_split_commits_and_deliver_each_event_once_in_order(
        cosmos_store: CosmosEventStore, commits: list[tuple[int, int]], limit: int) -> None:
    streams = [f"Meter:prop{i}-{uuid.uuid4().hex[:8]}:2026" for i in range(3)]
    sent: dict[str, list[str]] = {s: [] for s in streams}
    _, checkpoint = await read_everything(cosmos_store)  # skip what earlier examples wrote
    for which, size in commits:
        batch = events(size)
        await cosmos_store.append(streams[which], batch, len(sent[streams[which]]))
        sent[streams[which]].extend(ids(batch))
    seen: list[RecordedEvent] = []
    for _ in range(1000):
        page = await cosmos_store.read_all(checkpoint, limit=limit)
        assert len(page.events) <= limit
        seen.extend(page.events)
        checkpoint = page.checkpoint
        if page.done:
            break
    for s in streams:
        assert ids([e for e in seen if e.stream_id == s]) == sent[s]
    assert len(seen) == sum(len(v) for v in sent.values())


async def test_snapshot_lives_in_the_stream_partition_never_regresses_and_stays_out_of_the_feed(
        cosmos_store: CosmosEventStore) -> None:
    stream = f"Meter:snap-{uuid.uuid4().hex[:8]}:2026"
    sent = events(5)
    await cosmos_store.append(stream, sent, NO_STREAM)
    newer = Snapshot(stream, 5, 1, {"register": "200.25"}, T0)
    older = Snapshot(stream, 3, 1, {"register": "100.5"}, T0)
    await cosmos_store.save_snapshot(newer)
    await cosmos_store.save_snapshot(older)  # a slow writer's older state does not win
    assert await cosmos_store.load_snapshot(stream) == newer

    seen, _ = await read_everything(cosmos_store, limit=2)
    assert ids(seen) == ids(sent)  # the snapshot item is in the feed but is not an event
    assert [(i.stream_id, i.head) for i in await cosmos_store.list_streams(stream)] == [(stream, 5)]
