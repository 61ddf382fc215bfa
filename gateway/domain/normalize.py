"""The normalizer: one poll's readings in, the domain events to append per meter-year stream out.

``normalize`` is pure: a ``PollResult``, the meter's stream states and its config in, one
``AppendPlan`` per year stream (oldest first, with the expected version) out, so that a re-read adds
nothing; ``plan_poll`` is its I/O edge (loads the states it needs). Which events, when:
docs/architecture.md, "Normalizer".
"""
from __future__ import annotations

import bisect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Final

from drivers.readings import CaptureColumn, ProfileReading, ProfileRow, RegisterReading
from gateway.config.model import FleetConfig, MeterConfig
from gateway.domain.events import (
    ClockChecked,
    ClockDriftDetected,
    ClockSynchronised,
    ClockSyncRefused,
    DomainEvent,
    IntervalRow,
    IntervalsRecorded,
    MeterEventLogged,
    MeterRegistered,
    ReadingGapDetected,
    RegisterRead,
    SuspectReadingFlagged,
)
from gateway.domain.mapper import to_new_event
from gateway.domain.meter import MeterState
from gateway.domain.poll_result import PollResult, PollStep
from gateway.history.repository import MeterRepository
from gateway.store import codec
from gateway.store.codec import iso_utc
from gateway.store.model import NO_STREAM, EventMetadata, NewEvent
from gateway.domain.streams import MAX_YEAR, MIN_YEAR, split_by_year, stream_id, year_of
from gateway.domain.quantities import Quantity, event_meaning, quantity_of
from gateway.domain.vee import (
    GOOD,
    VeeRules,
    Verdict,
    check_counter_step,
    check_interval_energy,
    check_status,
    seconds,
    suspect,
)

# --- inputs and outputs --------------------------------------------------------------------------


class NormalizeError(ValueError):
    """The normalizer was called with inputs that do not fit together."""

    def __init__(self, meter_id: str, message: str) -> None:
        self.meter_id = meter_id
        super().__init__(f"meter {meter_id!r}: {message}")


class UnusableReading(NormalizeError):
    """A reading of ``step`` (``obis``: its object) that cannot become events as the meter sent it."""

    def __init__(self, meter_id: str, step: PollStep, obis: str, message: str) -> None:
        self.step: PollStep = step
        self.obis = obis
        super().__init__(meter_id, message)


class MissingState(NormalizeError):
    """``states`` lacks a year the poll touches (use ``needed_years`` / ``load_states``)."""

    def __init__(self, meter_id: str, years: Sequence[int]) -> None:
        self.years = tuple(years)
        super().__init__(meter_id, f"no stream state given for the year(s) {list(years)}")


@dataclass(frozen=True, slots=True)
class NormalizeSettings:
    gateway_id: str  # written into every event's metadata
    clock_drift_threshold_s: Decimal
    vee: VeeRules = field(default_factory=VeeRules)

    def __post_init__(self) -> None:
        if not self.gateway_id:
            raise ValueError("gateway_id must not be empty")
        if not isinstance(self.clock_drift_threshold_s, Decimal) or self.clock_drift_threshold_s < 0:
            raise ValueError(
                f"clock_drift_threshold_s must be a non-negative Decimal, got {self.clock_drift_threshold_s!r}"
            )

    @classmethod
    def from_fleet(cls, fleet: FleetConfig, vee: VeeRules | None = None) -> NormalizeSettings:
        # str() first: the config holds a float, and Decimal(float) would carry its binary noise.
        return cls(fleet.gateway_id, Decimal(str(fleet.clock_drift_threshold_s)), vee or VeeRules())


@dataclass(frozen=True, slots=True)
class AppendPlan:
    """The events for one year stream, to append at ``expected_version`` (NO_STREAM: a new stream)."""

    stream_id: str
    year: int
    expected_version: int
    domain_events: tuple[DomainEvent, ...]
    events: tuple[NewEvent, ...]
    state_after: MeterState  # the stream's state once ``events`` are appended


MAX_INTERVALS_EVENT_BYTES: Final = 64 * 1024
"""Encoded payload of one ``IntervalsRecorded`` at most (a single row may exceed it alone): a quarter
of the Cosmos DB commit limit (256 KB), so that no event is ever refused (and set aside) for its
size; a day of 15-minute rows with up to about eight channels is one event."""


# --- public functions ----------------------------------------------------------------------------


def needed_years(poll: PollResult) -> frozenset[int]:
    """The UTC years whose stream state ``normalize`` needs for ``poll``."""
    moments: list[datetime] = [poll.read_time]
    if poll.clock is not None:
        moments.append(poll.clock.gateway_time)
    for register in poll.registers:
        if isinstance(register, RegisterReading) and register.capture_time is not None:
            moments.append(register.capture_time)
    for profile in poll.profiles:
        moments.extend(row.time for row in profile.rows if row.time is not None)
    moments.extend(entry.time for entry in poll.events if entry.time is not None)
    return frozenset(moment.astimezone(timezone.utc).year for moment in moments)


def usable_readings(poll: PollResult) -> tuple[PollResult, tuple[UnusableReading, ...]]:
    """``poll`` without the readings ``normalize`` cannot use, and why each was set aside (at most
    one per step and object). A profile is set aside whole (its rows cannot be placed or its
    intervals not measured); a reading dated outside the years a stream can have, alone."""
    meter_id = poll.meter_id
    unusable: dict[tuple[PollStep, str], UnusableReading] = {}

    def set_aside(step: PollStep, obis: str, message: str) -> None:
        unusable.setdefault((step, obis), UnusableReading(meter_id, step, obis, message))

    first_read: dict[str, ProfileReading] = {}
    for profile in poll.profiles:
        problem = _profile_problem(profile) or _merge_problem(first_read.setdefault(profile.obis, profile), profile)
        if problem is not None:
            set_aside("load_profile", profile.obis, problem)
    profiles = []
    for profile in poll.profiles:
        if ("load_profile", profile.obis) in unusable:
            continue
        rows = tuple(row for row in profile.rows if row.time is None or _storable(row.time))
        if len(rows) != len(profile.rows):
            set_aside("load_profile", profile.obis, f"profile {profile.obis}: "
                      f"{len(profile.rows) - len(rows)} row(s) dated outside {MIN_YEAR}..{MAX_YEAR} set aside")
            profile = replace(profile, rows=rows)
        profiles.append(profile)
    registers = []
    for register in poll.registers:
        capture = register.capture_time if isinstance(register, RegisterReading) else None
        if capture is not None and not _storable(capture):
            set_aside("registers", register.obis, f"register {register.obis} captured at {capture.isoformat()}, "
                      f"outside {MIN_YEAR}..{MAX_YEAR}")
            continue
        registers.append(register)
    events = []
    for entry in poll.events:
        if entry.time is not None and not _storable(entry.time):
            set_aside("event_log", entry.log_obis, f"event log {entry.log_obis}: an entry dated "
                      f"{entry.time.isoformat()}, outside {MIN_YEAR}..{MAX_YEAR}, set aside")
            continue
        events.append(entry)
    if not unusable:
        return poll, ()
    return replace(poll, profiles=tuple(profiles), registers=tuple(registers), events=tuple(events)), tuple(
        unusable.values())


async def load_states(repository: MeterRepository, meter_id: str, years: Iterable[int]) -> dict[int, MeterState]:
    """The stream states ``normalize`` needs: each of ``years``, plus, when the earliest of them has
    no stream yet, the meter's latest stream before it (a new year stream's carry-over)."""
    wanted = sorted(set(years))
    if not wanted:
        return {}
    states = {year: await repository.load(meter_id, year) for year in wanted}
    if states[wanted[0]].version == NO_STREAM:
        previous = await repository.latest_year_before(meter_id, wanted[0])
        if previous is not None:
            states[previous] = await repository.load(meter_id, previous)
    return dict(sorted(states.items()))


StatesLoader = Callable[[str, frozenset[int]], Awaitable[Mapping[int, MeterState]]]


async def plan_poll(
    repository: MeterRepository, poll: PollResult, meter: MeterConfig, settings: NormalizeSettings,
    *, states: StatesLoader | None = None,
) -> list[AppendPlan]:
    """Load the stream states ``poll`` needs and normalize it (the I/O edge around ``normalize``).

    ``states(meter_id, years)`` gives the states (default: ``load_states`` from ``repository``; the
    poller passes its cache-first loader). The one place that retries on ``MissingState``."""
    load = states or (lambda meter_id, years: load_states(repository, meter_id, years))
    years = set(needed_years(poll))
    try:
        return normalize(poll, await load(poll.meter_id, frozenset(years)), meter, settings)
    except MissingState as exc:
        # A gap starts where the stored readings end, possibly in a year the poll did not touch
        # (rows lost over New Year's Eve while the new year's stream already exists).
        years |= set(exc.years)
    return normalize(poll, await load(poll.meter_id, frozenset(years)), meter, settings)


def normalize(
    poll: PollResult,
    states: Mapping[int, MeterState],
    meter: MeterConfig,
    settings: NormalizeSettings,
) -> list[AppendPlan]:
    """The append plans (oldest year first) that record ``poll`` against the stored ``states``.

    ``states`` maps a year to the state of that year's stream as loaded from the store (version
    NO_STREAM when it does not exist); it must hold every year of ``needed_years(poll)`` and, when
    those streams are new, the meter's latest earlier stream (``load_states`` does both).
    """
    if poll.meter_id != meter.id:
        raise NormalizeError(poll.meter_id, f"poll result given with the config of meter {meter.id!r}")
    years = needed_years(poll)
    missing = sorted(years - set(states))
    if missing:
        raise MissingState(meter.id, missing)
    for year, state in states.items():
        if state.meter_id != meter.id:
            raise NormalizeError(meter.id, f"the state given for {year} is of meter {state.meter_id!r}")
    known = _current(states, max(years))
    builder = _Builder(poll, known, meter, settings)
    events = builder.build()
    return _plan(poll, states, events, settings)


# --- building the events -------------------------------------------------------------------------


def _current(states: Mapping[int, MeterState], year: int) -> MeterState:
    """What the store knows as of ``year`` (as ``MeterRepository.current``): that year's stream or
    the closing state of the latest earlier one."""
    existing = [y for y, s in states.items() if y <= year and s.version != NO_STREAM]
    if not existing:
        return MeterState.empty(states[year].meter_id, year)
    latest = max(existing)
    if latest == year:
        return states[year]
    return MeterState.from_carry_over(states[latest].open_year(year))


@dataclass(slots=True)
class _Point:
    """Last good value of a cumulative counter, for the rate and monotonicity checks."""

    time: datetime
    value: Decimal


@dataclass(frozen=True, slots=True)
class _Channel:
    index: int
    obis: str
    unit: str
    quantity: Quantity
    resolution: Decimal  # one step of the channel's scaler: the smallest change it can show


class _Builder:
    def __init__(self, poll: PollResult, known: MeterState, meter: MeterConfig, settings: NormalizeSettings) -> None:
        self.poll = poll
        self.known = known
        self.meter = meter
        self.settings = settings
        self.rules = settings.vee
        self.events: list[DomainEvent] = []

    def build(self) -> list[DomainEvent]:
        self._identity()
        self._clock()
        self._clock_sync()
        self._registers()
        for profile in _merge_profiles(self.meter.id, self.poll.profiles):
            self._profile(profile)
        self._event_logs()
        return self.events

    def _flag(self, obis: str, value: Decimal, time: datetime, verdict: Verdict) -> None:
        self.events.append(SuspectReadingFlagged(
            meter_id=self.meter.id, obis=obis, reason=verdict.reason, value=value, capture_time=time,
        ))

    # -- identity --

    def _identity(self) -> None:
        identity = self.poll.identity
        if identity is None:
            return
        event = MeterRegistered(
            meter_id=self.meter.id,
            make=self.meter.make,
            model=identity.model or self.meter.profile,
            serial=identity.serial,
            firmware=identity.firmware or "",
            # The fold keeps the first contact of an earlier registration; a re-registration needs
            # its own time so that its id differs from the first one's.
            first_contact=self.poll.read_time,
        )
        stored = self.known.identity
        if stored is not None and (stored.make, stored.model, stored.serial, stored.firmware) == (
            event.make, event.model, event.serial, event.firmware
        ):
            return
        self.events.append(event)

    # -- clock --

    def _clock(self) -> None:
        clock = self.poll.clock
        if clock is None:
            return
        checked_at = self.known.clock_checked_at
        if checked_at is not None and checked_at >= clock.gateway_time:
            return  # this check (or a later one) is already stored
        offset = seconds(clock.offset)
        self.events.append(ClockChecked(
            meter_id=self.meter.id, meter_time=clock.meter_time, gateway_time=clock.gateway_time,
            offset_s=offset,
        ))
        threshold = self.settings.clock_drift_threshold_s
        if abs(offset) > threshold:
            self.events.append(ClockDriftDetected(
                meter_id=self.meter.id, meter_time=clock.meter_time, gateway_time=clock.gateway_time,
                offset_s=offset, threshold_s=threshold,
            ))

    def _clock_sync(self) -> None:
        outcome = self.poll.clock_sync
        if outcome is None:
            return
        before = outcome.before
        if outcome.refused is not None:
            self.events.append(ClockSyncRefused(
                meter_id=self.meter.id, method=outcome.method, gateway_time=before.gateway_time,
                meter_time=before.meter_time, offset_s=seconds(before.offset),
                max_step_s=Decimal(str(outcome.max_step_s)), reason=outcome.refused,
            ))
        elif outcome.after is not None:
            after = outcome.after
            self.events.append(ClockSynchronised(
                meter_id=self.meter.id, method=outcome.method, gateway_time=before.gateway_time,
                meter_time_before=before.meter_time, offset_before_s=seconds(before.offset),
                gateway_time_after=after.gateway_time, meter_time_after=after.meter_time,
                offset_after_s=seconds(after.offset), verified=outcome.verified,
                deviation_min=after.deviation_min, status_flags=tuple(after.status_flags),
            ))

    # -- registers --

    def _registers(self) -> None:
        for reading in self.poll.registers:
            if isinstance(reading, RegisterReading):
                self._register(reading)

    def _register(self, reading: RegisterReading) -> None:
        quantity = quantity_of(reading.obis)
        capture = reading.capture_time or self.poll.read_time
        value = Decimal(reading.value)
        last = self.known.registers.get(reading.obis)
        if last is not None and last.capture_time >= capture:
            if last.capture_time == capture and last.value != value:
                self._flag(reading.obis, value, capture, suspect(
                    f"value differs from the stored {last.value} {last.unit} of the same capture time",
                ))
            return  # already stored, or older than what is stored
        if quantity.unit and reading.unit != quantity.unit:
            self._flag(reading.obis, value, capture, suspect(
                f"unit {reading.unit!r} where {quantity.name} must be in {quantity.unit!r}",
            ))
            return
        if quantity.kind == "cumulative" and last is not None:
            verdict = check_counter_step(
                last.capture_time, last.value, capture, value, unit=reading.unit,
                max_power_w=self.meter.max_power_w, resolution=Decimal(1).scaleb(reading.scaler),
                rules=self.rules,
            )
            if not verdict.ok:
                self._flag(reading.obis, value, capture, verdict)
                return
        self.events.append(RegisterRead(
            meter_id=self.meter.id, obis=reading.obis, quantity=quantity.name, value=value,
            unit=reading.unit or quantity.unit, capture_time=capture, read_time=self.poll.read_time,
        ))

    # -- load profiles --

    def _profile(self, profile: ProfileReading) -> None:
        meter_id = self.meter.id
        problem = _profile_problem(profile)
        if problem is not None:
            raise UnusableReading(meter_id, "load_profile", profile.obis, problem)
        clock_index = next(i for i, c in enumerate(profile.columns) if c.is_clock)
        status_index = next((i for i, c in enumerate(profile.columns) if _is_status(c)), None)
        channels = _channels(profile, exclude={clock_index, status_index})
        period = profile.capture_period_s
        last_end = self.known.interval_ends.get(profile.obis)

        rows = _new_rows(profile.rows, last_end)
        # Last good point of each cumulative channel: the stored register of the same counter when it
        # was captured before this poll's rows (a load-profile channel 1.0.1.8.0.255 *is* the register).
        points: dict[str, _Point] = {}
        for channel in channels:
            stored = self.known.registers.get(channel.obis)
            if channel.quantity.kind == "cumulative" and stored is not None:
                points[channel.obis] = _Point(stored.capture_time, stored.value)

        accepted: list[IntervalRow] = []
        flags_by_row: list[tuple[datetime, list[SuspectReadingFlagged]]] = []
        present: list[datetime] = []  # ends of rows the meter has, good or refused
        empty: list[datetime] = []  # ends of rows without a single value
        for time, row in rows:
            status = _status(row, status_index)
            values = {c.obis: v for c in channels if (v := _number(row.values[c.index])) is not None}
            if not values:
                empty.append(time)
                continue
            present.append(time)
            flags: list[SuspectReadingFlagged] = []
            verdict = check_status(status, self.rules)
            if not verdict.ok:
                reason = f"load profile {profile.obis} row {verdict.reason}"
                flags = [self._suspect(obis, value, time, reason) for obis, value in values.items()]
                values = {}
            for channel in channels:
                if channel.obis not in values:
                    continue
                verdict = self._check_channel(channel, values[channel.obis], time, period, points)
                if not verdict.ok:
                    flags.append(self._suspect(
                        channel.obis, values.pop(channel.obis), time, f"load profile {profile.obis}: {verdict.reason}",
                    ))
            if values:
                accepted.append(IntervalRow(
                    end_time=time, values=values, units={obis: _unit(channels, obis) for obis in values},
                    status=status,
                ))
            flags_by_row.append((time, flags))

        if not accepted:
            return  # everything read is pending (see the module docstring)
        horizon = accepted[-1].end_time
        for time, flags in flags_by_row:
            if time <= horizon:
                self.events.extend(flags)
        self.events.extend(_interval_events(meter_id, profile.obis, period, accepted))
        self.events.extend(_gaps(meter_id, profile, period, last_end, present, empty, horizon))

    def _suspect(self, obis: str, value: Decimal, time: datetime, reason: str) -> SuspectReadingFlagged:
        return SuspectReadingFlagged(
            meter_id=self.meter.id, obis=obis, reason=reason, value=value, capture_time=time,
        )

    def _check_channel(
        self, channel: _Channel, value: Decimal, time: datetime, period: int, points: dict[str, _Point],
    ) -> Verdict:
        kind = channel.quantity.kind
        if channel.quantity.unit and channel.unit != channel.quantity.unit:
            return suspect(f"unit {channel.unit!r} where {channel.quantity.name} must be in "
                                  f"{channel.quantity.unit!r}")
        if kind == "interval":
            return check_interval_energy(
                value, period, unit=channel.unit, max_power_w=self.meter.max_power_w,
                resolution=channel.resolution, rules=self.rules,
            )
        if kind != "cumulative":
            return GOOD
        point = points.get(channel.obis)
        if point is not None and point.time < time:
            verdict = check_counter_step(
                point.time, point.value, time, value, unit=channel.unit,
                max_power_w=self.meter.max_power_w, resolution=channel.resolution, rules=self.rules,
            )
            if not verdict.ok:
                return verdict
        if point is None or point.time < time:
            points[channel.obis] = _Point(time, value)
        return GOOD

    # -- event logs --

    def _event_logs(self) -> None:
        seen: set[str] = set()
        for entry in self.poll.events:
            if entry.time is None or entry.code is None:
                continue  # an entry without a time or code cannot be placed or understood
            watermark = _event_log_end(self.known, entry.log_obis)
            if watermark is not None and entry.time <= watermark:
                continue
            event = MeterEventLogged(
                meter_id=self.meter.id, log_obis=entry.log_obis, event_time=entry.time, code=entry.code,
                meaning=event_meaning(entry.code),
            )
            if event.event_id() not in seen:
                seen.add(event.event_id())
                self.events.append(event)


def _interval_events(meter_id: str, obis: str, period_s: int, rows: Sequence[IntervalRow]) -> list[IntervalsRecorded]:
    """The accepted rows (in time order) as one event per UTC day of their end times, each cut in
    halves until it encodes to at most ``MAX_INTERVALS_EVENT_BYTES``. UTC, not the meter's local
    day: the cut (and so each event's id) must not move when the meter's configured zone does, and a
    UTC day never spans two year streams. A catch-up of a week is then seven events, not one."""
    days: dict[date, list[IntervalRow]] = {}
    for row in rows:
        days.setdefault(row.end_time.astimezone(timezone.utc).date(), []).append(row)
    events: list[IntervalsRecorded] = []
    for day in sorted(days):
        events.extend(_bounded(IntervalsRecorded(
            meter_id=meter_id, profile_obis=obis, capture_period_s=period_s, rows=tuple(days[day]),
        )))
    return events


def _bounded(event: IntervalsRecorded) -> list[IntervalsRecorded]:
    if len(event.rows) == 1 or len(codec.dumps(event.to_data()).encode()) <= MAX_INTERVALS_EVENT_BYTES:
        return [event]
    half = len(event.rows) // 2
    return _bounded(replace(event, rows=event.rows[:half])) + _bounded(replace(event, rows=event.rows[half:]))


def _profile_problem(profile: ProfileReading) -> str | None:
    """Why a load profile reading cannot become intervals (None: it can)."""
    if not any(c.is_clock for c in profile.columns):
        return f"profile {profile.obis} has no clock column"
    if profile.capture_period_s <= 0 and profile.rows:
        # Intervals and gaps need a period; an event-driven profile is not a load profile.
        return f"profile {profile.obis} has capture period {profile.capture_period_s} s"
    return None


def _merge_problem(first: ProfileReading, other: ProfileReading) -> str | None:
    """Why two reads of one profile in a poll cannot be merged (None: they can)."""
    if first.columns != other.columns or first.capture_period_s != other.capture_period_s:
        return f"two reads of profile {first.obis} with different capture objects"
    return None


def _storable(moment: datetime) -> bool:
    """A reading at ``moment`` has a year stream to go to."""
    try:
        return MIN_YEAR <= moment.astimezone(timezone.utc).year <= MAX_YEAR
    except OverflowError:  # an instant beyond datetime's range once in UTC
        return False


def _event_log_end(state: MeterState, log_obis: str) -> datetime | None:
    """Time of the newest stored entry of an event log (None: nothing stored yet)."""
    return state.event_log_ends.get(log_obis)


def _is_status(column: CaptureColumn) -> bool:
    # 0.b.96.10.e.255: status objects (IDIS AMR profile status 0.0.96.10.1.255), class 1 value.
    parts = column.obis.split(".")
    return column.class_id == 1 and column.attribute == 2 and parts[2:4] == ["96", "10"]


def _number(cell: object) -> Decimal | None:
    if isinstance(cell, bool) or cell is None:
        return None
    if isinstance(cell, Decimal):
        return cell if cell.is_finite() else None
    if isinstance(cell, int):
        return Decimal(cell)
    return None


def _status(row: ProfileRow, status_index: int | None) -> int:
    if status_index is None:
        return 0
    cell = row.values[status_index]
    return cell if isinstance(cell, int) and not isinstance(cell, bool) else 0


def _channels(profile: ProfileReading, exclude: set[int | None]) -> list[_Channel]:
    """Capture columns holding numbers in at least one row (octet strings etc. are not values)."""
    out: list[_Channel] = []
    for index, column in enumerate(profile.columns):
        if index in exclude:
            continue
        if not any(_number(row.values[index]) is not None for row in profile.rows):
            continue
        if any(c.obis == column.obis for c in out):
            continue  # the same object captured twice (another attribute): keep the first
        out.append(_Channel(
            index=index, obis=column.obis, unit=column.unit, quantity=quantity_of(column.obis),
            resolution=Decimal(1).scaleb(column.scaler),
        ))
    return out


def _unit(channels: Sequence[_Channel], obis: str) -> str:
    return next(c.unit for c in channels if c.obis == obis)


def _new_rows(rows: Sequence[ProfileRow], last_end: datetime | None) -> list[tuple[datetime, ProfileRow]]:
    """Rows after the last stored interval end, by end time, one per end time (the first read)."""
    by_time: dict[datetime, ProfileRow] = {}
    for row in rows:
        if row.time is None:
            continue  # a null clock cell without a previous row: the row cannot be placed
        time = row.time.astimezone(timezone.utc)
        if last_end is not None and time <= last_end:
            continue
        by_time.setdefault(time, row)
    return sorted(by_time.items(), key=lambda item: item[0])


def _merge_profiles(meter_id: str, profiles: Sequence[ProfileReading]) -> list[ProfileReading]:
    """One reading per profile OBIS: chunked catch-up reads of one profile become one range."""
    merged: dict[str, ProfileReading] = {}
    for profile in profiles:
        other = merged.get(profile.obis)
        if other is None:
            merged[profile.obis] = profile
            continue
        problem = _merge_problem(other, profile)
        if problem is not None:
            raise UnusableReading(meter_id, "load_profile", profile.obis, problem)
        starts = [s for s in (other.start, profile.start) if s is not None]
        ends = [e for e in (other.end, profile.end) if e is not None]
        merged[profile.obis] = ProfileReading(
            obis=profile.obis, columns=profile.columns, capture_period_s=profile.capture_period_s,
            start=min(starts) if len(starts) == 2 else None, end=max(ends) if len(ends) == 2 else None,
            rows=other.rows + profile.rows,
        )
    return list(merged.values())


# --- gaps ----------------------------------------------------------------------------------------

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _grid_end(moment: datetime, period_s: int) -> datetime:
    """The end of the capture period containing ``moment``: the first period boundary at or after it.

    Periods are aligned on the UTC epoch, which for periods dividing an hour (15 min, 30 min, 1 h)
    is the same as the meter's local alignment in every whole- or quarter-hour time zone.
    """
    step = period_s * 1_000_000
    micros = (moment - _EPOCH) // timedelta(microseconds=1)
    return _EPOCH + timedelta(microseconds=-(-micros // step) * step)


def _gaps(
    meter_id: str,
    profile: ProfileReading,
    period_s: int,
    last_end: datetime | None,
    present: Sequence[datetime],
    empty: Sequence[datetime],
    horizon: datetime,
) -> list[ReadingGapDetected]:
    """Runs of capture periods with no row, from the stored end (or the requested start) to the last
    accepted row. A row covers the period it falls in, so a short row after a power-up or a clock
    adjustment does not make its period look missing."""
    period = timedelta(seconds=period_s)
    covered = sorted({_grid_end(t, period_s) for t in present})
    if last_end is not None:
        first = _grid_end(last_end, period_s) + period
    elif profile.start is not None:
        first = _grid_end(profile.start, period_s)
    else:
        first = covered[0]
    last = _grid_end(horizon, period_s)
    covered = [c for c in covered if first <= c <= last]
    empty_ends = sorted(_grid_end(t, period_s) for t in empty)
    runs: list[tuple[datetime, datetime]] = []  # (first missing end, last missing end)
    previous = first - period
    for end in covered:
        if end - previous > period:
            runs.append((previous + period, end - period))
        previous = end
    gaps = []
    for start_end, stop_end in runs:
        count = (stop_end - start_end) // period + 1
        lo = bisect.bisect_left(empty_ends, start_end)
        hi = bisect.bisect_right(empty_ends, stop_end)
        without_values = len(set(empty_ends[lo:hi]))
        if without_values == count:
            what = "rows without values"
        elif without_values:
            what = f"no row ({without_values} with a row without values)"
        else:
            what = "no row"
        gaps.append(ReadingGapDetected(
            meter_id=meter_id, profile_obis=profile.obis, gap_start=start_end - period, gap_end=stop_end,
            reason=f"{count} capture period(s) of {period_s} s with {what} in the meter's answer",
        ))
    return gaps


# --- planning per year stream --------------------------------------------------------------------


def _plan(
    poll: PollResult, states: Mapping[int, MeterState], events: Sequence[DomainEvent], settings: NormalizeSettings,
) -> list[AppendPlan]:
    by_year: dict[int, list[DomainEvent]] = {}
    for event in events:
        parts = split_by_year(event) if isinstance(event, IntervalsRecorded) else [(year_of(event), event)]
        for year, part in parts:
            by_year.setdefault(year, []).append(part)
    # A gap starts where the stored readings end, which can be in a year the poll itself did not
    # touch (e.g. the previous year's last interval): its stream state is needed too.
    missing = sorted(set(by_year) - set(states))
    if missing:
        raise MissingState(poll.meter_id, missing)
    metadata = EventMetadata(
        gateway_id=settings.gateway_id,
        recorded_at=poll.read_time,
        correlation_id=f"poll:{poll.meter_id}:{iso_utc(poll.read_time)}",
    )
    after: dict[int, MeterState] = {y: s for y, s in states.items() if s.version != NO_STREAM}
    plans = []
    for year in sorted(by_year):
        stream_events = by_year[year]
        state = states[year]
        expected = state.version
        if state.version == NO_STREAM:
            earlier = [y for y in after if y < year]
            if earlier:
                opened = after[max(earlier)].open_year(year)
                stream_events = [opened, *stream_events]
            state = MeterState.empty(poll.meter_id, year)
        ordered = _dedupe(stream_events)
        for event in ordered:
            state = state.apply(event)
        after[year] = state
        plans.append(AppendPlan(
            stream_id=stream_id(poll.meter_id, year),
            year=year,
            expected_version=expected,
            domain_events=tuple(ordered),
            events=tuple(to_new_event(event, metadata) for event in ordered),
            state_after=state,
        ))
    return plans


def _dedupe(events: Sequence[DomainEvent]) -> list[DomainEvent]:
    """Drop repeats of one fact within a plan (the store refuses an id twice in a stream)."""
    seen: set[str] = set()
    out = []
    for event in events:
        event_id = event.event_id()
        if event_id not in seen:
            seen.add(event_id)
            out.append(event)
    return out


__all__ = [
    "MAX_INTERVALS_EVENT_BYTES", "AppendPlan", "MissingState", "NormalizeError", "NormalizeSettings",
    "UnusableReading", "load_states", "needed_years", "normalize", "plan_poll", "usable_readings",
]
