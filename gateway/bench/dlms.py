"""`gateway bench dlms`: decode throughput of our drivers.decode stack vs plain dlms-cosem, same bytes, same run.

Two payloads, built once: a GET.response-normal carrying one register value (u32), and a GET.response
carrying a 96-row load-profile buffer (one day of 15-minute rows: date-time, status, A+, A-) as A-XDR.
Ours: ``decode_apdu_exact`` (APDU + typed data tree). dlms-cosem: ``XDlmsApduFactory.apdu_from_bytes``
+ ``utils.parse_as_dlms_data``, which is what its client does with a GET response. Figures are ops/s and
the ratio ours / dlms-cosem; each side is timed in alternating rounds and the best round counts.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from dataclasses import asdict, dataclass
from typing import Callable

from drivers.decode.apdu import GetResponse, decode_apdu_exact
from drivers.decode.axdr import Data, DataType, encode_data

GET_RESPONSE_NORMAL = bytes([0xC4, 0x01, 0xC1, 0x00])


def register_response() -> bytes:
    return GET_RESPONSE_NORMAL + encode_data(Data(DataType.DOUBLE_LONG_UNSIGNED, 12_345_678))


def profile_response(rows: int = 96) -> bytes:
    start = dt.datetime(2026, 11, 25, 0, 0)
    energy_import, energy_export = 12_345_000, 4_321_000
    items = []
    for row in range(rows):
        at = start + dt.timedelta(minutes=15 * row)
        clock = (at.year.to_bytes(2, "big") + bytes([at.month, at.day, at.isoweekday(), at.hour, at.minute, 0, 0])
                 + (0x8000).to_bytes(2, "big") + b"\x00")
        energy_import += 150 + row % 7
        energy_export += row % 3
        items.append(Data(DataType.STRUCTURE, (
            Data(DataType.OCTET_STRING, clock), Data(DataType.UNSIGNED, 0),
            Data(DataType.DOUBLE_LONG_UNSIGNED, energy_import), Data(DataType.DOUBLE_LONG_UNSIGNED, energy_export))))
    return GET_RESPONSE_NORMAL + encode_data(Data(DataType.ARRAY, tuple(items)))


def ours(apdu: bytes) -> object:
    return decode_apdu_exact(apdu)


def dlms_cosem(apdu: bytes) -> object:
    # Imported here, as the baseline only: the product reaches dlms-cosem through drivers/ alone
    # (its licence, BSL 1.1, is why it stays behind our session interface).
    from dlms_cosem import utils as dlms_utils
    from dlms_cosem.connection import XDlmsApduFactory

    response = XDlmsApduFactory.apdu_from_bytes(apdu)
    return dlms_utils.parse_as_dlms_data(response.data)


@dataclass(frozen=True)
class CaseResult:
    name: str
    apdu_bytes: int
    ours_ops_per_s: float
    dlms_cosem_ops_per_s: float
    ratio_ours_to_dlms_cosem: float


def _rate(func: Callable[[bytes], object], apdu: bytes, seconds: float) -> float:
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(20):
            func(apdu)
        count += 20
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def measure(name: str, apdu: bytes, seconds: float, rounds: int = 3) -> CaseResult:
    best_ours = best_lib = 0.0
    for _ in range(rounds):
        best_ours = max(best_ours, _rate(ours, apdu, seconds / rounds))
        best_lib = max(best_lib, _rate(dlms_cosem, apdu, seconds / rounds))
    return CaseResult(name, len(apdu), round(best_ours, 1), round(best_lib, 1), round(best_ours / best_lib, 3))


def _check_same_result(apdu: bytes, rows: int | None) -> None:
    mine = decode_apdu_exact(apdu)
    theirs = dlms_cosem(apdu)
    assert isinstance(mine, GetResponse)
    value = mine.results[0]
    if rows is None:
        if value.value != theirs:  # type: ignore[union-attr]
            raise RuntimeError("decoders disagree on the register value")
    elif len(value.value) != rows or len(theirs) != rows:  # type: ignore[union-attr,arg-type]
        raise RuntimeError("decoders disagree on the number of profile rows")


def run_benchmark(seconds_per_case: float = 2.0) -> dict[str, object]:
    cases = [("get-register-response", register_response(), None), ("profile-buffer-96-rows", profile_response(), 96)]
    results = []
    for name, apdu, rows in cases:
        _check_same_result(apdu, rows)
        results.append(measure(name, apdu, seconds_per_case / 2))
    return {
        "benchmark": "dlms-decode",
        "baseline": "dlms-cosem XDlmsApduFactory.apdu_from_bytes + utils.parse_as_dlms_data",
        "ours": "drivers.decode.apdu.decode_apdu_exact",
        "cases": [asdict(r) for r in results],
    }


def _run(args: argparse.Namespace) -> int:
    report = run_benchmark(args.seconds)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"decode throughput, ours vs {report['baseline']}")
    for case in report["cases"]:  # type: ignore[attr-defined]
        print(f"  {case['name']:<24} {case['apdu_bytes']:>6} B  ours {case['ours_ops_per_s']:>10.0f} ops/s  "
              f"dlms-cosem {case['dlms_cosem_ops_per_s']:>10.0f} ops/s  ratio {case['ratio_ours_to_dlms_cosem']:.2f}")
    return 0


def register_dlms(bench_subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``dlms`` to the ``gateway bench`` sub-commands."""
    parser = bench_subparsers.add_parser("dlms", help="decode throughput: our stack vs plain dlms-cosem")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--seconds", type=float, default=2.0, help="measuring time per payload (default 2)")
    parser.set_defaults(func=_run)
