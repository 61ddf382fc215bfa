"""`gateway forget --config FILE --assignment ID`: erase a customer's personal data (GDPR art. 17).

Destroys the assignment's data key (crypto-shredding: the encrypted fields in the immutable event
history become unreadable everywhere at once), records ``PersonalDataErased`` in the assignment's
stream and frees its activation code and meter id in the unique index. The meter's readings stay.
Running it again is harmless. Projections holding personal fields must drop them on
``PersonalDataErased`` (or be rebuilt).

Exit codes: 0 erased (now or before), 1 failed (unknown assignment, store trouble), 2 bad config.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anyio

from gateway.config import ConfigError, load_config
from gateway.personal.assignments import Forgotten
from gateway.personal.assignments import PERSONAL_DATA_FAILURES
from gateway.wiring import open_assignments
from gateway.personal.events import InvalidAssignmentId


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "forget", help="erase an assignment's personal data for good (destroys its key)"
    )
    parser.add_argument("--config", type=Path, required=True, metavar="FILE", help="fleet config (TOML)")
    parser.add_argument("--assignment", required=True, metavar="ID", help="assignment id")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        fleet = load_config(args.config, check_secret_files=False)
    except ConfigError as exc:
        print(f"gateway forget: {exc}", file=sys.stderr)
        return 2

    async def forget() -> Forgotten:
        async with open_assignments(fleet) as assignments:
            return await assignments.forget(args.assignment)

    try:
        done = anyio.run(forget)
    except InvalidAssignmentId as exc:
        print(f"gateway forget: {exc}", file=sys.stderr)
        return 2
    except PERSONAL_DATA_FAILURES as exc:
        print(f"gateway forget: {exc}", file=sys.stderr)
        return 1
    if done.key_destroyed_now or done.erasure_recorded_now:
        print(f"assignment {done.assignment_id}: personal data erased")
    else:
        print(f"assignment {done.assignment_id}: personal data was already erased")
    return 0
