"""`gateway simulate`: serve simulated DLMS/COSEM meters on 127.0.0.1 until SIGINT/SIGTERM.

Prints one line per endpoint (meter, make/model, framing, port, addresses, security). With
--json-endpoints it also writes the endpoints, including the simulator's *test* keys and
passwords, for test harnesses and the demo; nothing secret is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from datetime import datetime
from pathlib import Path

import anyio

from gateway.commands._errors import describe_os_error

from drivers.simulator import Framing, MeterSimulator, SecurityLevel, SimulatorConfig
from drivers.simulator.fleet import fleet


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("simulate", help="serve simulated meters on 127.0.0.1 (wrapper and HDLC over TCP)")
    parser.add_argument("--meters", type=int, default=3, help="number of meters (default 3)")
    parser.add_argument("--framing", choices=[f.value for f in Framing], default=Framing.BOTH.value)
    parser.add_argument("--seed", type=int, default=0, help="seed of the deterministic meter model")
    parser.add_argument("--latency-ms", type=int, default=0, help="reply latency of every meter")
    parser.add_argument("--port", type=int, default=0,
                        help="first port: wrapper meters get consecutive ports, then one per HDLC bus (0: ephemeral)")
    parser.add_argument("--json-endpoints", type=Path, help="write endpoints (with test keys) to this JSON file")
    parser.add_argument("--security", choices=["mixed", *[s.value for s in SecurityLevel]], default="mixed",
                        help="security of the reading client (mixed: cycle none/lls/hls-gmac)")
    parser.add_argument("--meters-per-bus", type=int, default=8, help="meters behind one HDLC port")
    parser.add_argument("--hdlc-address-base", type=int, default=17,
                        help="physical address of the first meter on each bus (>127 uses extended addressing)")
    parser.add_argument("--start", type=datetime.fromisoformat,
                        help="simulated time at start, ISO-8601 with offset (default: now)")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second (0 freezes)")
    parser.set_defaults(func=run)


def _config(args: argparse.Namespace) -> SimulatorConfig:
    if args.start is not None and args.start.tzinfo is None:
        raise ValueError("--start needs a UTC offset, e.g. 2026-03-01T00:00:00+00:00")
    if args.latency_ms < 0:
        raise ValueError("--latency-ms must be >= 0")
    security = None if args.security == "mixed" else SecurityLevel(args.security)
    meters = fleet(
        args.meters, seed=args.seed, security=security, latency_ms=args.latency_ms,
        meters_per_bus=args.meters_per_bus, hdlc_address_base=args.hdlc_address_base,
    )
    return SimulatorConfig(
        meters=meters, framing=Framing(args.framing), base_port=args.port,
        meters_per_bus=args.meters_per_bus, start=args.start, speed=args.speed,
    )


async def _serve(config: SimulatorConfig, json_path: Path | None) -> int | None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with MeterSimulator(config) as sim:
            for e in sim.endpoints:
                where = f"wPort {e.server_logical_address}" if e.framing == Framing.WRAPPER else (
                    f"upper {e.server_logical_address} lower {e.physical_address}")
                print(f"{e.meter_id} {e.make} {e.model} serial {e.serial} {e.framing.value} "
                      f"{e.host}:{e.port} {where} clients public={e.public_client} "
                      f"reading={e.reading_client} security={e.security.value}", flush=True)
            if json_path is not None:
                doc = {"endpoints": [e.to_json(include_test_secrets=True) for e in sim.endpoints]}
                # Write then rename, so a harness polling for the file never reads half of it.
                partial = json_path.with_name(json_path.name + ".partial")
                try:
                    partial.write_text(json.dumps(doc, indent=2))
                    os.replace(partial, json_path)
                except OSError as exc:
                    print(f"gateway simulate: cannot write --json-endpoints: {describe_os_error(exc)}",
                          file=sys.stderr)
                    return 1
            print(f"serving {len(sim.meters)} meters; Ctrl-C to stop", flush=True)
            async for _ in signals:
                return


def run(args: argparse.Namespace) -> int:
    try:
        config = _config(args)
    except ValueError as exc:
        print(f"gateway simulate: {exc}", file=sys.stderr)
        return 2
    try:
        code = anyio.run(_serve, config, args.json_endpoints)
    except OSError as exc:
        print(f"gateway simulate: cannot listen: {exc}", file=sys.stderr)
        return 1
    return code or 0
