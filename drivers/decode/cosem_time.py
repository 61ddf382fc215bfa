"""COSEM date-time (Blue Book 4.1.6.1: 12 octets) decoded with the quirks meters actually send.

A date-time is kept as its fields, each ``None`` when the meter sent "not specified" (0xFF, year 0xFFFF,
deviation 0x8000), plus the clock status bits. Turning it into an instant is a separate, explicit step:
with a specified deviation the offset is known; with deviation 0x8000 (most push meters) the meter's
configured timezone must be supplied, and the daylight-saving status bit settles the ambiguous hour.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from drivers.decode.errors import DateTimeError

DEVIATION_UNSPECIFIED = 0x8000


@dataclass(frozen=True)
class ClockStatus:
    """The clock status byte (Blue Book 4.1.6.1); bit 7 says daylight saving time was active."""

    raw: int

    @property
    def invalid(self) -> bool:
        return bool(self.raw & 0x01)

    @property
    def doubtful(self) -> bool:
        return bool(self.raw & 0x02)

    @property
    def different_base(self) -> bool:
        return bool(self.raw & 0x04)

    @property
    def invalid_status(self) -> bool:
        return bool(self.raw & 0x08)

    @property
    def daylight_saving_active(self) -> bool:
        return bool(self.raw & 0x80)

    def flags(self) -> list[str]:
        names = ("invalid", "doubtful", "different_base", "invalid_status", "daylight_saving_active")
        return [name for name in names if getattr(self, name)]


@dataclass(frozen=True)
class CosemDateTime:
    """A decoded COSEM date-time; ``deviation`` is in minutes with the COSEM sign (UTC = local + deviation)."""

    year: int | None
    month: int | None
    day: int | None
    weekday: int | None
    hour: int | None
    minute: int | None
    second: int | None
    hundredths: int | None
    deviation: int | None
    status: ClockStatus | None
    raw: bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> CosemDateTime:
        if len(data) != 12:
            raise DateTimeError(f"a COSEM date-time is 12 octets, got {len(data)}")

        def field(value: int) -> int | None:
            return None if value == 0xFF else value

        year = data[0] << 8 | data[1]
        deviation = data[9] << 8 | data[10]
        return cls(
            year=None if year == 0xFFFF else year,
            month=field(data[2]), day=field(data[3]), weekday=field(data[4]), hour=field(data[5]),
            minute=field(data[6]), second=field(data[7]), hundredths=field(data[8]),
            deviation=None if deviation == DEVIATION_UNSPECIFIED else (deviation ^ 0x8000) - 0x8000,
            status=None if data[11] == 0xFF else ClockStatus(data[11]),
            raw=bytes(data),
        )

    def local(self) -> _dt.datetime:
        """The wall-clock time as a naive datetime; hundredths and seconds default to 0 when unspecified."""
        if None in (self.year, self.month, self.day, self.hour, self.minute):
            raise DateTimeError(f"date-time {self} has unspecified date or time fields")
        hundredths = self.hundredths if self.hundredths is not None and self.hundredths < 100 else 0
        try:
            return _dt.datetime(self.year, self.month, self.day, self.hour, self.minute,  # type: ignore[arg-type]
                                self.second or 0, hundredths * 10_000)
        except ValueError as exc:
            raise DateTimeError(f"date-time {self} is not a valid calendar time: {exc}") from None

    def to_utc(self, timezone: _dt.tzinfo | None = None) -> _dt.datetime:
        """The instant in UTC; ``timezone`` (the meter's configured zone) is needed when deviation is 0x8000."""
        local = self.local()
        if self.deviation is not None:
            if not -720 <= self.deviation <= 840:
                raise DateTimeError(f"date-time deviation {self.deviation} min is out of range")
            return (local + _dt.timedelta(minutes=self.deviation)).replace(tzinfo=_dt.timezone.utc)
        if timezone is None:
            raise DateTimeError(f"date-time {self} has no deviation; the meter's timezone is needed")
        # In the repeated hour after the DST change, the status DST bit tells which occurrence is meant.
        fold = 0 if self.status is None or self.status.daylight_saving_active else 1
        return local.replace(tzinfo=timezone, fold=fold).astimezone(_dt.timezone.utc)

    def __str__(self) -> str:
        def two(value: int | None) -> str:
            return "??" if value is None else f"{value:02d}"

        year = "????" if self.year is None else f"{self.year:04d}"
        dev = "unspec" if self.deviation is None else str(self.deviation)
        st = "FF" if self.status is None else f"{self.status.raw:02X}"
        return (f"{year}-{two(self.month)}-{two(self.day)} {two(self.hour)}:{two(self.minute)}:"
                f"{two(self.second)} dev={dev} st={st}")
