"""What the readers return: typed, immutable readings of one meter.

Every value is a frozen dataclass; energies and other measured values are ``Decimal`` already
multiplied by the register's scaler (so in SI base units: Wh, W, V ...), and every instant is an
aware UTC datetime. The raw facts the conversion started from (scaler, unit code, clock deviation
and status byte) are kept next to the converted value, so a reading can be audited years later.
``to_jsonable`` gives a plain JSON-ready form (Decimal as string, datetimes ISO-8601) used by the
recorded fixtures.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Union

from drivers.units import unit_symbol

CellValue = Union[None, Decimal, int, bool, str, bytes, datetime]


@dataclass(frozen=True)
class Identity:
    """Who the meter says it is. ``manufacturer`` is the 3-letter FLAG id from the logical device name."""

    serial: str
    manufacturer: str | None
    model: str | None
    firmware: str | None
    logical_device_name: str | None


@dataclass(frozen=True)
class ClockReading:
    """The meter clock (class 8 attribute 2) against the gateway's clock.

    ``offset`` is meter time minus gateway time, the gateway time being the midpoint of the exchange.
    ``deviation_min`` is as sent (COSEM sign: UTC = local + deviation), ``None`` for 0x8000 ("not
    specified", the meter's configured timezone was used); ``status`` is the raw status byte or
    ``None`` when the meter sent 0xFF.
    """

    meter_time: datetime
    gateway_time: datetime
    offset: timedelta
    deviation_min: int | None
    status: int | None
    status_flags: tuple[str, ...]
    raw: bytes


@dataclass(frozen=True)
class ScalerUnit:
    """A register's attribute 3; ``unit_code`` None for objects without one (class 1 data)."""

    scaler: int
    unit_code: int | None

    @property
    def unit(self) -> str:
        return unit_symbol(self.unit_code)


@dataclass(frozen=True)
class RegisterReading:
    """One register value, scaled: ``value = raw * 10**scaler`` in ``unit``."""

    obis: str
    class_id: int
    value: Decimal
    unit: str
    scaler: int
    unit_code: int | None
    raw: int | Decimal  # as sent: an integer, or a Decimal for float32/float64 registers
    capture_time: datetime | None  # extended register (class 4) attribute 5, else None


@dataclass(frozen=True)
class RegisterRefused:
    """A register the meter refused; ``result`` is the COSEM data-access-result name."""

    obis: str
    class_id: int
    result: str


@dataclass(frozen=True)
class CaptureColumn:
    """One capture object of a profile generic buffer, with the scaler/unit its values were scaled by."""

    class_id: int
    obis: str
    attribute: int
    data_index: int
    scaler: int = 0
    unit_code: int | None = None

    @property
    def is_clock(self) -> bool:
        return self.class_id == 8 and self.attribute == 2

    @property
    def unit(self) -> str:
        return unit_symbol(self.unit_code)


@dataclass(frozen=True)
class ProfileRow:
    """One buffer entry; ``values`` has one cell per capture column, ``None`` where the meter sent null.

    ``time`` is the clock column's instant; ``time_inferred`` says it was null in the buffer and is the
    previous row's time plus the capture period (Blue Book 4.3.6 allows omitting regular timestamps).
    """

    time: datetime | None
    time_inferred: bool
    values: tuple[CellValue, ...]


@dataclass(frozen=True)
class ProfileReading:
    obis: str
    columns: tuple[CaptureColumn, ...]
    capture_period_s: int
    start: datetime | None
    end: datetime | None
    rows: tuple[ProfileRow, ...]

    def column(self, obis: str, attribute: int = 2) -> int:
        """Index of the capture column for ``obis``/``attribute`` (KeyError if it is not captured)."""
        for index, column in enumerate(self.columns):
            if column.obis == obis and column.attribute == attribute:
                return index
        raise KeyError(f"{obis} attribute {attribute} is not a capture object of {self.obis}")


@dataclass(frozen=True)
class EventLogEntry:
    """One event log entry: when, the event code, and the remaining captured values in column order."""

    log_obis: str
    time: datetime | None
    code: int | None
    values: tuple[CellValue, ...]


def to_jsonable(value: Any) -> Any:
    """Plain JSON-ready form of a reading (or tuple/list/dict of them); lossless for our value types."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {"type": type(value).__name__}
        out.update({f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)})
        return out
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, Decimal):
        return {"decimal": str(value)}
    if isinstance(value, datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, timedelta):
        return {"seconds": str(Decimal(value.days * 86_400 + value.seconds) + Decimal(value.microseconds).scaleb(-6))}
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    return value
