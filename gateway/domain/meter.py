"""The meter aggregate: the current state of one meter, folded from one year stream.

``MeterState`` is an immutable value; ``apply(event)`` returns the next state. A year stream after a
meter's first starts with ``YearStreamOpened`` carrying the previous year's closing state, so the
state of the current year never needs an older stream. Validation rules (VEE) live elsewhere;
this module only keeps the state.

Apply rules are order-tolerant where readings can arrive late: a register keeps its value with the
newest capture time, a profile its newest row end, the clock its newest check. Counts and
``version`` are per year stream (they restart with each year).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from gateway.domain.events import (
    CarryOver,
    ClockChecked,
    ClockDriftDetected,
    ClockSynchronised,
    ClockSyncRefused,
    DomainEvent,
    IntervalsRecorded,
    MeterEventLogged,
    MeterIdentity,
    MeterRegistered,
    ReadingGapDetected,
    RegisterRead,
    RegisterValue,
    SuspectReadingFlagged,
    YearStreamOpened,
)
from gateway.store.model import NO_STREAM

SNAPSHOT_SCHEMA_VERSION: Final[int] = 1


class MeterStateError(ValueError):
    """Base of the errors of the meter aggregate."""


class UnsupportedSnapshot(MeterStateError):
    """A snapshot this code cannot read (unknown schema version or malformed state)."""

    def __init__(self, meter_id: str | None, message: str) -> None:
        self.meter_id = meter_id
        super().__init__(f"snapshot of meter {meter_id!r}: {message}")


class WrongMeter(MeterStateError):
    def __init__(self, meter_id: str, event: DomainEvent) -> None:
        self.meter_id = meter_id
        super().__init__(f"{event.TYPE} of meter {event.meter_id!r} applied to meter {meter_id!r}")


@dataclass(frozen=True, slots=True)
class MeterState:
    meter_id: str
    year: int | None = None
    identity: MeterIdentity | None = None
    registers: Mapping[str, RegisterValue] = field(default_factory=dict)  # OBIS → last value
    interval_ends: Mapping[str, datetime] = field(default_factory=dict)  # profile OBIS → last end
    clock_offset_s: Decimal | None = None
    clock_checked_at: datetime | None = None  # gateway time of the check giving clock_offset_s
    event_log_ends: Mapping[str, datetime] = field(default_factory=dict)  # log OBIS → newest entry
    counts: Mapping[str, int] = field(default_factory=dict)  # event type → events in this stream
    version: int = NO_STREAM  # stream version of the last event applied

    @classmethod
    def empty(cls, meter_id: str, year: int | None = None) -> MeterState:
        return cls(meter_id=meter_id, year=year)

    @classmethod
    def from_carry_over(cls, event: YearStreamOpened) -> MeterState:
        """State of a year stream whose first event (version 1) is ``event``."""
        return cls.empty(event.meter_id, event.year).apply(event, version=1)

    # --- folding ---------------------------------------------------------------------------------

    def apply(self, event: DomainEvent, version: int | None = None) -> MeterState:
        """The state after ``event``, stored at ``version`` (default: the next version)."""
        if event.meter_id != self.meter_id:
            raise WrongMeter(self.meter_id, event)
        state = self._fold(event)
        return state.counted(event.TYPE, self.version + 1 if version is None else version)

    def counted(self, type_name: str, version: int) -> MeterState:
        """Count an event without folding it (used for stored events this code cannot read)."""
        counts = dict(self.counts)
        counts[type_name] = counts.get(type_name, 0) + 1
        return replace(self, counts=counts, version=version)

    def _fold(self, event: DomainEvent) -> MeterState:
        if isinstance(event, RegisterRead):
            current = self.registers.get(event.obis)
            if current is not None and current.capture_time > event.capture_time:
                return self  # a late read of an older capture does not replace the newer value
            registers = dict(self.registers)
            registers[event.obis] = RegisterValue(
                event.quantity, event.value, event.unit, event.capture_time
            )
            return replace(self, registers=registers)
        if isinstance(event, IntervalsRecorded):
            return self._with_interval_end(event.profile_obis, event.last_end)
        if isinstance(event, (ClockChecked, ClockDriftDetected)):
            if self.clock_checked_at is not None and self.clock_checked_at > event.gateway_time:
                return self
            return replace(self, clock_offset_s=event.offset_s, clock_checked_at=event.gateway_time)
        if isinstance(event, MeterRegistered):
            identity = event.identity
            if self.identity is not None and self.identity.first_contact < identity.first_contact:
                # A re-registration (e.g. after a firmware update) keeps the first contact.
                identity = replace(identity, first_contact=self.identity.first_contact)
            return replace(self, identity=identity)
        if isinstance(event, YearStreamOpened):
            return self._merge(event.carried, year=event.year)
        if isinstance(event, MeterEventLogged):
            # The newest stored entry per log, so a re-read of an overlapping range adds nothing.
            current = self.event_log_ends.get(event.log_obis)
            if current is not None and current >= event.event_time:
                return self
            return replace(self, event_log_ends={**self.event_log_ends, event.log_obis: event.event_time})
        if isinstance(event, ClockSynchronised):
            if self.clock_checked_at is not None and self.clock_checked_at > event.gateway_time_after:
                return self
            return replace(self, clock_offset_s=event.offset_after_s, clock_checked_at=event.gateway_time_after)
        if isinstance(event, (ReadingGapDetected, SuspectReadingFlagged, ClockSyncRefused)):
            return self  # kept in the stream and counted; no state beyond that
        raise TypeError(f"MeterState cannot apply {type(event).__name__}")

    def _with_interval_end(self, profile: str, end: datetime) -> MeterState:
        current = self.interval_ends.get(profile)
        if current is not None and current >= end:
            return self
        ends = dict(self.interval_ends)
        ends[profile] = end
        return replace(self, interval_ends=ends)

    def _merge(self, carried: CarryOver, year: int) -> MeterState:
        state = replace(self, year=year, identity=self.identity or carried.identity)
        for obis, value in carried.registers.items():
            current = state.registers.get(obis)
            if current is None or current.capture_time < value.capture_time:
                state = replace(state, registers={**state.registers, obis: value})
        for profile, end in carried.interval_ends.items():
            state = state._with_interval_end(profile, end)
        for log, end in carried.event_log_ends.items():
            current = state.event_log_ends.get(log)
            if current is None or current < end:
                state = replace(state, event_log_ends={**state.event_log_ends, log: end})
        if carried.clock_checked_at is not None and (
            state.clock_checked_at is None or state.clock_checked_at < carried.clock_checked_at
        ):
            state = replace(
                state, clock_offset_s=carried.clock_offset_s, clock_checked_at=carried.clock_checked_at
            )
        return state

    # --- year rollover ---------------------------------------------------------------------------

    def closing_state(self) -> CarryOver:
        return CarryOver(
            identity=self.identity,
            registers=dict(self.registers),
            interval_ends=dict(self.interval_ends),
            clock_offset_s=self.clock_offset_s,
            clock_checked_at=self.clock_checked_at,
            event_log_ends=dict(self.event_log_ends),
        )

    def open_year(self, year: int) -> YearStreamOpened:
        """The first event of the stream of ``year``, carrying this state's closing state."""
        return YearStreamOpened(
            meter_id=self.meter_id, year=year, previous_version=self.version,
            carried=self.closing_state(),
        )

    # --- snapshots -------------------------------------------------------------------------------

    def to_snapshot(self) -> dict[str, Any]:
        """JSON-ready state for ``Snapshot.state`` (schema SNAPSHOT_SCHEMA_VERSION)."""
        return {
            "meterId": self.meter_id,
            "year": self.year,
            "carried": self.closing_state().to_data(),
            "counts": dict(self.counts),
            "version": self.version,
        }

    @classmethod
    def from_snapshot(cls, state: Mapping[str, Any], schema_version: int) -> MeterState:
        meter_id = state.get("meterId") if isinstance(state, Mapping) else None
        if schema_version != SNAPSHOT_SCHEMA_VERSION:
            raise UnsupportedSnapshot(
                meter_id, f"schema version {schema_version} (this code reads {SNAPSHOT_SCHEMA_VERSION})"
            )
        try:
            carried = CarryOver._from_fields(state["carried"], "carried")
            counts = {str(k): int(v) for k, v in dict(state["counts"]).items()}
            version = state["version"]
            year = state["year"]
            if not isinstance(meter_id, str) or not isinstance(version, int):
                raise ValueError("meterId must be a string and version an integer")
            if year is not None and not isinstance(year, int):
                raise ValueError("year must be an integer or null")
        except (KeyError, TypeError, ValueError) as exc:
            raise UnsupportedSnapshot(meter_id, f"malformed state: {exc}") from None
        return cls(
            meter_id=meter_id,
            year=year,
            identity=carried.identity,
            registers=carried.registers,
            interval_ends=carried.interval_ends,
            clock_offset_s=carried.clock_offset_s,
            clock_checked_at=carried.clock_checked_at,
            event_log_ends=carried.event_log_ends,
            counts=counts,
            version=version,
        )


__all__ = [
    "SNAPSHOT_SCHEMA_VERSION", "MeterState", "MeterStateError", "UnsupportedSnapshot", "WrongMeter",
]
