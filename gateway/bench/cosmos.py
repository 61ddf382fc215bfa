"""`gateway bench store --backend cosmos`: the one-item-per-append layout against one item per event.

Unit of work: a typical poll of one meter, six events (four register reads, one block of four
15-minute intervals, one clock check), appended to the meter's year stream. Each round appends one
poll for every meter (``append_batch``: one request per stream, concurrently, bounded).

Measured in the same process, on fresh containers of the same account:

* ``commit`` (the main figures) — ``CosmosEventStore`` as configured by default: one commit item
  per append, one request per append;
* ``checked`` — the same store with the optional cross-stream event-id query
  (two requests per append); measured on at most ``CHECKED_POLLS_CAP`` polls, because the local test
  server answers that cross-partition query by scanning every item (its cost grows with the data);
* ``baseline`` — the talk's layout: one item per event, written with one request per append (a
  transactional batch of creates in the stream's partition).

A warm-up poll per meter runs first (not measured), so head caches are warm. Requests and request
charges are counted on the wire by the transport (``CountingTransport``), never estimated. Without an
endpoint the benchmark starts the local test server (tests/cosmos_server, needs `npm ci` there).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence

import anyio
from anyio.abc import Process

from gateway.store import codec
from gateway.store.cosmos import CosmosEventStore, translate_errors
from gateway.store.cosmos_client import (
    DEFAULT_KEY_ENV,
    CosmosConfig,
    CosmosStoreStats,
    build_client,
    ensure_container,
)
from gateway.store.errors import StoreError
from gateway.store.model import AppendRequest, EventMetadata, NewEvent

EVENTS_PER_POLL = 6
INTERVAL = timedelta(minutes=15)
BENCH_YEAR = 2026
_EPOCH = datetime(BENCH_YEAR, 1, 1, tzinfo=timezone.utc)
_REGISTERS = (("1.0.1.8.0.255", "Wh"), ("1.0.2.8.0.255", "Wh"), ("1.0.3.8.0.255", "varh"),
              ("1.0.4.8.0.255", "varh"))
SERVER_SCRIPT = Path(__file__).resolve().parents[2] / "tests" / "cosmos_server" / "server.js"
LOCAL_KEY_ENV = "GATEWAY_BENCH_LOCAL_COSMOS_KEY"
# The public, documented key of the Azure Cosmos DB emulator; the local test server ignores it.
CHECKED_POLLS_CAP = 300
_EMULATOR_KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="


@dataclass(frozen=True, slots=True)
class CosmosBenchConfig:
    meters: int = 50
    polls: int = 1000  # measured polls (= appends) per layout
    endpoint: str | None = None  # None: start the local test server
    database: str = "meter-gateway-bench"
    key_env: str = DEFAULT_KEY_ENV
    verify_tls: bool = True

    def __post_init__(self) -> None:
        if self.meters < 1 or self.polls < 1:
            raise ValueError("meters and polls must be at least 1")


@dataclass(frozen=True, slots=True)
class LayoutFigures:
    appends: int
    events: int
    elapsed_s: float
    events_per_s: float
    http_requests: int
    requests_per_append: float
    items_written: int
    items_written_per_event: float
    request_charge_per_append: float | None  # None when the server sent no x-ms-request-charge


@dataclass(frozen=True, slots=True)
class CosmosBenchReport:
    endpoint: str
    local_test_server: bool
    meters: int
    events_per_poll: int
    commit: LayoutFigures  # one item per append, no cross-stream id query
    checked: LayoutFigures  # with the optional cross-stream event-id query
    baseline: LayoutFigures  # one item per event

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "backend": "cosmos",
            "endpoint": self.endpoint,
            "local_test_server": self.local_test_server,
            "meters": self.meters,
            "events_per_poll": self.events_per_poll,
            "id_check_across_streams": False,
        }
        for prefix, figures in (("", self.commit), ("checked_", self.checked),
                                ("baseline_", self.baseline)):
            for name, value in asdict(figures).items():
                out[prefix + name] = value
        out["items_written_ratio"] = (self.baseline.items_written_per_event
                                      / self.commit.items_written_per_event)
        out["ratio"] = self.commit.events_per_s / self.baseline.events_per_s
        out["checked_ratio"] = self.checked.events_per_s / self.baseline.events_per_s
        return out


# -- synthetic polls -----------------------------------------------------------------------------


def poll_events(meter: int, poll: int) -> tuple[str, tuple[NewEvent, ...]]:
    """Stream id and the six events of poll ``poll`` of meter ``meter`` (deterministic ids)."""
    meter_id = f"BENCH{meter:06d}"
    stream = f"Meter:{meter_id}:{BENCH_YEAR}"
    read_at = _EPOCH + poll * 4 * INTERVAL + timedelta(seconds=meter % 60)
    meta = EventMetadata(gateway_id="bench-gw", recorded_at=read_at + timedelta(milliseconds=350),
                         correlation_id=f"poll-{meter_id}-{poll}")
    base = 1_000_000 + poll * 250 + meter
    events = [
        NewEvent(f"{stream}:{poll}:reg:{obis}", "RegisterRead", 1,
                 {"meterId": meter_id, "obis": obis, "value": f"{base * (i + 1)}.{poll % 1000:03d}",
                  "unit": unit, "captureTime": codec.iso_utc(read_at)}, meta)
        for i, (obis, unit) in enumerate(_REGISTERS)
    ]
    start = read_at - 4 * INTERVAL
    events.append(NewEvent(
        f"{stream}:{poll}:intervals", "IntervalsRecorded", 1,
        {"meterId": meter_id, "obis": "1.0.99.1.0.255", "capturePeriodS": 900, "unit": "Wh",
         "rows": [{"start": codec.iso_utc(start + i * INTERVAL), "value": f"{(base + i) % 997}.25",
                   "status": "00"} for i in range(4)]}, meta))
    events.append(NewEvent(
        f"{stream}:{poll}:clock", "ClockChecked", 1,
        {"meterId": meter_id, "meterTime": codec.iso_utc(read_at + timedelta(seconds=2)),
         "gatewayTime": codec.iso_utc(read_at), "driftS": "2"}, meta))
    return stream, tuple(events)


# -- the local server ----------------------------------------------------------------------------


@asynccontextmanager
async def local_test_server() -> AsyncIterator[str]:
    """Start tests/cosmos_server/server.js on a free loopback port; yields its endpoint."""
    if not (SERVER_SCRIPT.parent / "node_modules").is_dir():
        raise StoreError(f"the local Cosmos test server is not installed: run `cd "
                         f"{SERVER_SCRIPT.parent} && npm ci`, or pass --endpoint")
    process: Process = await anyio.open_process(
        ["node", str(SERVER_SCRIPT), "--port", "0"], cwd=SERVER_SCRIPT.parent)
    try:
        assert process.stdout is not None
        buffer = b""
        with anyio.fail_after(20):
            while b"\n" not in buffer:
                buffer += await process.stdout.receive()
        line = buffer.decode().strip()
        if not line.startswith("cosmosdb-server ready "):
            raise StoreError(f"the local Cosmos test server did not start: {line}")
        yield line.split(" ")[-1]
    finally:
        process.terminate()
        with anyio.move_on_after(5):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


# -- layouts -------------------------------------------------------------------------------------

AppendAll = Callable[[Sequence[AppendRequest]], Awaitable[None]]


async def _measure(stats: CosmosStoreStats, append_all: AppendAll, meters: int, polls: int
                   ) -> LayoutFigures:
    warmup = [AppendRequest(stream, 0, new) for stream, new in
              (poll_events(m, 0) for m in range(meters))]
    await append_all(warmup)
    heads = {r.stream_id: len(r.events) for r in warmup}
    requests, items, charge, charged = (stats.http_requests, stats.items_written,
                                        stats.request_charge, stats.charged_responses)
    appends = events = 0
    started = time.perf_counter()
    for start in range(0, polls, meters):
        batch = []
        for n in range(start, min(start + meters, polls)):
            stream, new = poll_events(n % meters, 1 + n // meters)
            batch.append(AppendRequest(stream, heads[stream], new))
            heads[stream] += len(new)
            events += len(new)
        await append_all(batch)
        appends += len(batch)
    elapsed = time.perf_counter() - started
    requests = stats.http_requests - requests
    items = stats.items_written - items
    charged = stats.charged_responses - charged
    return LayoutFigures(
        appends=appends, events=events, elapsed_s=elapsed, events_per_s=events / elapsed,
        http_requests=requests, requests_per_append=requests / appends,
        items_written=items, items_written_per_event=items / events,
        request_charge_per_append=((stats.request_charge - charge) / appends) if charged else None,
    )


async def _commit_layout(config: CosmosConfig, meters: int, polls: int) -> LayoutFigures:
    async with await CosmosEventStore.open(config, create_if_missing=True) as store:
        async def append_all(requests: Sequence[AppendRequest]) -> None:
            for outcome in await store.append_batch(requests):
                if outcome.error is not None:
                    raise outcome.error
        try:
            return await _measure(store.stats, append_all, meters, polls)
        finally:
            await _drop_container(config)


async def _item_per_event_layout(config: CosmosConfig, meters: int, polls: int) -> LayoutFigures:
    """The baseline: each event its own item (id = zero-padded version), one batch per append."""
    stats = CosmosStoreStats()
    client = build_client(config, stats)
    try:
        with translate_errors(None):
            container = await ensure_container(client, config)

        async def append_one(request: AppendRequest) -> None:
            operations = []
            for offset, event in enumerate(request.events):
                version = request.expected_version + 1 + offset
                operations.append(("create", ({
                    "id": f"{version:010d}", "streamId": request.stream_id, "version": version,
                    **codec.event_to_dict(event), "eventId": event.event_id,
                },)))
            with translate_errors(request.stream_id):
                await container.execute_item_batch(operations, partition_key=request.stream_id)
            stats.items_written += len(operations)

        in_flight = anyio.CapacityLimiter(config.max_concurrent_appends)  # as the store does

        async def limited(request: AppendRequest) -> None:
            async with in_flight:
                await append_one(request)

        async def append_all(requests: Sequence[AppendRequest]) -> None:
            async with anyio.create_task_group() as tg:
                for request in requests:
                    tg.start_soon(limited, request)

        try:
            return await _measure(stats, append_all, meters, polls)
        finally:
            await _drop_container(config)
    finally:
        await client.close()


async def _drop_container(config: CosmosConfig) -> None:
    client = build_client(config, CosmosStoreStats())
    try:
        with translate_errors(None):
            await client.get_database_client(config.database).delete_container(config.container)
    finally:
        await client.close()


async def run_cosmos_bench(config: CosmosBenchConfig) -> CosmosBenchReport:
    if config.endpoint is None:
        os.environ.setdefault(LOCAL_KEY_ENV, _EMULATOR_KEY)
        async with local_test_server() as endpoint:
            local = CosmosBenchConfig(meters=config.meters, polls=config.polls, endpoint=endpoint,
                                      database=config.database, key_env=LOCAL_KEY_ENV,
                                      verify_tls=False)  # the local server's self-signed cert
            report = await _run(local)
        # The stand-in answers x-ms-request-charge: 1 for everything: a constant is no figure.
        unknown = {"request_charge_per_append": None}
        return replace(report, local_test_server=True, commit=replace(report.commit, **unknown),
                       checked=replace(report.checked, **unknown),
                       baseline=replace(report.baseline, **unknown))
    return await _run(config)


async def _run(config: CosmosBenchConfig) -> CosmosBenchReport:
    assert config.endpoint is not None

    def fresh(**overrides: Any) -> CosmosConfig:
        return CosmosConfig(endpoint=config.endpoint or "", database=config.database,
                            container=f"bench-{uuid.uuid4().hex[:10]}", key_env=config.key_env,
                            verify_tls=config.verify_tls, **overrides)

    baseline = await _item_per_event_layout(fresh(), config.meters, config.polls)
    commit = await _commit_layout(fresh(), config.meters, config.polls)
    checked = await _commit_layout(fresh(check_event_ids_across_streams=True), config.meters,
                                   min(config.polls, CHECKED_POLLS_CAP))
    return CosmosBenchReport(endpoint=config.endpoint, local_test_server=False,
                             meters=config.meters, events_per_poll=EVENTS_PER_POLL,
                             commit=commit, checked=checked, baseline=baseline)


def format_report(report: CosmosBenchReport) -> str:
    lines = [f"Cosmos DB store benchmark at {report.endpoint}"
             + (" (local test server)" if report.local_test_server else ""),
             f"{report.meters} meters, polls of {report.events_per_poll} events",
             f"{'layout':<36}{'events/s':>10}{'req/append':>12}{'items/event':>13}{'RU/append':>11}"]
    for name, f in (("one item per append", report.commit),
                    ("  + cross-stream id check (optional)", report.checked),
                    ("one item per event (baseline)", report.baseline)):
        ru = "-" if f.request_charge_per_append is None else f"{f.request_charge_per_append:.2f}"
        lines.append(f"{name:<36}{f.events_per_s:>10,.0f}{f.requests_per_append:>12.2f}"
                     f"{f.items_written_per_event:>13.3f}{ru:>11}")
    return "\n".join(lines)


def run_from_args(args: argparse.Namespace) -> int:
    """Entry point for `gateway bench store --backend cosmos` (uses --meters, --events, --json and,
    when the parser has them, --endpoint/--database/--key-env/--insecure-skip-tls-verify)."""
    endpoint = getattr(args, "endpoint", None) or os.environ.get("GATEWAY_COSMOS_ENDPOINT")
    config = CosmosBenchConfig(
        meters=args.meters,
        polls=max(1, -(-args.events // EVENTS_PER_POLL)),
        endpoint=endpoint,
        database=getattr(args, "database", None) or "meter-gateway-bench",
        key_env=getattr(args, "key_env", None) or DEFAULT_KEY_ENV,
        verify_tls=not getattr(args, "insecure_skip_tls_verify", False),
    )
    try:
        report = anyio.run(run_cosmos_bench, config)
    except StoreError as exc:
        print(f"gateway bench store: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report.to_json(), sort_keys=True) if args.json else format_report(report))
    return 0
