"""Builders for the normalizer tests: readings as the readers return them, a meter config, and
folding a plan's events into stream states the way the store + repository would."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from drivers.readings import (
    CaptureColumn,
    ClockReading,
    EventLogEntry,
    Identity,
    ProfileReading,
    ProfileRow,
    RegisterReading,
)
from gateway.config.model import MeterConfig, SecurityConfig
from gateway.domain.meter import MeterState
from gateway.domain.normalize import AppendPlan, MissingState, NormalizeSettings, needed_years, normalize
from gateway.domain.poll_result import PollResult
from gateway.store.model import NO_STREAM

_T = TypeVar("_T")

METER_ID = "mtr-1"
LOAD_PROFILE = "1.0.99.1.0.255"
EVENT_LOG = "0.0.99.98.0.255"
IMPORT = "1.0.1.8.0.255"
EXPORT = "1.0.2.8.0.255"
UTC = timezone.utc
QUARTER = timedelta(minutes=15)

SETTINGS = NormalizeSettings(gateway_id="gw-test", clock_drift_threshold_s=Decimal(10))


def meter_config(max_power_w: Decimal = Decimal(20_000)) -> MeterConfig:
    return MeterConfig(
        id=METER_ID, make="landis_gyr", profile="e450", connection="c1", framing="wrapper",
        client_address=None, logical_address=None, physical_address=None, wport=1,
        security=SecurityConfig(level="none"), timezone=ZoneInfo("Europe/Berlin"),
        max_power_w=max_power_w, overrides={},
    )


def identity(firmware: str = "1.2.3") -> Identity:
    return Identity(serial="35000001", manufacturer="LGZ", model="E450", firmware=firmware,
                    logical_device_name="LGZ0035000001")


def register(obis: str, raw: int, scaler: int = 0, unit_code: int = 30, unit: str = "Wh",
             capture_time: datetime | None = None) -> RegisterReading:
    """A class 3 register as the reader scales it: value = raw * 10**scaler."""
    return RegisterReading(
        obis=obis, class_id=3 if capture_time is None else 4, value=Decimal(raw).scaleb(scaler),
        unit=unit, scaler=scaler, unit_code=unit_code, raw=raw, capture_time=capture_time,
    )


def clock(gateway_time: datetime, offset_s: float) -> ClockReading:
    offset = timedelta(seconds=offset_s)
    return ClockReading(
        meter_time=gateway_time + offset, gateway_time=gateway_time, offset=offset,
        deviation_min=-60, status=0, status_flags=(), raw=b"\x00" * 12,
    )


PROFILE_COLUMNS = (
    CaptureColumn(8, "0.0.1.0.0.255", 2, 0),
    CaptureColumn(1, "0.0.96.10.1.255", 2, 0),
    CaptureColumn(3, IMPORT, 2, 0, scaler=0, unit_code=30),
    CaptureColumn(3, EXPORT, 2, 0, scaler=0, unit_code=30),
)


Row = tuple[datetime, int, Decimal, Decimal]  # end time, status, +A Wh, -A Wh
BlankableRow = tuple[datetime, int, Decimal | None, Decimal | None]


def profile(rows: Sequence[BlankableRow],
            start: datetime | None = None, end: datetime | None = None,
            period_s: int = 900) -> ProfileReading:
    """Load profile 1.0.99.1.0.255 of (end time, status, +A Wh, -A Wh) rows."""
    return ProfileReading(
        obis=LOAD_PROFILE, columns=PROFILE_COLUMNS, capture_period_s=period_s, start=start, end=end,
        rows=tuple(ProfileRow(time=t, time_inferred=False, values=(t, status, a, b)) for t, status, a, b in rows),
    )


def steady_rows(first_end: datetime, count: int, start_wh: int = 1_000_000, step_wh: int = 250,
                status: int = 0) -> list[Row]:
    """``count`` contiguous quarter-hour rows with +A rising by ``step_wh`` per row."""
    return [
        (first_end + i * QUARTER, status, Decimal(start_wh + i * step_wh), Decimal(5_000))
        for i in range(count)
    ]


def event_entry(time: datetime, code: int) -> EventLogEntry:
    return EventLogEntry(log_obis=EVENT_LOG, time=time, code=code, values=())


def poll(read_time: datetime, **readings: object) -> PollResult:
    return PollResult(meter_id=METER_ID, read_time=read_time, **readings)  # type: ignore[arg-type]


class FakeHistory:
    """The meter's year streams as states, advanced by applying plans as the store would."""

    def __init__(self) -> None:
        self.states: dict[int, MeterState] = {}

    def states_for(self, p: PollResult) -> dict[int, MeterState]:
        years = set(needed_years(p))
        out = {y: self.states.get(y, MeterState.empty(METER_ID, y)) for y in years}
        earlier = [y for y in self.states if y < min(years)]
        if earlier:
            out[max(earlier)] = self.states[max(earlier)]
        # Every earlier stream may be needed by a gap; a store-backed caller uses plan_poll instead.
        out.update({y: s for y, s in self.states.items() if y not in out})
        return out

    def run(self, p: PollResult, meter: MeterConfig | None = None,
            settings: NormalizeSettings = SETTINGS) -> list[AppendPlan]:
        states = self.states_for(p)
        try:
            plans = normalize(p, states, meter or meter_config(), settings)
        except MissingState as exc:
            # As plan_poll does (the poller's path): load the years asked for, new streams included.
            states.update({y: MeterState.empty(METER_ID, y) for y in exc.years if y not in states})
            plans = normalize(p, states, meter or meter_config(), settings)
        self.apply(plans)
        return plans

    def apply(self, plans: Sequence[AppendPlan]) -> None:
        for plan in plans:
            current = self.states.get(plan.year, MeterState.empty(METER_ID, plan.year))
            assert current.version == plan.expected_version, (plan.stream_id, current.version)
            state = current if current.version != NO_STREAM else MeterState.empty(METER_ID, plan.year)
            for event in plan.domain_events:
                state = state.apply(event)
            assert state == plan.state_after
            self.states[plan.year] = state


def events_of(plans: Sequence[AppendPlan], type_name: str) -> list[Any]:
    return [e for plan in plans for e in plan.domain_events if e.TYPE == type_name]


def only(items: Sequence[_T]) -> _T:
    assert len(items) == 1, items
    return items[0]


def by_type(plans: Sequence[AppendPlan]) -> Mapping[str, int]:
    counts: dict[str, int] = {}
    for plan in plans:
        for event in plan.domain_events:
            counts[event.TYPE] = counts.get(event.TYPE, 0) + 1
    return counts


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


__all__ = [
    "EVENT_LOG", "EXPORT", "BlankableRow", "Row", "IMPORT", "LOAD_PROFILE", "METER_ID", "QUARTER", "SETTINGS", "UTC", "FakeHistory",
    "at", "by_type", "clock", "event_entry", "events_of", "identity", "meter_config", "only", "poll", "profile",
    "register", "steady_rows",
]
