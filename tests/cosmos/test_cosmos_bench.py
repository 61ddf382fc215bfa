"""`gateway bench store --backend cosmos` figures that are counts, not timings: requests per append
counted on the wire and items written per event, for the product layout and the baseline layout."""
from __future__ import annotations

import pytest

from gateway.bench.cosmos import EVENTS_PER_POLL, CosmosBenchConfig, format_report, run_cosmos_bench

pytestmark = pytest.mark.anyio


async def test_bench_starts_the_local_server_and_counts_requests_and_items() -> None:
    report = await run_cosmos_bench(CosmosBenchConfig(meters=4, polls=12))
    figures = report.to_json()
    assert figures["local_test_server"] is True
    assert figures["appends"] == figures["checked_appends"] == figures["baseline_appends"] == 12
    assert figures["events"] == 12 * EVENTS_PER_POLL
    # Warm cache: one create per append; the optional cross-stream id query adds one request.
    assert figures["requests_per_append"] == 1.0
    assert figures["checked_requests_per_append"] == 2.0
    assert figures["baseline_requests_per_append"] == 1.0
    # One item per append against one item per event: 6x fewer items for a 6-event poll.
    assert figures["items_written_per_event"] == pytest.approx(1 / EVENTS_PER_POLL)
    assert figures["baseline_items_written_per_event"] == 1.0
    assert figures["items_written_ratio"] == pytest.approx(EVENTS_PER_POLL)
    # The local server sends a constant charge of 1: not reported as if it were a measurement.
    assert figures["request_charge_per_append"] is None
    assert figures["baseline_request_charge_per_append"] is None
    assert figures["events_per_s"] > 0 and figures["baseline_events_per_s"] > 0
    assert "one item per event (baseline)" in format_report(report)
