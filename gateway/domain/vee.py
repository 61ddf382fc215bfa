"""Validation rules (the V of a utility's VEE) for readings before they become stored truth.

Pure functions returning a typed ``Verdict``; the normalizer (``gateway.domain.normalize``) applies them and
turns a suspect verdict into a ``SuspectReadingFlagged`` event instead of a ``RegisterRead`` or an
interval row. Suspect readings therefore never move the meter state's last good value, and the next
reading is checked against the last *good* one.

Rules:
* a cumulative energy counter (register or load-profile channel) must not go backwards, and must not
  rise faster than the meter's configured maximum power allows over the elapsed time, plus a
  tolerance (relative, for meter clock jitter, and one resolution step of the register, since a
  kWh-resolution register can jump by a whole 1000 Wh at once);
* an interval energy value (energy over one capture period) must lie in 0..max power x period;
* a load-profile row whose status byte has a "bad" bit is suspect as a whole.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final

# IDIS / DSMR "AMR profile status" byte (0.0.96.10.1.255) captured with each load-profile row
# (IDIS package 2 object list; DSMR P3 companion standard, "AMR profile status code"; cross-checked
# against the bit map of the Open Smart Grid Platform's AmrProfileStatusCodeHelper, where
# DATA_NOT_VALID + POWER_DOWN = 0x84):
# bit 0 critical error, bit 1 clock invalid, bit 2 data not valid, bit 3 daylight saving active,
# bit 5 clock adjusted, bit 7 power down; bits 4 and 6 unused.
STATUS_CRITICAL_ERROR: Final[int] = 0x01
STATUS_CLOCK_INVALID: Final[int] = 0x02
STATUS_DATA_NOT_VALID: Final[int] = 0x04
STATUS_DAYLIGHT_SAVING: Final[int] = 0x08
STATUS_CLOCK_ADJUSTED: Final[int] = 0x20
STATUS_POWER_DOWN: Final[int] = 0x80

STATUS_FLAGS: Final[dict[int, str]] = {
    STATUS_CRITICAL_ERROR: "critical error",
    STATUS_CLOCK_INVALID: "clock invalid",
    STATUS_DATA_NOT_VALID: "data not valid",
    STATUS_DAYLIGHT_SAVING: "daylight saving",
    STATUS_CLOCK_ADJUSTED: "clock adjusted",
    STATUS_POWER_DOWN: "power down",
}

# Bad by default: the meter itself says the values or their time stamp cannot be trusted.
# Power down, clock adjusted and DST are kept as information on the stored row: an interval with a
# power cut holds the energy that was really measured (less than a full interval's), and a clock
# adjustment only makes the interval shorter or longer. Utilities that estimate such intervals set
# ``VeeRules.bad_status_mask`` to include STATUS_POWER_DOWN.
DEFAULT_BAD_STATUS_MASK: Final[int] = STATUS_CRITICAL_ERROR | STATUS_CLOCK_INVALID | STATUS_DATA_NOT_VALID

_SECONDS_PER_HOUR: Final = Decimal(3600)


@dataclass(frozen=True, slots=True)
class VeeRules:
    bad_status_mask: int = DEFAULT_BAD_STATUS_MASK
    rate_tolerance: Decimal = Decimal("0.02")  # relative slack on max power x elapsed time

    def __post_init__(self) -> None:
        if not 0 <= self.bad_status_mask <= 0xFF:
            raise ValueError(f"bad_status_mask must be a status byte mask 0..0xFF, got {self.bad_status_mask}")
        if not isinstance(self.rate_tolerance, Decimal) or self.rate_tolerance < 0:
            raise ValueError(f"rate_tolerance must be a non-negative Decimal, got {self.rate_tolerance!r}")


@dataclass(frozen=True, slots=True)
class Verdict:
    """``ok`` or suspect with the reason, phrased for the operator reading ``gateway status``."""

    ok: bool
    reason: str = ""

    def __post_init__(self) -> None:
        if self.ok == bool(self.reason):
            raise ValueError("a good verdict has no reason and a suspect one must have one")


GOOD: Final = Verdict(True)


def suspect(reason: str) -> Verdict:
    return Verdict(False, reason)


def seconds(delta: timedelta) -> Decimal:
    """A timedelta as exact Decimal seconds (no float on the way)."""
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return Decimal(micros).scaleb(-6)


def status_names(status: int) -> tuple[str, ...]:
    """Names of the set bits of an AMR profile status byte (unknown bits as "bit N")."""
    names = []
    for bit in range(8):
        mask = 1 << bit
        if status & mask:
            names.append(STATUS_FLAGS.get(mask, f"bit {bit}"))
    return tuple(names)


def check_status(status: int, rules: VeeRules) -> Verdict:
    bad = status & rules.bad_status_mask
    if not bad:
        return GOOD
    return suspect(f"status 0x{status:02X} ({', '.join(status_names(bad))})")


def max_energy(max_power_w: Decimal, elapsed_s: Decimal, resolution: Decimal, rules: VeeRules) -> Decimal:
    """Largest energy (Wh, varh, VAh) the meter can count in ``elapsed_s`` at its maximum power."""
    return max_power_w * elapsed_s / _SECONDS_PER_HOUR * (1 + rules.rate_tolerance) + resolution


def check_counter_step(
    previous_time: datetime,
    previous_value: Decimal,
    time: datetime,
    value: Decimal,
    *,
    unit: str,
    max_power_w: Decimal,
    resolution: Decimal,
    rules: VeeRules,
) -> Verdict:
    """A cumulative counter from its last good value (at ``previous_time``) to ``value`` at ``time``.

    ``time`` must be later than ``previous_time``; a reading of the same or an older capture is not
    a step (the caller decides what a repeat means).
    """
    elapsed = seconds(time - previous_time)
    if elapsed <= 0:
        raise ValueError(f"counter step needs a later time: {previous_time} -> {time}")
    if value < previous_value:
        return suspect(
            f"cumulative register went backwards: {value} {unit} after {previous_value} {unit}"
            f" at {previous_time.isoformat()}"
        )
    limit = max_energy(max_power_w, elapsed, resolution, rules)
    rise = value - previous_value
    if rise > limit:
        return suspect(
            f"rose {rise} {unit} in {elapsed} s, more than max power {max_power_w} W allows"
            f" ({limit.quantize(Decimal('0.001'))} {unit})"
        )
    return GOOD


def check_interval_energy(
    energy: Decimal,
    period_s: int,
    *,
    unit: str,
    max_power_w: Decimal,
    resolution: Decimal,
    rules: VeeRules,
) -> Verdict:
    """Energy recorded for one capture period (an interval value, not a counter)."""
    if energy < 0:
        return suspect(f"interval energy is negative: {energy} {unit}")
    limit = max_energy(max_power_w, Decimal(period_s), resolution, rules)
    if energy > limit:
        return suspect(
            f"interval energy {energy} {unit} in {period_s} s exceeds max power {max_power_w} W"
            f" ({limit.quantize(Decimal('0.001'))} {unit})"
        )
    return GOOD


__all__ = [
    "DEFAULT_BAD_STATUS_MASK", "GOOD", "STATUS_CLOCK_ADJUSTED", "STATUS_CLOCK_INVALID",
    "STATUS_CRITICAL_ERROR", "STATUS_DATA_NOT_VALID", "STATUS_DAYLIGHT_SAVING", "STATUS_FLAGS",
    "STATUS_POWER_DOWN", "Verdict", "VeeRules", "check_counter_step", "check_interval_energy",
    "check_status", "max_energy", "seconds", "status_names", "suspect",
]
