"""A CPU-time bound around the third-party parsing that still runs on meter bytes.

Our decoding layer checks every answer before dlms-cosem parses it (``drivers.session``), so no known
input makes that parse run long. Should an unknown one do so anyway, the parse would run on the event
loop's thread and stop every other meter's poll, out of reach of any deadline. ``cpu_bound`` ends it
with a ``DecodeError`` after ``limit_s`` of CPU time instead. It uses ``ITIMER_VIRTUAL`` (process CPU
time, so a box busy with other processes does not trip it early) and works in the main thread only,
where Python delivers signals; elsewhere the parse runs unbounded.
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from drivers.errors import DecodeError

DEFAULT_LIMIT_S = 0.5  # an APDU parses in microseconds; half a second of CPU is a runaway


class _CpuLimitReached(BaseException):
    # A BaseException so that no ``except Exception`` inside the library swallows it.
    pass


def _expired(signum: int, frame: FrameType | None) -> None:
    raise _CpuLimitReached


@contextmanager
def cpu_bound(meter_id: str | None, what: str, limit_s: float = DEFAULT_LIMIT_S) -> Iterator[None]:
    """Run the body with at most ``limit_s`` of process CPU time, else raise ``DecodeError``."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGVTALRM, _expired)
    signal.setitimer(signal.ITIMER_VIRTUAL, limit_s)
    try:
        yield
    except _CpuLimitReached:
        raise DecodeError(meter_id, f"{what}: parsing stopped after {limit_s} s of CPU time") from None
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, previous)
