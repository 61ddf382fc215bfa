"""The `gateway` command line: one sub-command module per feature under gateway/commands/.

Each module in gateway.commands defines ``register(subparsers)``, which adds its parser(s) and sets
``func`` (a plain function taking the parsed args and returning an exit code). Discovery keeps this
file free of per-feature edits.

No traceback reaches a user: each command turns the failures it expects (a missing or corrupt file,
a store it cannot open) into one line and an exit code; here, a closed pipe (`gateway streams list |
head -1`) ends quietly, Ctrl-C prints "interrupted" and exits 130, and anything else, a bug, prints
one line naming the error type and where it was raised and exits 70 (EX_SOFTWARE). ``--debug`` (or
``GATEWAY_DEBUG=1``) lets that traceback through, for a bug report.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import traceback
from typing import Sequence

import gateway.commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="meter-gateway: polls DLMS/COSEM meters into an event-sourced history",
    )
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an unexpected error (also GATEWAY_DEBUG=1)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(gateway.commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"gateway.commands.{info.name}")
        module.register(subparsers)
    return parser


EX_SOFTWARE = 70  # sysexits.h: an internal software error


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    debug = args.debug or os.environ.get("GATEWAY_DEBUG", "") not in ("", "0")
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, so that a closed pipe is handled below, not at interpreter exit
        return code
    except BaseException as exc:  # noqa: BLE001 - the one place that decides what a user sees
        if isinstance(exc, SystemExit):
            raise
        if _only(exc, BrokenPipeError):
            # The reader went away (`| head -1`): stop quietly; later flushes must not complain either.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 1
        if _any(exc, KeyboardInterrupt):
            print("interrupted", file=sys.stderr)
            return 130
        if debug:
            raise
        print(f"gateway {args.command}: internal error: {_describe(exc)}; this is a bug: please report it "
              "with the output of the same command run with --debug (or GATEWAY_DEBUG=1), or the log",
              file=sys.stderr)
        return EX_SOFTWARE


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _only(exc: BaseException, kind: type[BaseException]) -> bool:
    return all(isinstance(leaf, kind) for leaf in _leaves(exc))


def _any(exc: BaseException, kind: type[BaseException]) -> bool:
    return any(isinstance(leaf, kind) for leaf in _leaves(exc))


def _describe(exc: BaseException) -> str:
    """The error type and where it was raised (not its message, which may carry data or secrets)."""
    leaf = _leaves(exc)[0]
    frames = traceback.extract_tb(leaf.__traceback__)
    where = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
    return f"{type(leaf).__name__}{where}"


if __name__ == "__main__":
    sys.exit(main())
