"""``[clock_sync]``: whether and how the gateway corrects a meter's clock, per fleet and per meter.

The fleet's ``[clock_sync]`` table sets the defaults; a meter's ``clock_sync`` table overrides any of
its keys. Read by ``gateway.config.load``; the policy itself is ``gateway.polling.clock_sync``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from gateway.config.reader import Table

ClockSyncMethod = Literal["set", "shift_time"]
# adjust_to_quarter is not offered: it is meant to be invoked at a quarter hour, which is exactly
# where the safe window forbids touching a clock.
CLOCK_SYNC_METHODS: tuple[ClockSyncMethod, ...] = ("set", "shift_time")
CLOCK_SYNC_KEYS = ("enabled", "threshold_s", "max_step_s", "safe_window_s", "period_s", "method")
SHIFT_TIME_LIMIT_S = 900  # the clock's shift_time takes -900..900 s (Blue Book 4.5.1)


@dataclass(frozen=True, slots=True)
class ClockSyncConfig:
    """enabled: correct at all (default off). threshold_s: drift above which a clock is corrected.
    max_step_s: drift above which it is refused and flagged instead (a tamper or fault signal).
    safe_window_s / period_s: never set within safe_window_s of a boundary of the capture period,
    nor across one, so that no interval is split, doubled or lost. method: "set" writes clock
    attribute 2, "shift_time" calls clock method 6."""

    enabled: bool = False
    threshold_s: float = 10.0
    max_step_s: float = 300.0
    safe_window_s: float = 60.0
    period_s: int = 900
    method: ClockSyncMethod = "set"


DEFAULT_CLOCK_SYNC = ClockSyncConfig()


def read_clock_sync(parent: Table, base: ClockSyncConfig, key: str = "clock_sync") -> ClockSyncConfig | None:
    """The ``key`` table of ``parent`` over ``base`` (absent keys keep base's values); None after
    an issue was recorded."""
    if not parent.has(key):
        return base
    table = parent.table(key, CLOCK_SYNC_KEYS)
    if table is None:
        return None
    enabled = table.boolean("enabled", base.enabled)
    threshold = table.number("threshold_s", base.threshold_s)
    max_step = table.number("max_step_s", base.max_step_s)
    window = table.number("safe_window_s", base.safe_window_s, positive=False)
    period = table.integer("period_s", base.period_s, lo=60, hi=86_400)
    method = table.choice("method", CLOCK_SYNC_METHODS, base.method)
    if enabled is None or threshold is None or max_step is None or window is None or period is None or method is None:
        return None
    config = replace(base, enabled=enabled, threshold_s=threshold, max_step_s=max_step, safe_window_s=window,
                     period_s=period, method=method)
    ok = True
    if config.max_step_s <= config.threshold_s:
        table.ctx.add(table.key("max_step_s"), f"must be greater than threshold_s ({config.threshold_s:g}), "
                      f"got {config.max_step_s:g}: no drift could ever be corrected")
        ok = False
    if config.max_step_s + 2 * config.safe_window_s >= config.period_s:
        table.ctx.add(table.key("max_step_s"), f"max_step_s + 2 x safe_window_s must stay below period_s "
                      f"({config.period_s}): a larger step always crosses an interval boundary")
        ok = False
    if config.method == "shift_time" and config.max_step_s > SHIFT_TIME_LIMIT_S:
        table.ctx.add(table.key("max_step_s"), f"method 'shift_time' moves at most {SHIFT_TIME_LIMIT_S} s")
        ok = False
    return config if ok else None
