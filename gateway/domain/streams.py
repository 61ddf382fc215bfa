"""Stream naming: one event stream per meter per UTC year, "Meter:<meter id>:<year>".

A year stream keeps Cosmos DB partitions bounded and lets old years be archived whole. The year of
an event is the UTC year of the reading's capture time (not of when the gateway read it), so a
load-profile row of 31 December fetched on 2 January lands in the previous year's stream;
``split_by_year`` cuts one ``IntervalsRecorded`` into per-year events for that reason.
"""
from __future__ import annotations

import re
from dataclasses import replace
from datetime import timezone
from typing import Final

from gateway.domain.events import (
    ClockChecked,
    ClockDriftDetected,
    ClockSynchronised,
    ClockSyncRefused,
    DomainEvent,
    IntervalsRecorded,
    MeterEventLogged,
    MeterRegistered,
    ReadingGapDetected,
    RegisterRead,
    SuspectReadingFlagged,
    YearStreamOpened,
)

STREAM_CATEGORY: Final[str] = "Meter"
MIN_YEAR: Final[int] = 1970
MAX_YEAR: Final[int] = 9999

# Letters, digits, '.', '_' and '-' only: ':' separates the stream id parts, and '/', '\\', '?', '#'
# are not allowed in Cosmos DB ids. 64 characters covers DLMS logical device names (16 octets) and
# serial numbers with a prefix.
_METER_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_STREAM_ID: Final = re.compile(rf"^{STREAM_CATEGORY}:([^:]*):([0-9]{{4}})$")


class StreamNameError(ValueError):
    """A meter id, year or stream id that cannot name a meter year stream."""


class InvalidMeterId(StreamNameError):
    def __init__(self, meter_id: object) -> None:
        self.meter_id = meter_id
        super().__init__(
            f"invalid meter id {meter_id!r}: 1-64 characters of letters, digits, '.', '_', '-',"
            " starting with a letter or digit"
        )


class InvalidYear(StreamNameError):
    def __init__(self, year: object, meter_id: str | None = None) -> None:
        self.year = year
        self.meter_id = meter_id
        super().__init__(f"invalid year {year!r} for meter {meter_id!r}: {MIN_YEAR}..{MAX_YEAR}")


class InvalidStreamId(StreamNameError):
    def __init__(self, stream_id: object) -> None:
        self.stream_id = stream_id
        super().__init__(f"{stream_id!r} is not a meter year stream id like 'Meter:<id>:2026'")


class EventSpansYears(StreamNameError):
    """An event whose readings fall in more than one year; split it with ``split_by_year``."""

    def __init__(self, event: DomainEvent, years: list[int]) -> None:
        self.meter_id = event.meter_id
        self.years = years
        super().__init__(f"{event.TYPE} of meter {event.meter_id!r} spans the years {years}")


def validate_meter_id(meter_id: str) -> str:
    if not isinstance(meter_id, str) or not _METER_ID.match(meter_id):
        raise InvalidMeterId(meter_id)
    return meter_id


def _validate_year(year: int, meter_id: str | None = None) -> int:
    if not isinstance(year, int) or isinstance(year, bool) or not MIN_YEAR <= year <= MAX_YEAR:
        raise InvalidYear(year, meter_id)
    return year


def stream_id(meter_id: str, year: int) -> str:
    validate_meter_id(meter_id)
    return f"{STREAM_CATEGORY}:{meter_id}:{_validate_year(year, meter_id)}"


def meter_stream_prefix(meter_id: str) -> str:
    """Prefix shared by all year streams of one meter (for ``EventStore.list_streams``)."""
    return f"{STREAM_CATEGORY}:{validate_meter_id(meter_id)}:"


def parse_stream_id(text: str) -> tuple[str, int]:
    """(meter id, year) of a stream id made by ``stream_id``; InvalidStreamId otherwise."""
    match = _STREAM_ID.match(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidStreamId(text)
    meter_id, year = match.group(1), int(match.group(2))
    try:
        return validate_meter_id(meter_id), _validate_year(year, meter_id)
    except StreamNameError:
        raise InvalidStreamId(text) from None


def _years(event: DomainEvent) -> list[int]:
    if isinstance(event, IntervalsRecorded):
        return sorted({row.end_time.astimezone(timezone.utc).year for row in event.rows})
    if isinstance(event, YearStreamOpened):
        return [event.year]
    if isinstance(event, (RegisterRead, SuspectReadingFlagged)):
        moment = event.capture_time
    elif isinstance(event, MeterRegistered):
        moment = event.first_contact
    elif isinstance(event, (ClockChecked, ClockDriftDetected, ClockSynchronised, ClockSyncRefused)):
        # The gateway's clock, not the meter's: a drifting meter clock must not pick the stream.
        moment = event.gateway_time
    elif isinstance(event, MeterEventLogged):
        moment = event.event_time
    elif isinstance(event, ReadingGapDetected):
        # The gap belongs where the readings are missing, i.e. where it starts.
        moment = event.gap_start
    else:
        raise TypeError(f"no year rule for {type(event).__name__}")
    return [moment.astimezone(timezone.utc).year]


def year_of(event: DomainEvent) -> int:
    """UTC year of the event's capture time; EventSpansYears for profile rows of several years."""
    years = _years(event)
    if len(years) != 1:
        raise EventSpansYears(event, years)
    return years[0]


def split_by_year(event: IntervalsRecorded) -> list[tuple[int, IntervalsRecorded]]:
    """One IntervalsRecorded per UTC year of its rows' end times, oldest year first.

    Each part has its own span and thus its own deterministic event id; an event within one year
    comes back unchanged.
    """
    years = _years(event)
    if len(years) == 1:
        return [(years[0], event)]
    return [
        (year, replace(event, rows=tuple(r for r in event.rows if r.end_time.year == year)))
        for year in years
    ]
