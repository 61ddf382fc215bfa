"""Tests of the sans-IO decoding layer (drivers.decode) on real meter traces copied into fixtures/traces."""
from __future__ import annotations

from pathlib import Path

from drivers.decode.tracefile import TraceFile, load_trace

TRACES = Path(__file__).resolve().parents[2] / "fixtures" / "traces"


def trace(name: str) -> TraceFile:
    return load_trace(TRACES / name)
