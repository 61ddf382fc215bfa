"""`gateway bench fleet`: runs a small fleet end to end and reports every figure the issue asks for,
as JSON (the figures themselves are not asserted: they depend on the machine)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_fleet_bench_reports_its_figures_and_the_baseline() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "bench", "fleet", "--meters", "6", "--latency-ms", "5",
         "--baseline-meters", "2", "--concurrency", "4", "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for key in ("meters_per_s", "cpu_s_per_poll", "p99_poll_s", "peak_rss_mb", "baseline_meters_per_s"):
        assert isinstance(report[key], float) and report[key] > 0, key
    assert report["failed_polls"] == 0 and report["meters"] == 6 and report["baseline_meters"] == 2
    expected_ratio = report["meters_per_s"] / report["baseline_meters_per_s"]
    assert abs(report["ratio"] - expected_ratio) <= 1e-3 * expected_ratio
