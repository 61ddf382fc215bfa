"""What `gateway run` does with its config file on SIGHUP (`systemctl reload meter-gateway`).

The file is read and checked again as at start. A config that is invalid, or that changes what the
running gateway cannot swap under its feet (``[store]``, ``gateway_id``), is refused with the reason
and the gateway goes on with the config it runs; nothing stops. Otherwise the new fleet replaces the
old one between polls: the polls in flight finish under the old config, then every meter of the new
one is scheduled (added meters start, removed ones stop, changed ones poll with their new settings).
"""
from __future__ import annotations

from pathlib import Path

from gateway.config import ConfigError, FleetConfig, load_config
from gateway.polling.scheduler import MeterBackoff


class ReloadRefused(Exception):
    """The config file cannot replace the running config; the message says why (never a secret)."""


def load_for_reload(path: Path, running: FleetConfig) -> FleetConfig:
    """The fleet config at ``path``, if it can replace ``running``; else ``ReloadRefused``."""
    try:
        new = load_config(path)
    except ConfigError as exc:
        raise ReloadRefused(f"the config is not valid: {exc}") from None
    fixed = [name for name in ("store", "gateway_id") if getattr(new, name) != getattr(running, name)]
    if fixed:
        raise ReloadRefused(f"{' and '.join(fixed)} changed: that needs a restart")
    return new


def describe_changes(old: FleetConfig, new: FleetConfig) -> str:
    """One line for the log: meters added, removed and changed."""
    before = {meter.id: meter for meter in old.meters}
    after = {meter.id: meter for meter in new.meters}
    added = sorted(after.keys() - before.keys())
    removed = sorted(before.keys() - after.keys())
    changed = sorted(m for m in before.keys() & after.keys() if before[m] != after[m])
    parts = [f"{len(after)} meters"]
    for label, ids in (("added", added), ("removed", removed), ("changed", changed)):
        if ids:
            shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
            parts.append(f"{label}: {shown}")
    others = ("limits", "schedules", "concentrators", "optical_ports", "projections", "logging",
              "clock_drift_threshold_s")
    if other := [name for name in others if getattr(old, name) != getattr(new, name)]:
        parts.append(f"also changed: {', '.join(other)}")
    return "; ".join(parts)


def carried_backoff(backoff: MeterBackoff, old: FleetConfig, new: FleetConfig) -> MeterBackoff:
    """``backoff`` for the reloaded fleet: dead meters stay on their backoff, except those whose
    config changed or that failed on their config or a secret (the reload may be their fix), which
    are polled at their next slot."""
    before = {meter.id: meter for meter in old.meters}
    for meter in new.meters:
        if before.get(meter.id) != meter or backoff.config_error(meter.id) is not None:
            backoff.forget(meter.id)
    return backoff


__all__ = ["ReloadRefused", "carried_backoff", "describe_changes", "load_for_reload"]
