"""`gateway bench ...`: performance figures, each as a ratio to a baseline measured in the same run.

* `gateway bench store --backend sqlite|cosmos`: the batched writer on a store backend
  (gateway/bench/store.py for SQLite, gateway/bench/cosmos.py for Cosmos DB);
* `gateway bench dlms`: decode throughput (gateway/bench/dlms.py registers its own parser);
* `gateway bench fleet`: polling a simulated fleet (gateway/bench/fleet.py registers its own parser);
* `gateway bench projections`: the projection engine (gateway/bench/projections.py).

A store backend is one runner function in ``STORE_BACKENDS`` (parsed args → exit code).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import anyio

from gateway.bench.dlms import register_dlms
from gateway.bench.fleet import register_fleet
from gateway.bench.projections import register_bench as register_projections
from gateway.bench.store import BenchConfig, format_report, run_store_bench
from gateway.store.errors import StoreError
from gateway.commands._args import positive


def _run_sqlite(args: argparse.Namespace) -> int:
    config = BenchConfig(
        backend="sqlite",
        meters=args.meters,
        events=args.events,
        batch=args.batch,
        concurrent_flushes=args.concurrent_flushes,
        repeat=args.repeat,
    )
    try:
        if args.db is not None:
            report = anyio.run(run_store_bench, config, args.db)
        else:
            with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
                report = anyio.run(run_store_bench, config, Path(tmp))
    except (FileExistsError, StoreError) as exc:
        print(f"gateway bench store: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report.to_json(), sort_keys=True) if args.json else format_report(report))
    return 0


def _run_cosmos(args: argparse.Namespace) -> int:
    # Imported on use: the Cosmos client stack is not needed for any other benchmark.
    from gateway.bench.cosmos import run_from_args

    return run_from_args(args)


STORE_BACKENDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "sqlite": _run_sqlite,
    "cosmos": _run_cosmos,
}


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    bench = subparsers.add_parser("bench", help="measure performance against a same-run baseline")
    kinds = bench.add_subparsers(dest="bench_kind", metavar="BENCHMARK", required=True)
    _register_store(kinds)
    register_dlms(kinds)
    register_fleet(kinds)
    register_projections(kinds)


def _register_store(kinds: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    store = kinds.add_parser(
        "store",
        help="batched writer throughput on a store backend vs a raw-write baseline",
        description="Append synthetic meter polls (6 events each) through the batched writer "
        "into a fresh store and compare with a raw write of the same events, measured in the "
        "same run.",
    )
    store.add_argument("--backend", choices=sorted(STORE_BACKENDS), default="sqlite")
    store.add_argument(
        "--meters", type=positive, default=200, help="meters (streams), default 200"
    )
    store.add_argument(
        "--events", type=positive, default=20_000, help="measured events, default 20000"
    )
    store.add_argument("--json", action="store_true", help="print one JSON object")
    sqlite = store.add_argument_group("sqlite backend")
    sqlite.add_argument(
        "--batch", type=positive, default=500, help="events per flush, default 500"
    )
    sqlite.add_argument(
        "--concurrent-flushes", type=positive, default=1,
        help="flushes the writer may run at once (default 1)",
    )
    sqlite.add_argument(
        "--repeat", type=positive, default=3,
        help="runs of writer + baseline; the run with the median ceiling_ratio is reported (default 3: one run "
             "lasts under a second, and a busy box moves a single figure by a third)",
    )
    sqlite.add_argument(
        "--db",
        type=Path,
        help="directory for the fresh store files (kept afterwards); a temporary one by default",
    )
    cosmos = store.add_argument_group("cosmos backend")
    cosmos.add_argument(
        "--endpoint",
        help="account endpoint (default: $GATEWAY_COSMOS_ENDPOINT, else a local test server)",
    )
    cosmos.add_argument("--database", help="database for the benchmark containers")
    cosmos.add_argument(
        "--key-env", help="name of the environment variable holding the account key"
    )
    cosmos.add_argument(
        "--insecure-skip-tls-verify", action="store_true",
        help="accept the test server's self-signed certificate",
    )
    store.set_defaults(func=run_store)


def run_store(args: argparse.Namespace) -> int:
    return STORE_BACKENDS[args.backend](args)
