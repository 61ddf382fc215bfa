"""Fault injection for simulated meters: what a misbehaving meter or line does, per meter.

A `MeterFaults` value is part of a meter's configuration and can be swapped at run time
(`MeterSimulator.set_faults`) so a test can break a meter, watch the client fail, heal it and
watch the next poll succeed. The servers consult it on every exchange; nothing is cached.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dlms_cosem.enumerations import DataAccessResult


@dataclass(frozen=True)
class MeterFaults:
    """Faults of one meter.

    latency_ms: delay before every reply (HDLC UA/RR/I frames and wrapper PDUs).
    no_answer: the meter reads requests but never replies (also no HDLC UA).
    corrupt_fcs: HDLC only: every reply frame carries a wrong FCS (the client must drop it).
    disconnect_mid_block: after the first block of a GET with block transfer the TCP
        connection is closed when the client asks for the next block.
    access_denied: OBIS codes ("1.0.1.8.0.255") whose every GET gets read-write-denied (3).
    unavailable: OBIS codes whose every GET gets object-unavailable (11).
    list_answer: a GET-with-list is answered with these bytes after ``C4 03 <invoke-id>`` instead of
        the values (a malformed answer, e.g. ``01 00 01 84 FF FF FF FF``: one result, an array
        announcing 2^32-1 elements and carrying none): every one, or with ``list_answer_obis`` only
        those that ask for one of these OBIS codes.
    lost_profile: (start, end): the load profile rows captured in [start, end) are gone from the
        meter's memory (a power cut that took them): range reads return the rows around them only.
    range_slack: a range read of a profile (load profile or event log) selects this much more on
        both sides of the range asked: a meter that does not honour the range's bounds.
    ignores_range: profile OBIS codes whose range reads answer the whole buffer (as a meter did
        that answered 100,000 rows to a one-day request).
    load_profile_without_clock: the load profile's capture objects (and its rows) lack the clock.
    """

    latency_ms: int = 0
    no_answer: bool = False
    corrupt_fcs: bool = False
    disconnect_mid_block: bool = False
    access_denied: frozenset[str] = field(default_factory=frozenset)
    unavailable: frozenset[str] = field(default_factory=frozenset)
    list_answer: bytes | None = None
    list_answer_obis: frozenset[str] = field(default_factory=frozenset)
    lost_profile: tuple[datetime, datetime] | None = None
    range_slack: timedelta = timedelta(0)
    ignores_range: frozenset[str] = field(default_factory=frozenset)
    load_profile_without_clock: bool = False

    def __post_init__(self) -> None:
        if self.latency_ms < 0:
            raise ValueError(f"latency_ms must be >= 0, got {self.latency_ms}")
        if self.range_slack < timedelta(0):
            raise ValueError(f"range_slack must be >= 0, got {self.range_slack}")
        # Accept any iterable of OBIS strings but store frozensets so the value stays hashable.
        object.__setattr__(self, "access_denied", frozenset(self.access_denied))
        object.__setattr__(self, "unavailable", frozenset(self.unavailable))
        object.__setattr__(self, "list_answer_obis", frozenset(self.list_answer_obis))
        object.__setattr__(self, "ignores_range", frozenset(self.ignores_range))

    def access_result(self, obis: str) -> DataAccessResult | None:
        """The injected data-access-result for a GET on `obis`, or None to serve it normally."""
        if obis in self.access_denied:
            return DataAccessResult.READ_WRITE_DENIED
        if obis in self.unavailable:
            return DataAccessResult.OBJECT_UNAVAILABLE
        return None


    def profile_row_lost(self, captured: datetime) -> bool:
        return self.lost_profile is not None and self.lost_profile[0] <= captured < self.lost_profile[1]

    def list_answer_to(self, obis: str) -> bytes | None:
        """The malformed answer for a GET-with-list that asks for `obis`, or None to serve it."""
        if self.list_answer is None or (self.list_answer_obis and obis not in self.list_answer_obis):
            return None
        return self.list_answer


NO_FAULTS = MeterFaults()


def corrupt_fcs(frame: bytes) -> bytes:
    """Flip bits in the FCS of an HDLC frame (7E ... FCS FCS 7E), keeping flags intact.

    The flipped bytes must not become 0x7E, or the frame would look truncated instead of
    corrupt, which is a different fault.
    """
    out = bytearray(frame)
    for index in (-3, -2):
        flipped = out[index] ^ 0x5A
        out[index] = flipped if flipped != 0x7E else flipped ^ 0x01
    return bytes(out)
