"""`gateway meters assign|assignment`: assign a meter to a customer, show an assignment.

``assign`` stores the customer's postal code, house number and activation code encrypted with a data
key of their own (see gateway.personal), after reserving the meter id and activation code in the
fleet's unique index. It prints the assignment id (needed for ``gateway forget``) and, when it made
one up, the activation code to hand to the customer. ``assignment`` shows one assignment, its fields
reading ``<erased>`` once the customer was forgotten.

Exit codes: 0 done, 1 refused or failed (value taken, store trouble), 2 bad config or bad input.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import anyio

from gateway.config import ConfigError, FleetConfig, load_config
from gateway.personal.assignments import (
    Assigned,
    Assignment,
    InvalidPersonalData,
)
from gateway.personal.events import PERSONAL_FIELDS, InvalidAssignmentId
from gateway.personal.assignments import PERSONAL_DATA_FAILURES
from gateway.wiring import open_assignments
from gateway.store.codec import iso_utc
from gateway.domain.streams import StreamNameError

_FAILURES = PERSONAL_DATA_FAILURES


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    meters = subparsers.add_parser("meters", help="assign meters to customers (personal data)")
    commands = meters.add_subparsers(dest="meters_command", metavar="ACTION", required=True)

    assign = commands.add_parser("assign", help="assign a meter to a customer (fields stored encrypted)")
    _add_config(assign)
    assign.add_argument("--meter", required=True, metavar="ID", help="meter id from the config")
    assign.add_argument("--postal-code", required=True, help="the customer's postal code")
    assign.add_argument("--house-number", required=True, help="the customer's house number")
    assign.add_argument("--activation-code",
                        help="activation code (6-32 letters/digits); made up and printed if omitted")
    assign.add_argument("--json", action="store_true", help="print the result as JSON")
    assign.set_defaults(func=run_assign)

    show = commands.add_parser("assignment", help="show one assignment (fields read <erased> once forgotten)")
    _add_config(show)
    show.add_argument("--assignment", required=True, metavar="ID", help="assignment id")
    show.add_argument("--json", action="store_true", help="print the assignment as JSON")
    show.set_defaults(func=run_show)


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, metavar="FILE", help="fleet config (TOML)")


def _load(args: argparse.Namespace, name: str) -> FleetConfig | None:
    try:
        return load_config(args.config, check_secret_files=False)
    except ConfigError as exc:
        print(f"gateway meters {name}: {exc}", file=sys.stderr)
        return None


def run_assign(args: argparse.Namespace) -> int:
    fleet = _load(args, "assign")
    if fleet is None:
        return 2
    if args.meter not in {m.id for m in fleet.meters}:
        print(f"gateway meters assign: {args.config}: no meter {args.meter!r} in this fleet", file=sys.stderr)
        return 2

    async def assign() -> Assigned:
        async with open_assignments(fleet) as assignments:
            return await assignments.assign(
                args.meter, args.postal_code, args.house_number, args.activation_code
            )

    try:
        done = anyio.run(assign)
    except (InvalidPersonalData, StreamNameError) as exc:
        print(f"gateway meters assign: {exc}", file=sys.stderr)
        return 2
    except _FAILURES as exc:
        print(f"gateway meters assign: {exc}", file=sys.stderr)
        return 1
    if args.json:
        out: dict[str, Any] = {"assignmentId": done.assignment_id, "meterId": done.meter_id,
                               "streamId": done.stream_id}
        if done.code_generated:
            out["activationCode"] = done.activation_code
        print(json.dumps(out))
    else:
        print(f"meter {done.meter_id} assigned: assignment {done.assignment_id}")
        if done.code_generated:
            print(f"activation code for the customer: {done.activation_code}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    fleet = _load(args, "assignment")
    if fleet is None:
        return 2

    async def show() -> Assignment:
        async with open_assignments(fleet) as assignments:
            return await assignments.load(args.assignment)

    try:
        found = anyio.run(show)
    except InvalidAssignmentId as exc:
        print(f"gateway meters assignment: {exc}", file=sys.stderr)
        return 2
    except _FAILURES as exc:
        print(f"gateway meters assignment: {exc}", file=sys.stderr)
        return 1
    values = {name: str(getattr(found, name)) for name in PERSONAL_FIELDS}
    if args.json:
        print(json.dumps({
            "assignmentId": found.assignment_id,
            "meterId": found.meter_id,
            "assignedAt": iso_utc(found.assigned_at),
            "erasedAt": None if found.erased_at is None else iso_utc(found.erased_at),
            **{_camel(name): (None if found.erased else value) for name, value in values.items()},
            "erased": found.erased,
        }))
    else:
        print(f"assignment {found.assignment_id}: meter {found.meter_id}, assigned {iso_utc(found.assigned_at)}")
        for name, value in values.items():
            print(f"  {name.replace('_', ' '):16} {value}")
        if found.erased_at is not None:
            print(f"  personal data erased at {iso_utc(found.erased_at)}")
    return 0


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)
