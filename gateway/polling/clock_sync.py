"""Clock synchronisation policy: given a clock reading and ``[clock_sync]``, what to do.

Pure: ``decide`` says "none" (off, or within threshold), "refuse" (drift beyond ``max_step_s``: a
tamper or fault signal, never corrected silently), "defer" (too near an interval boundary, or the
correction would cross one: no interval may be split, doubled or lost; the next poll tries again)
or "sync". The clock step (``gateway.polling.meter_reading``) carries it out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta, tzinfo
from typing import Literal

from drivers.readings import ClockReading
from gateway.config.clock_sync import ClockSyncConfig

# A set clock read again must be this close to the gateway's UTC to count as verified.
VERIFY_TOLERANCE_S = 2.0


@dataclass(frozen=True, slots=True)
class SyncDecision:
    kind: Literal["none", "refuse", "defer", "sync"]
    reason: str = ""


def decide(reading: ClockReading, policy: ClockSyncConfig, meter_tz: tzinfo | None) -> SyncDecision:
    drift = reading.offset.total_seconds()
    if not policy.enabled:
        return SyncDecision("none", "clock_sync is off")
    if abs(drift) <= policy.threshold_s:
        return SyncDecision("none", f"drift {drift:+.1f} s within threshold {policy.threshold_s:g} s")
    if abs(drift) > policy.max_step_s:
        return SyncDecision("refuse", f"drift {drift:+.1f} s beyond max_step_s {policy.max_step_s:g} s")
    local_offset = _local_offset(reading, meter_tz)
    period = policy.period_s
    # Interval boundaries are on the meter's local wall clock (a 15-min profile captures at :00,
    # :15, ... local); the gateway's time is placed on the same wall clock.
    meter_s = reading.meter_time.timestamp() + local_offset
    true_s = reading.gateway_time.timestamp() + local_offset
    if math.floor(meter_s / period) != math.floor(true_s / period):
        return SyncDecision("defer", "the correction would cross an interval boundary")
    nearest = min(_to_boundary(meter_s, period), _to_boundary(true_s, period))
    if nearest < policy.safe_window_s:
        return SyncDecision("defer", f"{nearest:.0f} s from an interval boundary (safe window {policy.safe_window_s:g} s)")
    return SyncDecision("sync", f"drift {drift:+.1f} s")


def verified(after: ClockReading) -> bool:
    return abs(after.offset.total_seconds()) <= VERIFY_TOLERANCE_S


def _to_boundary(seconds: float, period: int) -> float:
    into = seconds % period
    return min(into, period - into)


def _local_offset(reading: ClockReading, meter_tz: tzinfo | None) -> float:
    if reading.deviation_min is not None:
        return -reading.deviation_min * 60.0  # COSEM: UTC = local + deviation
    if meter_tz is not None:
        offset = reading.meter_time.astimezone(meter_tz).utcoffset()
        return (offset or timedelta(0)).total_seconds()
    return 0.0
