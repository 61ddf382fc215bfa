"""The COSEM object list of a simulated meter: which objects exist and how their attributes encode.

`read_attribute` answers one GET (class id, OBIS, attribute, optional selective access) with
either the A-XDR encoded Data or a data-access-result. Scalar values use dlms-cosem's
`dlms_data` classes; buffers are encoded here because they are built row by row and a day of
profile must stay cheap when one process serves a thousand meters.

COSEM references: clock (class 8), data (class 1), register (class 3), profile generic
(class 7, IEC 62056-6-2 §4.3.6: capture_period in seconds, range_descriptor selector 1,
entry_descriptor selector 2).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Callable

from dlms_cosem import dlms_data
from dlms_cosem.enumerations import ActionResultStatus, DataAccessResult

from drivers.decode.axdr import encode_length
from drivers.simulator import meter as m
from drivers.simulator.meter import SimulatedMeter

CLASS_DATA = 1
CLASS_REGISTER = 3
CLASS_PROFILE_GENERIC = 7
CLASS_CLOCK = 8
CLASS_ASSOCIATION_LN = 15

OBIS_STATUS = "0.0.96.10.1.255"


class SelectiveAccessError(ValueError):
    """The access selector or its parameters are malformed or not applicable."""


def obis_from_bytes(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)


def obis_to_bytes(obis: str) -> bytes:
    return bytes(int(part) for part in obis.split("."))


def encode_cosem_datetime(dt: datetime, deviation: int | None, status: int = 0) -> bytes:
    """12-byte COSEM date-time of a naive local wall time (Blue Book 4.1.6.1).

    deviation is in the dlms-cosem/IDIS sign convention (-60 for UTC+1); None encodes 0x8000.
    """
    dev = 0x8000 if deviation is None else deviation & 0xFFFF
    return (
        dt.year.to_bytes(2, "big")
        + bytes((dt.month, dt.day, dt.isoweekday(), dt.hour, dt.minute, dt.second, dt.microsecond // 10_000))
        + dev.to_bytes(2, "big")
        + bytes((status,))
    )


def decode_cosem_datetime(raw: bytes, local_tz: timezone) -> datetime:
    """Aware datetime from 12 COSEM bytes; unspecified fields (0xFF) count as 0, 0x8000 deviation as local."""
    if len(raw) != 12:
        raise SelectiveAccessError(f"date-time must be 12 bytes, got {len(raw)}")
    year = int.from_bytes(raw[0:2], "big")
    month, day, _weekday, hour, minute, second, hundredths = raw[2:9]
    if year == 0xFFFF or month > 12 or day > 31 or month == 0 or day == 0:
        raise SelectiveAccessError("date-time with wildcard or invalid date is not a range bound")
    deviation = int.from_bytes(raw[9:11], "big", signed=True)
    tz = local_tz if raw[9:11] == b"\x80\x00" else timezone(timedelta(minutes=-deviation))
    try:
        return datetime(
            year, month, day,
            0 if hour == 0xFF else hour, 0 if minute == 0xFF else minute,
            0 if second == 0xFF else second, 0 if hundredths == 0xFF else hundredths * 10_000,
            tzinfo=tz,
        )
    except ValueError as exc:
        raise SelectiveAccessError(f"invalid date-time: {exc}") from None


@dataclass(frozen=True)
class CaptureObject:
    class_id: int
    obis: str
    attribute: int
    data_index: int = 0

    def encode(self) -> bytes:
        return (
            b"\x02\x04\x12" + self.class_id.to_bytes(2, "big")
            + b"\x09\x06" + obis_to_bytes(self.obis)
            + b"\x0f" + self.attribute.to_bytes(1, "big", signed=True)
            + b"\x12" + self.data_index.to_bytes(2, "big")
        )


CLOCK_CAPTURE = CaptureObject(CLASS_CLOCK, m.OBIS_CLOCK, 2)
LOAD_PROFILE_COLUMNS = (
    CLOCK_CAPTURE,
    CaptureObject(CLASS_DATA, OBIS_STATUS, 2),
    CaptureObject(CLASS_REGISTER, m.OBIS_ENERGY_IMPORT, 2),
    CaptureObject(CLASS_REGISTER, m.OBIS_ENERGY_EXPORT, 2),
)
EVENT_LOG_COLUMNS = (CLOCK_CAPTURE, CaptureObject(CLASS_DATA, m.OBIS_EVENT_CODE, 2))


@dataclass(frozen=True)
class Selection:
    """A decoded access selection on a profile buffer."""

    from_: datetime | None = None
    to: datetime | None = None
    from_entry: int = 1
    to_entry: int = 0  # 0 = up to the newest
    columns: tuple[int, ...] | None = None  # indexes into the capture objects, None = all


def _parse_selection(
    selector: int, params: bytes, columns: tuple[CaptureObject, ...], local_tz: timezone
) -> Selection:
    try:
        parsed = dlms_data.DlmsDataParser().parse(params, limit=1)[0]
    except Exception as exc:  # dlms-cosem raises KeyError/IndexError/ValueError on bad A-XDR
        raise SelectiveAccessError(f"undecodable access parameters: {type(exc).__name__}") from None
    if not isinstance(parsed, dlms_data.DataStructure):
        raise SelectiveAccessError("access parameters must be a structure")
    items = parsed.value
    if selector == 1:
        if len(items) != 4:
            raise SelectiveAccessError("range_descriptor needs 4 elements")
        restricting = items[0].to_python()
        if (restricting[0], obis_from_bytes(bytes(restricting[1])), restricting[2]) != (CLASS_CLOCK, m.OBIS_CLOCK, 2):
            raise SelectiveAccessError("only the clock can restrict a range")
        bounds = []
        for item in items[1:3]:
            if isinstance(item, dlms_data.OctetStringData):
                bounds.append(decode_cosem_datetime(bytes(item.value), local_tz))
            elif isinstance(item, dlms_data.DateTimeData):
                dt = item.value[0] if isinstance(item.value, tuple) else item.value
                bounds.append(dt if dt.tzinfo else dt.replace(tzinfo=local_tz))
            else:
                raise SelectiveAccessError("range bounds must be date-time octet strings")
        selected = items[3].to_python() or []
        index: tuple[int, ...] | None = None
        if selected:
            wanted = [(s[0], obis_from_bytes(bytes(s[1])), s[2]) for s in selected]
            have = [(c.class_id, c.obis, c.attribute) for c in columns]
            if any(w not in have for w in wanted):
                raise SelectiveAccessError("selected value is not a capture object")
            index = tuple(have.index(w) for w in wanted)
        return Selection(from_=bounds[0], to=bounds[1], columns=index)
    if selector == 2:
        if len(items) != 4:
            raise SelectiveAccessError("entry_descriptor needs 4 elements")
        from_entry, to_entry, from_value, to_value = (int(i.to_python()) for i in items)
        last_value = len(columns) if to_value == 0 else min(to_value, len(columns))
        if from_entry < 1 or from_value < 1 or from_value > last_value:
            raise SelectiveAccessError("entry_descriptor out of range")
        return Selection(
            from_entry=from_entry, to_entry=to_entry,
            columns=tuple(range(from_value - 1, last_value)),
        )
    raise SelectiveAccessError(f"access selector {selector} not supported")


def _octet(value: bytes) -> bytes:
    return dlms_data.OctetStringData(value).to_bytes()


def _scaler_unit(scaler: int, unit: int) -> bytes:
    return b"\x02\x02\x0f" + scaler.to_bytes(1, "big", signed=True) + b"\x16" + bytes((unit,))


def _energy_cell(raw: int | None) -> bytes:
    return b"\x00" if raw is None else b"\x06" + raw.to_bytes(4, "big")


def _buffer(rows: list[list[bytes]], columns: tuple[int, ...] | None) -> bytes:
    out = bytearray(b"\x01")
    out += encode_length(len(rows))
    for cells in rows:
        chosen = cells if columns is None else [cells[i] for i in columns]
        out += b"\x02" + encode_length(len(chosen))
        for cell in chosen:
            out += cell
    return bytes(out)


def _apply_entries(rows: list, selection: Selection) -> list:
    if selection.from_ is not None:
        return rows
    last = len(rows) if selection.to_entry == 0 else min(selection.to_entry, len(rows))
    return rows[selection.from_entry - 1:last]


class ObjectModel:
    """The objects of one simulated meter, read at the simulated instant `now()`."""

    def __init__(self, meter: SimulatedMeter, now: Callable[[], datetime]) -> None:
        self.meter = meter
        self.now = now
        profile = meter.config.profile
        self._class_of: dict[str, int] = {
            m.OBIS_CLOCK: CLASS_CLOCK,
            m.OBIS_SERIAL: CLASS_DATA,
            m.OBIS_MODEL: CLASS_DATA,
            m.OBIS_FIRMWARE: CLASS_DATA,
            m.OBIS_LOGICAL_DEVICE_NAME: CLASS_DATA,
            m.OBIS_EVENT_CODE: CLASS_DATA,
            OBIS_STATUS: CLASS_DATA,
            m.OBIS_ENERGY_IMPORT: CLASS_REGISTER,
            m.OBIS_ENERGY_EXPORT: CLASS_REGISTER,
            m.OBIS_POWER_IMPORT: CLASS_REGISTER,
            m.OBIS_VOLTAGE_L1: CLASS_REGISTER,
            m.OBIS_LOAD_PROFILE: CLASS_PROFILE_GENERIC,
            m.OBIS_EVENT_LOG: CLASS_PROFILE_GENERIC,
            m.OBIS_ASSOCIATION: CLASS_ASSOCIATION_LN,
        }
        self._identity = {
            m.OBIS_SERIAL: meter.config.serial.encode(),
            m.OBIS_MODEL: f"{profile.make} {profile.model}".encode(),
            m.OBIS_FIRMWARE: profile.firmware.encode(),
            m.OBIS_LOGICAL_DEVICE_NAME: (profile.flag_id + meter.config.serial).encode(),
        }

    def class_of(self, obis: str) -> int | None:
        return self._class_of.get(obis)

    def read_attribute(
        self, class_id: int, obis: str, attribute: int, selector: int | None = None, params: bytes = b""
    ) -> bytes | DataAccessResult:
        known_class = self._class_of.get(obis)
        if known_class is None:
            return DataAccessResult.OBJECT_UNDEFINED
        if known_class != class_id:
            return DataAccessResult.OBJECT_CLASS_INCONSISTENT
        injected = self.meter.faults.access_result(obis)
        if injected is not None:
            return injected
        if attribute == 1:
            return _octet(obis_to_bytes(obis))
        if selector is not None and class_id != CLASS_PROFILE_GENERIC:
            return DataAccessResult.SCOPE_OF_ACCESS_VIOLATED
        now = self.now()
        if class_id == CLASS_CLOCK:
            return self._clock(attribute, now)
        if class_id == CLASS_DATA:
            return self._data(obis, attribute, now)
        if class_id == CLASS_REGISTER:
            return self._register(obis, attribute, now)
        if class_id == CLASS_PROFILE_GENERIC:
            try:
                return self._profile(obis, attribute, selector, params, now)
            except SelectiveAccessError:
                return DataAccessResult.SCOPE_OF_ACCESS_VIOLATED
        return DataAccessResult.READ_WRITE_DENIED

    def write_attribute(self, class_id: int, obis: str, attribute: int, value: bytes) -> DataAccessResult:
        """Carry out a SET the association allowed; only the clock's time (attribute 2) is settable."""
        if class_id != CLASS_CLOCK or attribute != 2:
            return DataAccessResult.READ_WRITE_DENIED
        if value[:2] == b"\x09\x0c" and len(value) == 14:
            raw = value[2:]
        elif value[:1] == b"\x19" and len(value) == 13:  # date-time as its own A-XDR type
            raw = value[1:]
        else:
            return DataAccessResult.TYPE_UNMATCHED
        try:
            meter_time = decode_cosem_datetime(raw, self.meter.local_timezone)
        except SelectiveAccessError:
            return DataAccessResult.OTHER_REASON
        self.meter.set_clock(meter_time, self.now())
        return DataAccessResult.SUCCESS

    def invoke_method(self, class_id: int, obis: str, method: int, parameters: bytes) -> ActionResultStatus:
        """Carry out an ACTION the association allowed: the clock's adjust_to_quarter and shift_time."""
        if class_id != CLASS_CLOCK:
            return ActionResultStatus.READ_WRITE_DENIED
        if method == m.CLOCK_ADJUST_TO_QUARTER:
            if parameters not in (b"", b"\x0f\x00", b"\x11\x00"):
                return ActionResultStatus.TYPE_UNMATCHED
            self.meter.adjust_clock_to_quarter(self.now())
            return ActionResultStatus.SUCCESS
        if method == m.CLOCK_SHIFT_TIME:
            if len(parameters) != 3 or parameters[0] != 0x10:
                return ActionResultStatus.TYPE_UNMATCHED
            shift = int.from_bytes(parameters[1:], "big", signed=True)
            if not -900 <= shift <= 900:
                return ActionResultStatus.SCOPE_OF_ACCESS_VIOLATED
            self.meter.shift_clock(shift, self.now())
            return ActionResultStatus.SUCCESS
        return ActionResultStatus.OBJECT_UNDEFINED

    def _clock(self, attribute: int, now: datetime) -> bytes | DataAccessResult:
        reading = self.meter.clock(now)
        if attribute == 2:
            return _octet(encode_cosem_datetime(reading.local_time, reading.deviation, reading.status))
        if attribute == 3:
            return dlms_data.LongData(-self.meter.config.profile.utc_offset_minutes).to_bytes()
        if attribute == 4:
            return dlms_data.UnsignedIntegerData(reading.status).to_bytes()
        return DataAccessResult.OBJECT_UNDEFINED

    def _data(self, obis: str, attribute: int, now: datetime) -> bytes | DataAccessResult:
        if attribute != 2:
            return DataAccessResult.OBJECT_UNDEFINED
        if obis in self._identity:
            return _octet(self._identity[obis])
        if obis == m.OBIS_EVENT_CODE:
            events = self.meter.events(None, None, now)
            return dlms_data.UnsignedIntegerData(events[-1].code if events else 0).to_bytes()
        return dlms_data.UnsignedIntegerData(0).to_bytes()  # status word: all clear

    def _register(self, obis: str, attribute: int, now: datetime) -> bytes | DataAccessResult:
        value = self.meter.register(obis, now)
        if attribute == 2:
            if obis == m.OBIS_VOLTAGE_L1:
                return dlms_data.UnsignedLongData(value.raw).to_bytes()
            return dlms_data.DoubleLongUnsignedData(value.raw).to_bytes()
        if attribute == 3:
            return _scaler_unit(value.scaler, value.unit)
        return DataAccessResult.OBJECT_UNDEFINED

    def _columns(self, is_load: bool) -> tuple[CaptureObject, ...]:
        if not is_load:
            return EVENT_LOG_COLUMNS
        if self.meter.faults.load_profile_without_clock:
            return LOAD_PROFILE_COLUMNS[1:]
        return LOAD_PROFILE_COLUMNS

    def _misread(self, obis: str, selection: Selection) -> Selection:
        """The selection as a faulty meter applies it (``range_slack``, ``ignores_range``)."""
        faults = self.meter.faults
        if selection.from_ is None or selection.to is None:
            return selection
        if obis in faults.ignores_range:
            return replace(selection, from_=None, to=None)
        if faults.range_slack:
            return replace(selection, from_=selection.from_ - faults.range_slack, to=selection.to + faults.range_slack)
        return selection

    def _profile(
        self, obis: str, attribute: int, selector: int | None, params: bytes, now: datetime
    ) -> bytes | DataAccessResult:
        is_load = obis == m.OBIS_LOAD_PROFILE
        columns = self._columns(is_load)
        profile = self.meter.config.profile
        if attribute == 2:
            selection = Selection()
            if selector is not None:
                # Parsed against the full columns: the clock restricts the range even when a
                # faulty load profile does not capture it.
                full = LOAD_PROFILE_COLUMNS if is_load else EVENT_LOG_COLUMNS
                selection = self._misread(obis, _parse_selection(selector, params, full, self.meter.local_timezone))
            return self._buffer(is_load, selection, now)
        if attribute == 3:
            return b"\x01" + encode_length(len(columns)) + b"".join(c.encode() for c in columns)
        if attribute == 4:
            return dlms_data.DoubleLongUnsignedData(m.CAPTURE_PERIOD_S if is_load else 0).to_bytes()
        if attribute == 5:
            return dlms_data.EnumData(1).to_bytes()  # FIFO
        if attribute == 6:
            return CLOCK_CAPTURE.encode()
        if attribute == 7:
            used = self.meter.profile_entries_in_use(now) if is_load else len(self.meter.events(None, None, now))
            return dlms_data.DoubleLongUnsignedData(used).to_bytes()
        if attribute == 8:
            depth = profile.profile_depth_days * 96 if is_load else profile.event_log_depth
            return dlms_data.DoubleLongUnsignedData(depth).to_bytes()
        return DataAccessResult.OBJECT_UNDEFINED

    def _buffer(self, is_load: bool, selection: Selection, now: datetime) -> bytes:
        deviation = self.meter.clock(now).deviation
        if is_load:
            rows = _apply_entries(self.meter.profile_rows(selection.from_, selection.to, now), selection)
            rows = [r for r in rows if not self.meter.faults.profile_row_lost(r.clock)]
            clock = not self.meter.faults.load_profile_without_clock
            cells = [
                [
                    *([_octet(encode_cosem_datetime(r.clock.replace(tzinfo=None), deviation))] if clock else []),
                    b"\x11" + bytes((r.status,)),
                    _energy_cell(r.energy_import),
                    _energy_cell(r.energy_export),
                ]
                for r in rows
            ]
        else:
            events = _apply_entries(self.meter.events(selection.from_, selection.to, now), selection)
            cells = [
                [_octet(encode_cosem_datetime(e.clock.replace(tzinfo=None), deviation)), b"\x11" + bytes((e.code,))]
                for e in events
            ]
        return _buffer(cells, selection.columns)
