"""`gateway poll --config FILE --meter ID`: poll one meter now and show what was read and stored.

The field engineer's check after installing or fixing a meter: one poll with every step (identity,
clock, registers, load profile catch-up, event log), under the meter's deadline and retries, into
the fleet's store, exactly as `gateway run` would do it. With Cosmos DB as the store the events are
put in the local outbox (the poll has succeeded then) and forwarded before exiting, for at most
``--forward-wait`` seconds; what is still queued is printed, and `gateway run` forwards it later.
Exit 0 when every step succeeded, 1 when the meter failed (the reasons are printed), 2 for a config
error or an unknown meter.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anyio

from drivers.readings import RegisterReading, RegisterRefused
from gateway.config import ConfigError, FleetConfig, load_config
from gateway.config.model import LOG_FORMATS
from gateway.polling.health import HealthError
from gateway.config.logsetup import configure
from gateway.commands._errors import describe_os_error
from gateway.domain.poll_result import NOT_ATTEMPTED, PollSummary
from gateway.wiring import ForwarderSettings, UnsupportedStore, open_poller
from gateway.polling.scheduler import ALL_STEPS, Scheduler
from gateway.history.sinks import describe_outbox
from gateway.store.errors import StoreError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("poll", help="poll one meter now; print what was read and stored")
    parser.add_argument("--config", type=Path, required=True, metavar="FILE", help="fleet config (TOML)")
    parser.add_argument("--meter", required=True, metavar="ID", help="meter id from the config")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="text", help="log format (stderr)")
    parser.add_argument("--forward-wait", type=float, default=30.0, metavar="S",
                        help="Cosmos DB store: wait at most S seconds to forward the outbox (default 30)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        fleet = load_config(args.config)
        meter_ids = [m.id for m in fleet.meters]
        if args.meter not in meter_ids:
            print(f"gateway poll: {args.config}: no meter {args.meter!r}; meters: {', '.join(meter_ids)}",
                  file=sys.stderr)
            return 2
    except ConfigError as exc:
        print(f"gateway poll: {exc}", file=sys.stderr)
        return 2
    configure("WARNING", args.log_format)
    try:
        summary, forwarded = anyio.run(_poll, fleet, args.meter, max(0.0, args.forward_wait))
    except (UnsupportedStore, StoreError, HealthError) as exc:
        print(f"gateway poll: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the store's directory or files
        print(f"gateway poll: cannot use the store: {describe_os_error(exc)}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    if forwarded is not None:
        print(forwarded)
    return 0 if summary.ok else 1


async def _poll(fleet: FleetConfig, meter_id: str, forward_wait_s: float) -> tuple[PollSummary, str | None]:
    """The poll's summary, and with Cosmos a line on forwarding the outbox afterwards."""
    async with open_poller(fleet, forwarding=ForwarderSettings(run=False)) as poller:
        summary = await Scheduler(fleet, poller, meters=[meter_id]).poll_meter(fleet.meter(meter_id), ALL_STEPS)
        forwarded = await poller.history.forward(forward_wait_s)
        if forwarded is None:  # the embedded store: nothing to forward
            return summary, None
        state, reason = forwarded
        if not state.depth:
            line = "forwarded: the outbox is empty, everything is in Cosmos DB"
        else:
            line = (f"queued: {describe_outbox(state)}; not forwarded ({reason}); "
                    "`gateway run` forwards them")
        if state.poisoned and not state.depth:
            line += f"; {state.poisoned} poisoned events set aside"
        return summary, line


def format_summary(summary: PollSummary) -> str:
    """Readable report of one poll: readings, events stored, failures."""
    lines = [f"meter {summary.meter_id}: polled at {summary.started_at:%Y-%m-%d %H:%M:%S} UTC in "
             f"{summary.duration_s:.2f} s ({summary.attempts} session{'s' if summary.attempts > 1 else ''})"]
    result = summary.result
    if result is not None:
        if result.identity is not None:
            ident = result.identity
            lines.append(f"  identity   serial {ident.serial}, model {ident.model or '?'}, firmware {ident.firmware or '?'}")
        if result.clock is not None:
            lines.append(f"  clock      {result.clock.meter_time:%Y-%m-%d %H:%M:%S} UTC, "
                         f"offset {result.clock.offset.total_seconds():+.2f} s")
        for reading in result.registers:
            if isinstance(reading, RegisterReading):
                lines.append(f"  register   {reading.obis:<16} {reading.value} {reading.unit}")
            elif isinstance(reading, RegisterRefused):
                lines.append(f"  register   {reading.obis:<16} refused: {reading.result}")
        for profile in result.profiles:
            times = [row.time for row in profile.rows if row.time is not None]
            span = f"{min(times):%Y-%m-%d %H:%M} .. {max(times):%Y-%m-%d %H:%M} UTC" if times else "no rows"
            lines.append(f"  profile    {profile.obis:<16} {len(profile.rows)} rows, {span}")
        if result.events:
            lines.append(f"  event log  {len(result.events)} entries")
    if summary.stored:
        stored = ", ".join(f"{count} {kind}" for kind, count in sorted(summary.stored.items()))
        lines.append(f"stored: {stored} in {', '.join(summary.streams)}")
    else:
        lines.append("stored: nothing new")
    if summary.already_stored:
        lines.append(f"already stored: {summary.already_stored} events")
    for error in summary.errors:
        if error.kind != NOT_ATTEMPTED:
            where = f" {error.obis}" if error.obis else ""
            lines.append(f"FAILED {error.step}{where}: {error.kind}: {error.message}")
    not_read = sorted(e.step for e in summary.errors if e.kind == NOT_ATTEMPTED)
    if not_read:
        lines.append(f"not read: {', '.join(not_read)}")
    if summary.store_error:
        lines.append(f"FAILED store: {summary.store_error}")
    return "\n".join(lines)
