"""`gateway bench projections` (small sizes): the report adds up; figures themselves are not asserted."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from gateway.bench.projections import register_bench


def test_bench_projections_reports_throughput_and_burst_lag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser(prog="gateway bench")
    register_bench(parser.add_subparsers())
    args = parser.parse_args(["projections", "--events", "600", "--burst", "300", "--meters", "10",
                              "--batch", "100", "--json", "--db", str(tmp_path)])
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["events"] == 600 and report["burst_events"] == 300
    # The engine was idle during the burst: every projection starts the whole burst behind.
    assert report["burst_events_behind_at_start"] == 300
    assert report["view_applications"] > report["events"]  # three projections, several targets
    assert report["events_per_s"] > 0 and report["baseline_events_per_s"] > 0
    assert report["ratio"] == pytest.approx(report["events_per_s"] / report["baseline_events_per_s"],
                                            rel=0.01)
    # A second run refuses to reuse the store it would measure.
    assert args.func(args) == 1
