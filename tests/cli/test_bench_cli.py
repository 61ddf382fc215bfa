"""`gateway bench store` as a real subprocess, with tiny sizes: a functional check, not a timing."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from gateway.bench.store import TARGET_CEILING_RATIO, BenchConfig, format_report, run_store_bench
from gateway.store.sqlite import SqliteEventStore
from tests.cli import run_gateway


@pytest.mark.slow
@pytest.mark.anyio
async def test_bench_store_json_reports_figures_and_stores_every_event(tmp_path: Path) -> None:
    work = tmp_path / "bench"
    done = run_gateway(
        "bench", "store", "--backend", "sqlite", "--meters", "3", "--events", "60",
        "--json", "--db", str(work), "--repeat", "1", timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for key in (
        "events_per_s", "baseline_events_per_s", "ratio", "baseline_incl_encode_events_per_s",
        "ratio_incl_encode", "p50_append_ms", "p99_append_ms", "schema_baseline_events_per_s",
        "schema_ceiling_ratio", "schema_encode_ceiling_ratio",
    ):
        assert isinstance(report[key], float) and report[key] > 0, key
    assert report["reads_per_append"] == 0
    assert (report["meters"], report["events"], report["batch"]) == (3, 60, 500)
    expected_ratio = report["events_per_s"] / report["baseline_events_per_s"]
    assert report["ratio"] == pytest.approx(expected_ratio)
    # ratio is against the raw insert alone: encoding the baseline's rows is timed apart from it.
    assert report["baseline_incl_encode_events_per_s"] < report["baseline_events_per_s"]
    assert report["ratio_incl_encode"] == pytest.approx(
        report["events_per_s"] / report["baseline_incl_encode_events_per_s"]
    )
    assert report["schema_ceiling_ratio"] == pytest.approx(
        report["schema_baseline_events_per_s"] / report["baseline_events_per_s"]
    )
    # (encode + insert into the store's table) against the bare insert, from the timings reported:
    # per event, encode = 1/incl - 1/bare and the constrained insert = 1/schema.
    bare, incl = report["baseline_events_per_s"], report["baseline_incl_encode_events_per_s"]
    schema = report["schema_baseline_events_per_s"]
    assert report["schema_encode_ceiling_ratio"] == pytest.approx((1 / bare) / (1 / incl - 1 / bare + 1 / schema))
    assert report["appends"] > 0

    # Headline: the writer against encode + insert into its own table, from the timings reported.
    assert isinstance(report["schema_encode_ceiling_events_per_s"], float)
    assert report["schema_encode_ceiling_events_per_s"] == pytest.approx(1 / (1 / incl - 1 / bare + 1 / schema))
    assert report["ceiling_ratio"] == pytest.approx(
        report["events_per_s"] / report["schema_encode_ceiling_events_per_s"]
    )
    assert report["target_ceiling_ratio"] == TARGET_CEILING_RATIO == 0.7
    assert report["meets_target"] is (report["ceiling_ratio"] >= report["target_ceiling_ratio"])

    # The eventsourcing recorder baseline: a figure when the package is installed (the test extra
    # has it), null with a note otherwise.
    if importlib.util.find_spec("eventsourcing") is not None:
        assert isinstance(report["eventsourcing_events_per_s"], float)
        assert report["eventsourcing_events_per_s"] > 0
        assert report["ratio_vs_eventsourcing"] == pytest.approx(
            report["events_per_s"] / report["eventsourcing_events_per_s"]
        )
        assert "SQLiteApplicationRecorder" in report["eventsourcing_note"]
        # Same streams and versions as the writer, into a fresh file of its own.
        assert (work / "baseline-eventsourcing.db").exists()
    else:
        assert report["eventsourcing_events_per_s"] is None
        assert report["ratio_vs_eventsourcing"] is None
        assert "not installed" in report["eventsourcing_note"]

    # 1 warm-up poll per meter + 60/6 = 10 measured polls round-robin: 5, 4, 4 polls of 6 events.
    store = await SqliteEventStore.open(work / "writer.db")
    try:
        heads = {info.stream_id: info.head for info in await store.list_streams("Meter:")}
    finally:
        await store.aclose()
    assert sorted(heads.values()) == [24, 24, 30]
    assert sum(heads.values()) == 60 + report["warmup_events"]


@pytest.mark.slow
def test_bench_store_refuses_to_reuse_a_store(tmp_path: Path) -> None:
    # The default 3 runs each write into a sub-directory of their own.
    (tmp_path / "run-1").mkdir()
    (tmp_path / "run-1" / "writer.db").write_bytes(b"")
    done = run_gateway("bench", "store", "--meters", "1", "--events", "6", "--db", str(tmp_path), timeout=120)
    assert done.returncode == 1
    assert "already exists" in done.stderr


@pytest.mark.slow
def test_bench_store_unknown_backend_is_a_usage_error() -> None:
    done = run_gateway("bench", "store", "--backend", "nosuch", timeout=120)
    assert done.returncode == 2
    assert "invalid choice: 'nosuch'" in done.stderr
    assert "'cosmos'" in done.stderr and "'sqlite'" in done.stderr


@pytest.mark.anyio
async def test_bench_store_runs_without_eventsourcing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Not a runtime dependency: without it the reference figures are null, with a note saying why.
    for name in [m for m in sys.modules if m == "eventsourcing" or m.startswith("eventsourcing.")]:
        monkeypatch.delitem(sys.modules, name)
    for name in ("eventsourcing", "eventsourcing.persistence", "eventsourcing.sqlite"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    report = await run_store_bench(BenchConfig(backend="sqlite", meters=2, events=24, repeat=1), tmp_path)
    figures = report.to_json()
    assert figures["eventsourcing_events_per_s"] is None and figures["ratio_vs_eventsourcing"] is None
    assert "not installed" in figures["eventsourcing_note"]
    assert figures["ceiling_ratio"] > 0 and isinstance(figures["meets_target"], bool)
    assert not (tmp_path / "baseline-eventsourcing.db").exists()
    text = format_report(report)
    assert "ceiling_ratio writer/ceiling" in text and "not installed" in text


def test_bench_store_eventsourcing_baseline_stores_the_same_events(tmp_path: Path) -> None:
    pytest.importorskip("eventsourcing")
    from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

    from gateway.bench.store import _eventsourcing_insert, synthetic_polls
    from gateway.store import codec

    warmup, measured = synthetic_polls(3, 60)
    timing = _eventsourcing_insert(tmp_path / "es.db", warmup, measured, 500)
    assert timing.insert_s is not None and timing.insert_s > 0
    datastore = SQLiteDatastore(str(tmp_path / "es.db"), originator_id_type="text")
    try:
        recorder = SQLiteApplicationRecorder(datastore)
        stored = recorder.select_events(measured[0].stream_id)
        assert recorder.max_notification_id() == 60 + 3 * 6
    finally:
        datastore.close()
    # Warm-up poll then 4 or 5 measured polls, versions 1.. as the store numbers them.
    assert [e.originator_version for e in stored] == list(range(1, len(stored) + 1))
    first = measured[0].events[0]
    assert stored[6].topic == first.type
    assert stored[6].state == codec.dumps(first.data).encode()
