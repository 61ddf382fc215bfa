"""`gateway bench store` as a real subprocess, with tiny sizes: a functional check, not a timing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

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
