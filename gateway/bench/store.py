"""`gateway bench store`: the batched writer on a real backend against its schema's ceiling.

Synthetic polls go through ``BatchedWriter`` into a fresh store and, as baselines, into a bare
table by ``executemany``, into the store's own table (encoding included: the ceiling the schema
allows any writer, against which the headline ``ceiling_ratio`` is judged) and, when the optional
``eventsourcing`` package is installed, through its SQLite recorder as a reference event store.
What each figure means: docs/architecture.md, "Benchmarks".
"""
from __future__ import annotations

import gc
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from itertools import chain
from pathlib import Path
from typing import Any

import anyio.to_thread

from gateway.store import codec
from gateway.store.base import EventStore
from gateway.store.sqlite import ROWS_PER_INSERT
from gateway.store.model import EventMetadata, NewEvent
from gateway.history.writer import BatchedWriter

EVENTS_PER_POLL = 6
INTERVALS_PER_BLOCK = 16  # four hours of 15-minute load-profile values per poll
POLL_PERIOD = timedelta(minutes=15)
BENCH_YEAR = 2026
# The headline figure's target: the writer at >= 0.7 of the rate its own schema allows a writer
# that encodes (CEO decision: judged against the schema+encode ceiling, not a bare table).
TARGET_CEILING_RATIO = 0.7
_EPOCH = datetime(BENCH_YEAR, 1, 1, tzinfo=timezone.utc)
_REGISTERS = (
    ("1.0.1.8.0.255", "Wh", "active energy import"),
    ("1.0.2.8.0.255", "Wh", "active energy export"),
    ("1.0.3.8.0.255", "varh", "reactive energy import"),
    ("1.0.4.8.0.255", "varh", "reactive energy export"),
)


@dataclass(frozen=True, slots=True)
class Poll:
    """The events one poll of one meter produces, for one stream."""

    stream_id: str
    events: tuple[NewEvent, ...]


@dataclass(frozen=True, slots=True)
class BenchConfig:
    backend: str
    meters: int = 200
    events: int = 20_000
    batch: int = 500
    concurrent_flushes: int = 1  # BatchedWriter(max_concurrent_flushes=...)
    repeat: int = 3  # runs of (writer, baselines); the run with the median ceiling_ratio is reported

    def __post_init__(self) -> None:
        if min(self.meters, self.events, self.batch, self.concurrent_flushes, self.repeat) < 1:
            raise ValueError(
                "meters, events, batch, concurrent flushes and repeat must all be at least 1"
            )


@dataclass(frozen=True, slots=True)
class BenchReport:
    backend: str
    meters: int
    events: int  # measured events (whole polls)
    warmup_events: int
    batch: int
    concurrent_flushes: int
    runs: int
    elapsed_s: float
    events_per_s: float
    # Headline: events_per_s / schema_encode_ceiling_events_per_s, target >= TARGET_CEILING_RATIO.
    ceiling_ratio: float
    target_ceiling_ratio: float
    meets_target: bool
    schema_encode_ceiling_events_per_s: float  # encode + insert into the store's own table
    baseline_events_per_s: float  # raw insert of rows encoded beforehand
    ratio: float  # events_per_s / baseline_events_per_s
    baseline_incl_encode_events_per_s: float  # encoding the rows + raw insert
    ratio_incl_encode: float
    schema_baseline_events_per_s: float  # raw insert into the store's own constrained table
    schema_ceiling_ratio: float  # schema_baseline / baseline: the best ratio this schema allows
    schema_encode_ceiling_ratio: float  # (encode + insert into the store's table) / baseline
    # The `eventsourcing` library's SQLite recorder on the same events; None when not installed.
    eventsourcing_events_per_s: float | None
    ratio_vs_eventsourcing: float | None  # events_per_s / eventsourcing_events_per_s
    eventsourcing_note: str  # which recorder, version and pragmas; or why there is no figure
    appends: int
    flushes: int
    reads: int
    reads_per_append: float
    p50_append_ms: float
    p99_append_ms: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class BaselineTiming:
    encode_s: float
    insert_s: float  # into a bare table
    schema_insert_s: float  # into the store's own table, with its constraints
    eventsourcing_insert_s: float | None = None  # a reference library's recorder; None: not run
    eventsourcing_note: str = "no eventsourcing baseline for this backend"


@dataclass(frozen=True, slots=True)
class BenchBackend:
    """What the benchmark needs from a backend: a fresh store, and the raw-write baseline."""

    open_store: Callable[[Path], AbstractAsyncContextManager[EventStore]]
    # (warm-up polls, measured polls, batch size, work dir) → timing of the measured polls
    baseline: Callable[[Sequence[Poll], Sequence[Poll], int, Path], Awaitable[BaselineTiming]]


# ---- synthetic meter data ---------------------------------------------------------------------


def meter_stream(meter: int) -> str:
    return f"Meter:MTR{meter:06d}:{BENCH_YEAR}"


def make_poll(meter: int, poll: int) -> Poll:
    """Poll number ``poll`` of meter ``meter``: deterministic ids, so a re-run is idempotent."""
    stream_id = meter_stream(meter)
    read_at = _EPOCH + poll * POLL_PERIOD + timedelta(seconds=meter % 60)
    meta = EventMetadata(
        gateway_id="bench-gw-01",
        recorded_at=read_at + timedelta(milliseconds=350),
        correlation_id=f"poll-{meter:06d}-{poll:08d}",
    )
    base = 1_000_000 + poll * 250 + meter
    events: list[NewEvent] = []
    for index, (obis, unit, label) in enumerate(_REGISTERS):
        events.append(
            NewEvent(
                event_id=f"{stream_id}:{poll}:reg:{obis}",
                type="RegisterRead",
                schema_version=1,
                data={
                    "meterId": f"MTR{meter:06d}",
                    "obis": obis,
                    "description": label,
                    "value": f"{base * (index + 1)}.{poll % 1000:03d}",
                    "unit": unit,
                    "scaler": -3,
                    "status": "ok",
                    "readAt": codec.iso_utc(read_at),
                },
                metadata=meta,
            )
        )
    block_start = read_at - INTERVALS_PER_BLOCK * POLL_PERIOD
    events.append(
        NewEvent(
            event_id=f"{stream_id}:{poll}:intervals",
            type="IntervalsRecorded",
            schema_version=1,
            data={
                "meterId": f"MTR{meter:06d}",
                "obis": "1.0.99.1.0.255",
                "capturePeriodS": int(POLL_PERIOD.total_seconds()),
                "unit": "Wh",
                "intervals": [
                    {
                        "start": codec.iso_utc(block_start + i * POLL_PERIOD),
                        "value": f"{(base + i * 37) % 9973}.{i:03d}",
                        "status": "00",
                    }
                    for i in range(INTERVALS_PER_BLOCK)
                ],
            },
            metadata=meta,
        )
    )
    events.append(
        NewEvent(
            event_id=f"{stream_id}:{poll}:clock",
            type="ClockChecked",
            schema_version=1,
            data={
                "meterId": f"MTR{meter:06d}",
                "meterTime": codec.iso_utc(read_at + timedelta(seconds=(meter % 7) - 3)),
                "gatewayTime": codec.iso_utc(read_at),
                "driftS": str((meter % 7) - 3),
                "toleranceS": 10,
            },
            metadata=meta,
        )
    )
    return Poll(stream_id, tuple(events))


def synthetic_polls(meters: int, events: int) -> tuple[list[Poll], list[Poll]]:
    """(one warm-up poll per meter, then enough whole polls round-robin to cover ``events``)."""
    warmup = [make_poll(m, 0) for m in range(meters)]
    polls = -(-events // EVENTS_PER_POLL)
    measured = [make_poll(n % meters, 1 + n // meters) for n in range(polls)]
    return warmup, measured


# ---- SQLite backend ---------------------------------------------------------------------------


def _sqlite_backend() -> BenchBackend:
    from gateway.store.sqlite import SqliteEventStore

    @asynccontextmanager
    async def open_store(work_dir: Path) -> AsyncIterator[EventStore]:
        store = await SqliteEventStore.open(_fresh(work_dir / "writer.db"))
        try:
            yield store
        finally:
            await store.aclose()

    async def baseline(
        warmup: Sequence[Poll], measured: Sequence[Poll], batch: int, work_dir: Path
    ) -> BaselineTiming:
        bare = await anyio.to_thread.run_sync(
            _sqlite_raw_insert, _fresh(work_dir / "baseline.db"), warmup, measured, batch, _BARE_TABLE, 1
        )
        schema_path = _fresh(work_dir / "baseline-schema.db")
        # The store creates its own schema: the constraints measured are the ones in force.
        await (await SqliteEventStore.open(schema_path)).aclose()
        schema = await anyio.to_thread.run_sync(
            _sqlite_raw_insert, schema_path, warmup, measured, batch, None, ROWS_PER_INSERT
        )
        reference = await anyio.to_thread.run_sync(
            _eventsourcing_insert, work_dir / "baseline-eventsourcing.db", warmup, measured, batch
        )
        return BaselineTiming(
            encode_s=bare.encode_s, insert_s=bare.insert_s, schema_insert_s=schema.insert_s,
            eventsourcing_insert_s=reference.insert_s, eventsourcing_note=reference.note,
        )

    return BenchBackend(open_store=open_store, baseline=baseline)


_Row = tuple[str, int, str, str, int, str, str]


def _rows(polls: Sequence[Poll], versions: dict[str, int]) -> list[_Row]:
    """The columns the store keeps per event, encoded as the store encodes them."""
    rows: list[_Row] = []
    for poll in polls:
        version = versions.get(poll.stream_id, 0)
        for event in poll.events:
            version += 1
            rows.append(
                (
                    poll.stream_id,
                    version,
                    event.event_id,
                    event.type,
                    event.schema_version,
                    codec.dumps(event.data),
                    codec.dumps(codec.metadata_to_dict(event.metadata)),
                )
            )
        versions[poll.stream_id] = version
    return rows


_BARE_TABLE = (
    "CREATE TABLE events (stream_id TEXT, version INTEGER, event_id TEXT, type TEXT,"
    " schema_version INTEGER, data TEXT, metadata TEXT)"
)


@dataclass(frozen=True, slots=True)
class _RawTiming:
    encode_s: float
    insert_s: float


def _sqlite_raw_insert(
    path: Path, warmup: Sequence[Poll], measured: Sequence[Poll], batch: int, create: str | None,
    rows_per_statement: int,
) -> _RawTiming:
    """The rows into ``events`` of ``path``, created by ``create`` (None: the table exists already),
    one transaction per ``batch`` rows: ``executemany`` with ``rows_per_statement`` 1, else
    multi-row INSERTs of that many rows."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        if create is not None:
            conn.execute(create)
        insert = (
            "INSERT INTO events (stream_id, version, event_id, type, schema_version, data, metadata)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)"
        )

        many = insert + ", (?, ?, ?, ?, ?, ?, ?)" * (rows_per_statement - 1)

        def write(all_rows: list[_Row]) -> None:
            for start in range(0, len(all_rows), batch):
                rows = all_rows[start : start + batch]
                conn.execute("BEGIN")
                if rows_per_statement == 1:
                    conn.executemany(insert, rows)
                else:
                    whole = len(rows) - len(rows) % rows_per_statement
                    for first in range(0, whole, rows_per_statement):
                        conn.execute(many, tuple(chain.from_iterable(rows[first : first + rows_per_statement])))
                    conn.executemany(insert, rows[whole:])
                conn.execute("COMMIT")

        versions: dict[str, int] = {}
        write(_rows(warmup, versions))
        started = time.perf_counter()
        rows = _rows(measured, versions)
        encoded = time.perf_counter()
        write(rows)
        return _RawTiming(encode_s=encoded - started, insert_s=time.perf_counter() - encoded)
    finally:
        conn.close()


@dataclass(frozen=True, slots=True)
class _ReferenceTiming:
    insert_s: float | None
    note: str


_NO_EVENTSOURCING = (
    "eventsourcing not installed (optional: pip install 'meter-gateway[bench]'); no reference figure"
)


def _eventsourcing_insert(
    path: Path, warmup: Sequence[Poll], measured: Sequence[Poll], batch: int
) -> _ReferenceTiming:
    """The same events through the ``eventsourcing`` library's ``SQLiteApplicationRecorder`` (the
    recorder its applications use on SQLite: a global order like the store's ``position``) into a
    fresh file with the library's default pragmas: one ``insert_events`` call per ``batch`` events,
    stream id and version as originator id and version, the type as topic and the data as the store
    encodes it as state. Only the measured ``insert_events`` calls are timed."""
    try:
        from importlib.metadata import version

        from eventsourcing.persistence import StoredEvent
        from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore
    except ImportError:
        return _ReferenceTiming(insert_s=None, note=_NO_EVENTSOURCING)

    def stored(polls: Sequence[Poll], versions: dict[str, int]) -> list[Any]:
        events = []
        for poll in polls:
            at = versions.get(poll.stream_id, 0)
            for event in poll.events:
                at += 1
                events.append(
                    StoredEvent(
                        originator_id=poll.stream_id,
                        originator_version=at,
                        topic=event.type,
                        state=codec.dumps(event.data).encode(),
                    )
                )
            versions[poll.stream_id] = at
        return events

    def write(recorder: Any, events: list[Any]) -> None:
        for start in range(0, len(events), batch):
            recorder.insert_events(events[start : start + batch])

    datastore = SQLiteDatastore(str(_fresh(path)), originator_id_type="text")
    try:
        recorder = SQLiteApplicationRecorder(datastore)
        recorder.create_table()
        versions: dict[str, int] = {}
        write(recorder, stored(warmup, versions))
        events = stored(measured, versions)
        # Built up front like the other baselines' input: kept out of the collector's view while
        # timed (run_store_bench unfreezes everything at the end).
        gc.freeze()
        with datastore.transaction(commit=False) as cursor:
            cursor.execute("PRAGMA journal_mode")
            journal = cursor.fetchone()[0]
            cursor.execute("PRAGMA synchronous")
            synchronous = cursor.fetchone()[0]
        started = time.perf_counter()
        write(recorder, events)
        insert_s = time.perf_counter() - started
    finally:
        datastore.close()
    note = (
        f"eventsourcing {version('eventsourcing')} {type(recorder).__name__}, default pragmas"
        f" (journal_mode={journal}, synchronous={synchronous})"
    )
    return _ReferenceTiming(insert_s=insert_s, note=note)


def _fresh(path: Path) -> Path:
    """A store file that does not exist yet: the benchmark never writes into an existing store."""
    for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if candidate.exists():
            raise FileExistsError(f"{candidate} already exists; the benchmark needs a fresh store")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


BACKENDS: dict[str, Callable[[], BenchBackend]] = {
    "sqlite": _sqlite_backend,
}
"""Backend name → factory for this harness: a new backend is one function and one entry here."""


# ---- the benchmark ----------------------------------------------------------------------------


async def run_store_bench(config: BenchConfig, work_dir: Path) -> BenchReport:
    """Run the benchmark ``config.repeat`` times in ``work_dir`` (one fresh sub-directory per run,
    which must not exist yet); the run with the median headline ``ceiling_ratio`` is reported,
    since the box may be busy with other work while it runs."""
    try:
        backend = BACKENDS[config.backend]()
    except KeyError:
        raise ValueError(
            f"unknown backend {config.backend!r}; choose from {', '.join(sorted(BACKENDS))}"
        ) from None
    warmup, measured = synthetic_polls(config.meters, config.events)
    reports = []
    with _input_out_of_gc():
        for run in range(config.repeat):
            run_dir = work_dir if config.repeat == 1 else work_dir / f"run-{run + 1}"
            reports.append(await _one_run(config, backend, warmup, measured, run_dir))
    reports.sort(key=lambda report: report.ceiling_ratio)
    return reports[len(reports) // 2]


@contextmanager
def _input_out_of_gc() -> Iterator[None]:
    """Keep the synthetic input (every poll of the run, built up front) out of the garbage
    collector's view while measuring. A gateway never holds a whole run's events at once; here
    each collection would traverse them all and charge it to whichever phase (writer or baseline)
    happened to trigger it. Objects the phases create are collected as usual."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


async def _one_run(
    config: BenchConfig,
    backend: BenchBackend,
    warmup: Sequence[Poll],
    measured: Sequence[Poll],
    work_dir: Path,
) -> BenchReport:
    measured_events = sum(len(p.events) for p in measured)
    async with backend.open_store(work_dir) as store:
        async with BatchedWriter(
            store, max_batch_events=config.batch, max_concurrent_flushes=config.concurrent_flushes
        ) as writer:
            for handle in [await writer.enqueue(p.stream_id, p.events) for p in warmup]:
                await handle
            writer.metrics.reset()
            reads_before, appends_before = store.stats.reads, store.stats.appends
            started = time.perf_counter()
            handles = [await writer.enqueue(p.stream_id, p.events) for p in measured]
        # Leaving the writer flushed the tail at once instead of waiting max_delay_s.
        elapsed = time.perf_counter() - started
        for handle in handles:
            handle.result()  # a failed append fails the benchmark loudly
        reads = store.stats.reads - reads_before
        appends = store.stats.appends - appends_before

    baseline = await backend.baseline(warmup, measured, config.batch, work_dir)
    events_per_s = measured_events / elapsed
    baseline_events_per_s = measured_events / baseline.insert_s
    incl_encode_events_per_s = measured_events / (baseline.encode_s + baseline.insert_s)
    schema_events_per_s = measured_events / baseline.schema_insert_s
    ceiling_events_per_s = measured_events / (baseline.encode_s + baseline.schema_insert_s)
    ceiling_ratio = events_per_s / ceiling_events_per_s
    reference_events_per_s = (
        None if baseline.eventsourcing_insert_s is None
        else measured_events / baseline.eventsourcing_insert_s
    )
    return BenchReport(
        backend=config.backend,
        meters=config.meters,
        events=measured_events,
        warmup_events=sum(len(p.events) for p in warmup),
        batch=config.batch,
        concurrent_flushes=config.concurrent_flushes,
        runs=config.repeat,
        elapsed_s=elapsed,
        events_per_s=events_per_s,
        ceiling_ratio=ceiling_ratio,
        target_ceiling_ratio=TARGET_CEILING_RATIO,
        meets_target=ceiling_ratio >= TARGET_CEILING_RATIO,
        schema_encode_ceiling_events_per_s=ceiling_events_per_s,
        baseline_events_per_s=baseline_events_per_s,
        ratio=events_per_s / baseline_events_per_s,
        baseline_incl_encode_events_per_s=incl_encode_events_per_s,
        ratio_incl_encode=events_per_s / incl_encode_events_per_s,
        schema_baseline_events_per_s=schema_events_per_s,
        schema_ceiling_ratio=schema_events_per_s / baseline_events_per_s,
        schema_encode_ceiling_ratio=baseline.insert_s / (baseline.encode_s + baseline.schema_insert_s),
        eventsourcing_events_per_s=reference_events_per_s,
        ratio_vs_eventsourcing=(
            None if reference_events_per_s is None else events_per_s / reference_events_per_s
        ),
        eventsourcing_note=baseline.eventsourcing_note,
        appends=appends,
        flushes=writer.metrics.flushes,
        reads=reads,
        reads_per_append=reads / appends if appends else 0.0,
        p50_append_ms=writer.metrics.latency_percentile_ms(50) or 0.0,
        p99_append_ms=writer.metrics.latency_percentile_ms(99) or 0.0,
    )


def format_report(report: BenchReport) -> str:
    verdict = "meets" if report.meets_target else "BELOW"
    if report.eventsourcing_events_per_s is None or report.ratio_vs_eventsourcing is None:
        reference = [("eventsourcing recorder", report.eventsourcing_note)]
    else:
        reference = [
            ("eventsourcing recorder", f"{report.eventsourcing_events_per_s:,.0f} events/s"),
            ("ratio writer/eventsourcing", f"{report.ratio_vs_eventsourcing:.2f}"),
            ("  (recorder)", report.eventsourcing_note),
        ]
    rows = [
        ("backend", report.backend),
        ("meters", str(report.meters)),
        ("events (measured)", f"{report.events} (+{report.warmup_events} warm-up)"),
        ("batch (events)", str(report.batch)),
        ("concurrent flushes", str(report.concurrent_flushes)),
        ("runs (median reported)", str(report.runs)),
        ("writer", f"{report.events_per_s:,.0f} events/s"),
        ("ceiling (encode + insert, store schema)", f"{report.schema_encode_ceiling_events_per_s:,.0f} events/s"),
        (
            "ceiling_ratio writer/ceiling",
            f"{report.ceiling_ratio:.2f} ({verdict} target >= {report.target_ceiling_ratio:.2f})",
        ),
        *reference,
        ("baseline (raw insert)", f"{report.baseline_events_per_s:,.0f} events/s"),
        ("ratio writer/raw insert", f"{report.ratio:.2f}"),
        ("baseline (encode + insert)", f"{report.baseline_incl_encode_events_per_s:,.0f} events/s"),
        ("ratio writer/encode + insert", f"{report.ratio_incl_encode:.2f}"),
        ("baseline (insert, store schema)", f"{report.schema_baseline_events_per_s:,.0f} events/s"),
        ("ceiling: store schema/raw insert", f"{report.schema_ceiling_ratio:.2f}"),
        ("ceiling incl. encoding", f"{report.schema_encode_ceiling_ratio:.2f}"),
        ("appends / flushes", f"{report.appends} / {report.flushes}"),
        ("store reads per append", f"{report.reads_per_append:.3f}"),
        ("append latency p50", f"{report.p50_append_ms:.1f} ms"),
        ("append latency p99", f"{report.p99_append_ms:.1f} ms"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
