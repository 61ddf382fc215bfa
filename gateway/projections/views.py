"""The views people read, as projections of the meter events: latest reading, daily consumption, fleet.

Each projection here says which event types it wants, which documents an event lands in
(``targets``) and how a document changes (``apply``, a pure function of the document body and one
event). Bodies are JSON-ready dicts (Decimals as strings, times as ISO-8601 UTC) so the SQLite and
Cosmos view stores hold the same documents. The engine (gateway.projections.engine) does the
reading, skipping of already-applied events and saving.

* ``latest_reading``: one document per meter: last value of each register with its unit, identity,
  last contact, last clock check and last drift detection.
* ``daily_consumption``: one document per meter per LOCAL day (the meter's configured time zone):
  the load-profile values of that day (cumulative and per-period energy channels) and the first/last
  register reads; import/export Wh and missing intervals are derived from them (``summarise_day``).
  The day holding the meter's newest data is ``inProgress``: intervals still to come are not missing.
  A row at local midnight is kept in both days it bounds: it ends the one and starts the other.
* ``fleet_overview``: one small document per meter (no single hot document: on Cosmos each lands
  in its meter's partition); ``fleet_summary`` adds them up when read.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from decimal import Decimal
from typing import Any, Callable, Iterable, Mapping, Sequence
from zoneinfo import ZoneInfo

from gateway.domain.events import (
    ClockChecked,
    ClockDriftDetected,
    DomainEvent,
    IntervalsRecorded,
    MeterRegistered,
    ReadingGapDetected,
    RegisterRead,
    SuspectReadingFlagged,
)
from gateway.domain.mapper import EVENT_TYPES
from gateway.config.model import FleetConfig
from gateway.domain.quantities import quantity_of
from gateway.store.codec import decimal_text, iso_utc, parse_utc
from gateway.store.model import RecordedEvent

LATEST_READING = "latest_reading"
DAILY_CONSUMPTION = "daily_consumption"
FLEET_OVERVIEW = "fleet_overview"

# Energy totals only (tariff E=0, current value F=255): the channels a daily figure is made of.
_IMPORT = ("active_energy_import", "active_energy_import_interval")
_EXPORT = ("active_energy_export", "active_energy_export_interval")
_ENERGY_QUANTITIES = frozenset((*_IMPORT, *_EXPORT))
_WH_PER_UNIT = {"Wh": Decimal(1), "kWh": Decimal(1000)}


@dataclass(frozen=True, slots=True)
class Target:
    """A document an event lands in: its key in the view and its partition (the meter id)."""

    key: str
    partition: str


def _later(a: str | None, b: datetime) -> bool:
    """True when ``b`` is at or after the stored time ``a`` (or nothing is stored)."""
    return a is None or b >= parse_utc(a)


def _max_time(a: str | None, b: datetime) -> str:
    return iso_utc(b) if _later(a, b) else a  # type: ignore[return-value]


# ---- latest reading ---------------------------------------------------------------------------


class LatestReadingProjection:
    name = LATEST_READING
    event_types = frozenset(
        {RegisterRead.TYPE, ClockChecked.TYPE, ClockDriftDetected.TYPE, MeterRegistered.TYPE}
    )

    def targets(self, event: DomainEvent) -> list[Target]:
        return [Target(event.meter_id, event.meter_id)]

    def apply(
        self, body: dict[str, Any] | None, event: DomainEvent, recorded: RecordedEvent, key: str
    ) -> dict[str, Any]:
        doc = body or {"meterId": event.meter_id, "registers": {}, "lastContact": None,
                       "clock": None, "lastDrift": None, "identity": None}
        # Every rule keeps the newest fact by its own time, so the result does not depend on the
        # order in which streams (or feed ranges) deliver their events.
        if isinstance(event, RegisterRead):
            stored = doc["registers"].get(event.obis)
            if stored is None or _later(stored["captureTime"], event.capture_time):
                doc["registers"][event.obis] = {
                    "quantity": event.quantity, "value": decimal_text(event.value), "unit": event.unit,
                    "captureTime": iso_utc(event.capture_time), "readTime": iso_utc(event.read_time),
                }
            doc["lastContact"] = _max_time(doc["lastContact"], event.read_time)
        elif isinstance(event, ClockChecked):
            if doc["clock"] is None or _later(doc["clock"]["checkedAt"], event.gateway_time):
                doc["clock"] = {"offsetS": decimal_text(event.offset_s), "checkedAt": iso_utc(event.gateway_time),
                                "meterTime": iso_utc(event.meter_time)}
            doc["lastContact"] = _max_time(doc["lastContact"], event.gateway_time)
        elif isinstance(event, ClockDriftDetected):
            if doc["lastDrift"] is None or _later(doc["lastDrift"]["detectedAt"], event.gateway_time):
                doc["lastDrift"] = {"offsetS": decimal_text(event.offset_s), "thresholdS": decimal_text(event.threshold_s),
                                    "detectedAt": iso_utc(event.gateway_time)}
            doc["lastContact"] = _max_time(doc["lastContact"], event.gateway_time)
        elif isinstance(event, MeterRegistered):
            doc["identity"] = {"make": event.make, "model": event.model, "serial": event.serial,
                               "firmware": event.firmware, "firstContact": iso_utc(event.first_contact)}
        return doc

    def finish(self, body: dict[str, Any], key: str) -> dict[str, Any]:
        return body


def drift_exceeded(doc: Mapping[str, Any]) -> bool:
    """Whether the meter's most recent clock check is the one that detected drift."""
    drift, clock = doc.get("lastDrift"), doc.get("clock")
    if drift is None:
        return False
    return clock is None or parse_utc(drift["detectedAt"]) >= parse_utc(clock["checkedAt"])


# ---- daily consumption ------------------------------------------------------------------------


def day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """UTC start and end of a local calendar day (23 or 25 hours long on DST change days)."""
    start = datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(timezone.utc)
    following = day + timedelta(days=1)
    end = datetime(following.year, following.month, following.day, tzinfo=zone).astimezone(timezone.utc)
    return start, end


def _local_day(moment: datetime, zone: ZoneInfo) -> date:
    return moment.astimezone(zone).date()


def _days_of_row(end: datetime, period: timedelta, zone: ZoneInfo) -> set[date]:
    # The interval (end - period, end] belongs to the day it starts in; its end value also opens
    # the next day when it sits on the local midnight between them.
    return {_local_day(end - period, zone), _local_day(end, zone)}


@lru_cache(maxsize=1024)
def _quantity_name(obis: str) -> str:
    return quantity_of(obis).name


def _energy_channel(obis: str) -> str | None:
    name = _quantity_name(obis)
    return name if name in _ENERGY_QUANTITIES else None


def day_key(meter_id: str, day: date) -> str:
    return f"{meter_id}/{day.isoformat()}"


class DailyConsumptionProjection:
    name = DAILY_CONSUMPTION
    event_types = frozenset({IntervalsRecorded.TYPE, RegisterRead.TYPE})

    def __init__(self, zone_of: Callable[[str], ZoneInfo]) -> None:
        self._zone_of = zone_of

    def targets(self, event: DomainEvent) -> list[Target]:
        zone = self._zone_of(event.meter_id)
        days: set[date] = set()
        if isinstance(event, IntervalsRecorded):
            period = timedelta(seconds=event.capture_period_s)
            for row in event.rows:
                if any(_energy_channel(obis) for obis in row.values):
                    days |= _days_of_row(row.end_time, period, zone)
        elif isinstance(event, RegisterRead) and _energy_channel(event.obis) in ("active_energy_import",
                                                                                "active_energy_export"):
            days.add(_local_day(event.capture_time, zone))
        return [Target(day_key(event.meter_id, d), event.meter_id) for d in sorted(days)]

    def apply(
        self, body: dict[str, Any] | None, event: DomainEvent, recorded: RecordedEvent, key: str
    ) -> dict[str, Any]:
        zone = self._zone_of(event.meter_id)
        day = date.fromisoformat(key.rsplit("/", 1)[1])
        doc = body or {"meterId": event.meter_id, "date": day.isoformat(), "timezone": zone.key,
                       "periodS": None, "rows": {}, "registers": {}}
        if isinstance(event, IntervalsRecorded):
            period = timedelta(seconds=event.capture_period_s)
            doc["periodS"] = event.capture_period_s
            for row in event.rows:
                if day not in _days_of_row(row.end_time, period, zone):
                    continue
                values = {
                    obis: decimal_text(value * _WH_PER_UNIT[row.units[obis]])
                    for obis, value in row.values.items()
                    if _energy_channel(obis) and row.units.get(obis) in _WH_PER_UNIT
                }
                if values:
                    # Keyed by end time: the same row read twice is the same entry.
                    doc["rows"][iso_utc(row.end_time)] = values
        elif isinstance(event, RegisterRead) and event.unit in _WH_PER_UNIT:
            value = decimal_text(event.value * _WH_PER_UNIT[event.unit])
            entry = doc["registers"].setdefault(event.obis, {"first": None, "last": None})
            read = {"time": iso_utc(event.capture_time), "value": value}
            if entry["first"] is None or event.capture_time < parse_utc(entry["first"]["time"]):
                entry["first"] = read
            if entry["last"] is None or event.capture_time >= parse_utc(entry["last"]["time"]):
                entry["last"] = read
        return doc

    def finish(self, body: dict[str, Any], key: str) -> dict[str, Any]:
        body.update(summarise_day(body))
        return body


def _channel_energy(rows: Mapping[datetime, Mapping[str, str]], start: datetime, end: datetime,
                    quantities: Sequence[str]) -> Decimal | None:
    """Energy of one direction over the day from the stored rows; None if no channel has data."""
    cumulative, per_period = quantities
    points = sorted(
        (moment, Decimal(value))
        for moment, values in rows.items() if start <= moment <= end
        for obis, value in values.items() if _quantity_name(obis) == cumulative
    )
    if len(points) >= 2:
        # The sum of the per-interval deltas of a cumulative counter telescopes to last - first,
        # which stays exact across a gap in the middle of the day.
        return points[-1][1] - points[0][1]
    sums = [
        Decimal(value)
        for moment, values in rows.items() if start < moment <= end
        for obis, value in values.items() if _quantity_name(obis) == per_period
    ]
    return sum(sums, Decimal(0)) if sums else None


def _latest_known(doc: Mapping[str, Any], rows: Iterable[datetime]) -> datetime | None:
    """The newest moment the document has data for: an interval end or a register read."""
    moments = [*rows, *(parse_utc(entry["last"]["time"]) for entry in doc.get("registers", {}).values()
                        if entry.get("last") is not None)]
    return max(moments, default=None)


def expected_intervals(doc: Mapping[str, Any]) -> int | None:
    """Intervals of the whole local day (96; 92 or 100 on DST change days), None without a period."""
    period_s = doc.get("periodS")
    if not period_s:
        return None
    start, end = day_bounds(date.fromisoformat(doc["date"]), ZoneInfo(doc["timezone"]))
    return int((end - start).total_seconds()) // period_s


def summarise_day(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Derived figures of a daily document: energy from its intervals and interval counts.

    A day whose newest data (interval end or register read) lies before its end is in progress:
    only the intervals that have ended by then are expected, so the hours still to come do not
    count as missing."""
    zone = ZoneInfo(doc["timezone"])
    start, end = day_bounds(date.fromisoformat(doc["date"]), zone)
    rows = {parse_utc(moment): values for moment, values in doc["rows"].items()}
    period_s = doc.get("periodS")
    known = _latest_known(doc, rows)
    in_progress = known is not None and known < end
    expected = expected_intervals(doc)
    if in_progress and period_s:
        expected = max(int((known - start).total_seconds()), 0) // period_s  # type: ignore[operator]
    present = sum(1 for moment in rows if start < moment <= end)
    import_wh = _channel_energy(rows, start, end, _IMPORT)
    export_wh = _channel_energy(rows, start, end, _EXPORT)
    return {
        "importWh": None if import_wh is None else decimal_text(import_wh),
        "exportWh": None if export_wh is None else decimal_text(export_wh),
        "intervalsExpected": expected,
        "intervalsPresent": present,
        "intervalsMissing": None if expected is None else max(expected - present, 0),
        # The start value (the row at local midnight) is needed for the first interval's energy.
        "complete": expected is not None and not in_progress and present == expected and start in rows,
        "inProgress": in_progress,
    }


@dataclass(frozen=True, slots=True)
class DailyFigure:
    """One row of daily consumption as people read it."""

    meter_id: str
    day: date
    import_wh: Decimal | None
    export_wh: Decimal | None
    source: str  # "intervals", "registers" or "none"
    intervals_expected: int | None
    intervals_missing: int | None
    complete: bool
    timezone: str = ""  # IANA name of the meter's zone the day is local to
    # The meter's newest data lies inside this day: intervals expected are those ended by then.
    in_progress: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "meterId": self.meter_id, "date": self.day.isoformat(),
            "importWh": None if self.import_wh is None else decimal_text(self.import_wh),
            "exportWh": None if self.export_wh is None else decimal_text(self.export_wh),
            "source": self.source, "intervalsExpected": self.intervals_expected,
            "intervalsMissing": self.intervals_missing, "complete": self.complete,
            "inProgress": self.in_progress, "timezone": self.timezone,
        }


def _register_last(doc: Mapping[str, Any], quantity: str) -> tuple[Decimal, Decimal] | None:
    """(first, last) register value of the day for ``quantity``, if it was read that day."""
    for obis, entry in doc.get("registers", {}).items():
        if _quantity_name(obis) == quantity and entry["last"] is not None:
            return Decimal(entry["first"]["value"]), Decimal(entry["last"]["value"])
    return None


DAY_SETTLE = timedelta(hours=1)
"""How long after its local end a meter's newest day still reads as in progress, at least: the
intervals that end at midnight are read by the first poll after it (``day_settle`` of a fleet)."""


def day_settle(fleet: FleetConfig) -> timedelta:
    """How long the first load-profile poll after midnight may take to come in this fleet: its
    interval, jitter and meter deadline (at least ``DAY_SETTLE``)."""
    schedule, limits = fleet.schedules.load_profile, fleet.limits
    if not schedule.enabled:
        return DAY_SETTLE
    return max(DAY_SETTLE, timedelta(seconds=schedule.interval_s + schedule.jitter_s + limits.meter_deadline_s))


def daily_figures(
    docs: Iterable[Mapping[str, Any]], *, now: datetime | None = None, settle: timedelta = DAY_SETTLE
) -> list[DailyFigure]:
    """Daily figures of one meter's documents (sorted by day). A day without load-profile energy
    falls back to register reads: the last read of the day minus the last read of the previous day
    that has one (or the first read of the same day when there is none before).

    A day is in progress only while it is the meter's newest and, given ``now`` (decided when the
    figures are read, so the projection itself stays a function of the events), its local end is
    less than ``settle`` ago (``day_settle`` of the fleet). Once a later day has data or the day is over, the day is finished
    and every interval of it is expected again: a meter that went silent mid-day shows its missing
    afternoon as missing, not as still to come. Documents written before ``inProgress`` existed read
    as finished days."""
    figures: list[DailyFigure] = []
    previous_last: dict[str, Decimal] = {}
    ordered = sorted(docs, key=lambda d: d["date"])
    for index, doc in enumerate(ordered):
        expected, missing = doc.get("intervalsExpected"), doc.get("intervalsMissing")
        in_progress = bool(doc.get("inProgress"))
        if in_progress and (index < len(ordered) - 1 or _day_over(doc, now, settle)):
            in_progress = False
            expected = expected_intervals(doc)
            if expected is not None:
                missing = max(expected - int(doc.get("intervalsPresent") or 0), 0)
        energy: dict[str, Decimal | None] = {}
        from_registers = False
        for direction, quantity, field_name in (("import", "active_energy_import", "importWh"),
                                                ("export", "active_energy_export", "exportWh")):
            value = None if doc.get(field_name) is None else Decimal(doc[field_name])
            registers = _register_last(doc, quantity)
            if value is None and registers is not None:
                first, last = registers
                value = last - previous_last.get(quantity, first)
                from_registers = True
            if registers is not None:
                previous_last[quantity] = registers[1]
            energy[direction] = value
        has_intervals = doc.get("importWh") is not None or doc.get("exportWh") is not None
        figures.append(DailyFigure(
            meter_id=doc["meterId"],
            day=date.fromisoformat(doc["date"]),
            import_wh=energy["import"],
            export_wh=energy["export"],
            source="intervals" if has_intervals else ("registers" if from_registers else "none"),
            intervals_expected=expected,
            intervals_missing=missing,
            complete=bool(doc.get("complete")),
            timezone=doc.get("timezone", ""),
            in_progress=in_progress,
        ))
    return figures


def _day_over(doc: Mapping[str, Any], now: datetime | None, settle: timedelta) -> bool:
    if now is None:
        return False
    _, end = day_bounds(date.fromisoformat(doc["date"]), ZoneInfo(doc["timezone"]))
    return now >= end + settle


# ---- fleet overview ---------------------------------------------------------------------------


class FleetOverviewProjection:
    name = FLEET_OVERVIEW
    event_types = frozenset(EVENT_TYPES)

    def targets(self, event: DomainEvent) -> list[Target]:
        return [Target(event.meter_id, event.meter_id)]

    def apply(
        self, body: dict[str, Any] | None, event: DomainEvent, recorded: RecordedEvent, key: str
    ) -> dict[str, Any]:
        doc = body or {"meterId": event.meter_id, "events": {}, "lastRecordedAt": None,
                       "driftDetections": 0, "suspectReadings": 0, "gaps": 0}
        # Counters: correct only because the engine applies each event to a document exactly once.
        doc["events"][event.TYPE] = doc["events"].get(event.TYPE, 0) + 1
        doc["lastRecordedAt"] = _max_time(doc["lastRecordedAt"], recorded.metadata.recorded_at)
        if isinstance(event, ClockDriftDetected):
            doc["driftDetections"] += 1
        elif isinstance(event, SuspectReadingFlagged):
            doc["suspectReadings"] += 1
        elif isinstance(event, ReadingGapDetected):
            doc["gaps"] += 1
        return doc

    def finish(self, body: dict[str, Any], key: str) -> dict[str, Any]:
        return body


def fleet_summary(docs: Iterable[Mapping[str, Any]], now: datetime,
                  silent_after: timedelta = timedelta(hours=24)) -> dict[str, Any]:
    """The fleet's totals, added up from the per-meter documents at read time."""
    events: dict[str, int] = {}
    meters = silent = drifting = suspect = gaps = 0
    for doc in docs:
        meters += 1
        for event_type, count in doc["events"].items():
            events[event_type] = events.get(event_type, 0) + count
        if doc["lastRecordedAt"] is None or now - parse_utc(doc["lastRecordedAt"]) > silent_after:
            silent += 1
        drifting += doc["driftDetections"] > 0
        suspect += doc["suspectReadings"]
        gaps += doc["gaps"]
    return {"meters": meters, "metersSilent": silent, "silentAfterS": int(silent_after.total_seconds()),
            "metersWithDrift": drifting, "suspectReadings": suspect, "gaps": gaps,
            "events": dict(sorted(events.items())), "totalEvents": sum(events.values())}
