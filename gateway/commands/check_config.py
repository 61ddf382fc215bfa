"""`gateway check-config FILE`: validate a fleet config and list every problem, for operators and CI.

Exit 0 with a one-line summary when the config is usable, 1 with the list of problems otherwise.
Environment variables that secrets refer to are only read at run time (the service's environment may
differ from the shell's), so unset ones are reported as notes, not errors.
"""
from __future__ import annotations

import argparse
import os
import sys

from gateway.config import ConfigError, CosmosStoreConfig, load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check-config",
        help="validate a fleet config file and list every problem in it",
        description="Validate a fleet config (TOML): report every problem with its key, or a summary.",
    )
    parser.add_argument("file", metavar="FILE", help="fleet config file, e.g. config/example-fleet.toml")
    parser.add_argument(
        "--skip-secret-files", action="store_true",
        help="do not check that { file = ... } secrets exist with mode 0600 (e.g. when run as another user)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file, check_secret_files=not args.skip_secret_files)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    store = "cosmos (with local outbox)" if isinstance(config.store, CosmosStoreConfig) else "sqlite"
    print(
        f"OK: {args.file}: gateway {config.gateway_id}: {_count(len(config.meters), 'meter')}, "
        f"{_count(len(config.concentrators), 'concentrator')}, "
        f"{_count(len(config.optical_ports), 'optical port')}, store {store}"
    )
    unset: dict[str, list[str]] = {}
    for ref in config.secret_refs():
        if ref.kind == "env" and ref.target not in os.environ:
            unset.setdefault(ref.target, []).append(ref.origin)
    for name, origins in unset.items():
        print(f"note: environment variable {name} is not set here; the service needs it for {', '.join(origins)}")
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
