"""Readers: what to GET from a meter for identity, clock, registers, load profiles and event logs.

Each reader is an async function taking an associated ``DlmsSession`` and returning typed readings
(``drivers.readings``). The session moves raw A-XDR bytes; decoding is ours (``drivers.decode.axdr``),
including the profile buffer parser, which keeps null cells in place (dlms-cosem's drops them and
shifts the row's columns) and reads ``capture_period`` as seconds (IEC 62056-6-2 §4.3.6; dlms-cosem
reads minutes). Register values are scaled by their scaler_unit, cached per meter in a
``ScalerUnitCache`` since it only changes with a firmware or parametrisation change.
GET-with-list is used where the meter profile allows it, in lists of at most ``max_list_size``.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from decimal import Decimal

from dlms_cosem import cosem, enumerations

from drivers.decode.axdr import Data, DataType, decode_data_exact
from drivers.decode.cosem_time import CosemDateTime
from drivers.decode.errors import DecodeLayerError
from drivers.errors import AccessDenied, ConfigError, DecodeError, ProfileTooLarge, ProfileUnusable
from drivers.meters.profiles import (
    QUIRK_DEVIATION_INVERTED,
    CosemObject,
    MeterProfile,
    normalize_obis,
)
from drivers.readings import (
    CaptureColumn,
    CellValue,
    ClockReading,
    EventLogEntry,
    Identity,
    ProfileReading,
    ProfileRow,
    RegisterReading,
    RegisterRefused,
    ScalerUnit,
)
from drivers.session import DlmsSession
from drivers.units import scale, unit_symbol

CLASS_DATA = 1
CLASS_REGISTER = 3
CLASS_EXTENDED_REGISTER = 4
CLASS_DEMAND_REGISTER = 5
CLASS_PROFILE_GENERIC = 7
CLASS_CLOCK = 8
CLOCK_OBIS = "0.0.1.0.0.255"
# Blue Book 7.4.1 / IDIS: device ID 1 (serial), device ID 2 (model), active firmware, logical device name.
_STANDARD_IDENTITY: dict[str, str | None] = {
    "serial": "0.0.96.1.0.255", "model_object": "0.0.96.1.1.255", "firmware": "1.0.0.2.0.255",
    "logical_device_name": "0.0.42.0.0.255",
}

_INTEGER_TYPES = frozenset({
    DataType.INTEGER, DataType.LONG, DataType.DOUBLE_LONG, DataType.LONG64, DataType.UNSIGNED,
    DataType.LONG_UNSIGNED, DataType.DOUBLE_LONG_UNSIGNED, DataType.LONG64_UNSIGNED, DataType.ENUM,
    DataType.BCD,
})
_FLOAT_TYPES = frozenset({DataType.FLOAT32, DataType.FLOAT64})

# How much a profile range read may answer. A meter that ignores the range answers its whole buffer
# (a fuzzed meter sent 100,000 rows for one day), which must be refused before it becomes events.
# Extra rows within a range are legitimate (some makes capture a row at power-down/up or a clock
# set), and a refused range is read again, and refused again, at every poll: the spare is generous
# so that a busy day never blocks a meter's profile, while a reply off by orders of magnitude is caught.
_SPARE_ROWS = 16  # beyond the range's capture periods, plus a quarter of them
_MAX_CELL_BYTES = 64  # a date-time cell is 14 bytes, a long64 9: room for octet-string cells
_ROW_OVERHEAD_BYTES = 4  # structure tag and length
_ARRAY_OVERHEAD_BYTES = 6  # array tag and length

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class ScalerUnitCache:
    """Scaler/unit of registers, per meter and OBIS code. Forget a meter after a firmware change."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], ScalerUnit] = {}

    def get(self, meter_id: str, obis: str) -> ScalerUnit | None:
        return self._entries.get((meter_id, obis))

    def put(self, meter_id: str, obis: str, scaler_unit: ScalerUnit) -> None:
        self._entries[(meter_id, obis)] = scaler_unit

    def forget(self, meter_id: str) -> None:
        for key in [key for key in self._entries if key[0] == meter_id]:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class _ListPolicy:
    with_list: bool
    max_list_size: int


def _policy(profile: MeterProfile | None) -> _ListPolicy:
    if profile is None:
        return _ListPolicy(True, 10)
    return _ListPolicy(profile.get_with_list, profile.max_list_size)


def attribute(class_id: int, obis: str, attribute_id: int) -> cosem.CosemAttribute:
    """A COSEM attribute reference; ConfigError for a class id dlms-cosem has no interface for."""
    try:
        interface = enumerations.CosemInterface(class_id)
    except ValueError:
        raise ConfigError(None, f"interface class {class_id} of {obis} is not supported") from None
    parts = [int(p) for p in normalize_obis(obis).split(".")]
    # Obis.from_string would drop the F group; build it from all six.
    return cosem.CosemAttribute(interface=interface, instance=cosem.Obis(*parts), attribute=attribute_id)


async def _get_many(
    session: DlmsSession, attributes: Sequence[cosem.CosemAttribute], policy: _ListPolicy
) -> list[bytes | AccessDenied]:
    """Each attribute's A-XDR bytes or its AccessDenied, in order; GET-with-list when allowed."""
    out: list[bytes | AccessDenied] = []
    if policy.with_list and len(attributes) > 1:
        for start in range(0, len(attributes), policy.max_list_size):
            chunk = attributes[start:start + policy.max_list_size]
            if len(chunk) == 1:
                out.extend(await _get_many(session, chunk, _ListPolicy(False, 1)))
            else:
                out.extend(await session.get_with_list(list(chunk)))
        return out
    for item in attributes:
        try:
            out.append(await session.get(item))
        except AccessDenied as refused:
            out.append(refused)
    return out


def _decode(meter_id: str, raw: bytes, what: str) -> Data:
    try:
        return decode_data_exact(raw)
    except DecodeLayerError as exc:
        raise DecodeError(meter_id, f"{what}: {exc}") from None


def _text(meter_id: str, data: Data, what: str) -> str:
    if data.type is DataType.OCTET_STRING:
        raw = data.value
        assert isinstance(raw, bytes)
        # Identity strings are ASCII padded with NUL or spaces on several makes.
        return raw.decode("latin-1").rstrip("\x00 ")
    if data.type in (DataType.VISIBLE_STRING, DataType.UTF8_STRING):
        return str(data.value).rstrip("\x00 ")
    if data.type in _INTEGER_TYPES:
        return str(data.value)
    raise DecodeError(meter_id, f"{what}: expected a string, got {data.type_name}")


def _date_time(meter_id: str, data: Data, what: str) -> CosemDateTime:
    if data.type is DataType.DATE_TIME:
        assert isinstance(data.value, CosemDateTime)
        return data.value
    if data.type is DataType.OCTET_STRING and isinstance(data.value, bytes) and len(data.value) == 12:
        try:
            return CosemDateTime.from_bytes(data.value)
        except DecodeLayerError as exc:
            raise DecodeError(meter_id, f"{what}: {exc}") from None
    raise DecodeError(meter_id, f"{what}: expected a COSEM date-time, got {data.type_name}")


def _instant(meter_id: str, value: CosemDateTime, meter_tz: tzinfo | None, quirks: frozenset[str], what: str) -> datetime:
    try:
        if QUIRK_DEVIATION_INVERTED in quirks and value.deviation is not None:
            return (value.local() - timedelta(minutes=value.deviation)).replace(tzinfo=timezone.utc)
        return value.to_utc(meter_tz)
    except DecodeLayerError as exc:
        raise DecodeError(meter_id, f"{what}: {exc}") from None


def _number(meter_id: str, data: Data, what: str) -> int | Decimal:
    if data.type in _INTEGER_TYPES:
        assert isinstance(data.value, int)
        return data.value
    if data.type in _FLOAT_TYPES:
        assert isinstance(data.value, float)
        return Decimal(repr(data.value))
    raise DecodeError(meter_id, f"{what}: expected a number, got {data.type_name}")


def _scaler_unit(meter_id: str, data: Data, what: str) -> ScalerUnit:
    items = data.value if data.type is DataType.STRUCTURE else None
    if not isinstance(items, tuple) or len(items) != 2 or not all(i.type in _INTEGER_TYPES for i in items):
        raise DecodeError(meter_id, f"{what}: scaler_unit must be structure(integer, enum), got {data.type_name}")
    scaler, unit_code = items[0].value, items[1].value
    assert isinstance(scaler, int) and isinstance(unit_code, int)
    if not -128 <= scaler <= 127:
        raise DecodeError(meter_id, f"{what}: scaler {scaler} out of range")
    try:
        unit_symbol(unit_code)
    except DecodeError as exc:
        raise DecodeError(meter_id, f"{what}: {exc.message}") from None
    return ScalerUnit(scaler, unit_code)


# -- identity ---------------------------------------------------------------------------------


async def read_identity(session: DlmsSession, profile: MeterProfile | None = None) -> Identity:
    """Serial number, model, firmware and logical device name (manufacturer = its FLAG id).

    The serial is required (AccessDenied if refused); the other objects are None when the meter
    refuses them or the profile lists none. Without a profile the Blue Book objects are read.
    """
    meter_id = session.meter_id
    names = ("serial", "model_object", "firmware", "logical_device_name")
    objects = _STANDARD_IDENTITY if profile is None else {name: getattr(profile, name) for name in names}
    wanted = [(name, obis) for name, obis in objects.items() if obis is not None]
    answers = await _get_many(
        session, [attribute(CLASS_DATA, obis, 2) for _, obis in wanted], _policy(profile)
    )
    found: dict[str, str | None] = dict.fromkeys(names)
    for (name, obis), answer in zip(wanted, answers):
        if isinstance(answer, AccessDenied):
            if name == "serial":
                raise answer
            continue
        found[name] = _text(meter_id, _decode(meter_id, answer, obis), f"{name} {obis}")
    serial = found["serial"]
    assert serial is not None
    device_name = found["logical_device_name"]
    manufacturer = device_name[:3] if device_name and len(device_name) >= 3 and device_name[:3].isalpha() else None
    return Identity(
        serial=serial, manufacturer=manufacturer, model=found["model_object"], firmware=found["firmware"],
        logical_device_name=device_name,
    )


# -- clock ------------------------------------------------------------------------------------


async def read_clock(
    session: DlmsSession,
    meter_tz: tzinfo | None,
    *,
    obis: str = CLOCK_OBIS,
    quirks: frozenset[str] = frozenset(),
    now: Callable[[], datetime] = utc_now,
) -> ClockReading:
    """The meter's clock in UTC and its offset from the gateway clock (``now``, aware UTC).

    ``meter_tz`` is the meter's configured zone, used only when the meter sends deviation 0x8000.
    """
    meter_id = session.meter_id
    before = now()
    raw = await session.get(attribute(CLASS_CLOCK, obis, 2))
    after = now()
    if before.tzinfo is None or after.tzinfo is None:
        raise ConfigError(meter_id, "the gateway clock must return aware datetimes")
    value = _date_time(meter_id, _decode(meter_id, raw, f"clock {obis}"), f"clock {obis}")
    meter_time = _instant(meter_id, value, meter_tz, quirks, f"clock {obis}")
    gateway_time = (before + (after - before) / 2).astimezone(timezone.utc)
    return ClockReading(
        meter_time=meter_time,
        gateway_time=gateway_time,
        offset=meter_time - gateway_time,
        deviation_min=value.deviation,
        status=None if value.status is None else value.status.raw,
        status_flags=() if value.status is None else tuple(value.status.flags()),
        raw=value.raw,
    )


# -- registers --------------------------------------------------------------------------------


def _scaler_attribute(class_id: int) -> int | None:
    if class_id in (CLASS_REGISTER, CLASS_EXTENDED_REGISTER):
        return 3
    if class_id == CLASS_DEMAND_REGISTER:
        return 4
    return None


def _as_object(item: str | CosemObject, profile: MeterProfile | None) -> CosemObject:
    if isinstance(item, CosemObject):
        return item
    return profile.register(item) if profile is not None else CosemObject(item, CLASS_REGISTER)


async def _scalers(
    session: DlmsSession,
    objects: Sequence[CosemObject],
    cache: ScalerUnitCache | None,
    policy: _ListPolicy,
) -> dict[str, ScalerUnit | AccessDenied]:
    """Scaler/unit of each object that has one: from the cache, the rest read (and cached)."""
    meter_id = session.meter_id
    out: dict[str, ScalerUnit | AccessDenied] = {}
    missing: list[CosemObject] = []
    for item in objects:
        scaler_attr = _scaler_attribute(item.class_id)
        if scaler_attr is None or item.obis in out:
            continue
        cached = cache.get(meter_id, item.obis) if cache is not None else None
        if cached is not None:
            out[item.obis] = cached
        elif item not in missing:
            missing.append(item)
    if missing:
        answers = await _get_many(
            session,
            [attribute(i.class_id, i.obis, _scaler_attribute(i.class_id) or 3) for i in missing],
            policy,
        )
        for item, answer in zip(missing, answers):
            if isinstance(answer, AccessDenied):
                out[item.obis] = answer
                continue
            what = f"scaler_unit of {item.obis}"
            scaler_unit = _scaler_unit(meter_id, _decode(meter_id, answer, what), what)
            out[item.obis] = scaler_unit
            if cache is not None:
                cache.put(meter_id, item.obis, scaler_unit)
    return out


async def read_registers(
    session: DlmsSession,
    obis_list: Sequence[str | CosemObject],
    scaler_cache: ScalerUnitCache | None,
    *,
    profile: MeterProfile | None = None,
    meter_tz: tzinfo | None = None,
) -> tuple[RegisterReading | RegisterRefused, ...]:
    """Values of registers (class 3/4/5) or data objects (class 1), scaled, in the order asked.

    Plain OBIS strings take their class from the profile (class 3 if not listed). A refused object
    gives a ``RegisterRefused`` in its place; the others are still read.
    """
    meter_id = session.meter_id
    objects = [_as_object(item, profile) for item in obis_list]
    policy = _policy(profile)
    quirks = profile.quirks if profile is not None else frozenset()
    scalers = await _scalers(session, objects, scaler_cache, policy)
    value_attrs = [attribute(o.class_id, o.obis, 2) for o in objects]
    extended = [o for o in objects if o.class_id == CLASS_EXTENDED_REGISTER]
    answers = await _get_many(
        session, value_attrs + [attribute(o.class_id, o.obis, 5) for o in extended], policy
    )
    values, capture_answers = answers[:len(objects)], dict(zip((o.obis for o in extended), answers[len(objects):]))
    out: list[RegisterReading | RegisterRefused] = []
    for item, answer in zip(objects, values):
        scaler_unit = scalers.get(item.obis, ScalerUnit(0, None))
        refused = answer if isinstance(answer, AccessDenied) else scaler_unit
        if isinstance(refused, AccessDenied):
            out.append(RegisterRefused(obis=item.obis, class_id=item.class_id, result=refused.result))
            continue
        assert isinstance(answer, bytes) and isinstance(scaler_unit, ScalerUnit)
        what = f"register {item.obis}"
        raw = _number(meter_id, _decode(meter_id, answer, what), what)
        capture_time = None
        captured = capture_answers.get(item.obis)
        if isinstance(captured, bytes):
            data = _decode(meter_id, captured, f"capture time of {item.obis}")
            if data.type is not DataType.NULL:
                capture_time = _instant(
                    meter_id, _date_time(meter_id, data, f"capture time of {item.obis}"), meter_tz, quirks,
                    f"capture time of {item.obis}",
                )
        out.append(RegisterReading(
            obis=item.obis, class_id=item.class_id, value=scale(raw, scaler_unit.scaler),
            unit=scaler_unit.unit, scaler=scaler_unit.scaler, unit_code=scaler_unit.unit_code,
            raw=raw, capture_time=capture_time,
        ))
    return tuple(out)


# -- profiles ---------------------------------------------------------------------------------


def parse_capture_objects(meter_id: str, raw: bytes) -> tuple[CaptureColumn, ...]:
    """Profile generic attribute 3: array of structure(class_id, logical_name, attribute, data_index)."""
    data = _decode(meter_id, raw, "capture objects")
    if data.type is not DataType.ARRAY:
        raise DecodeError(meter_id, f"capture objects: expected an array, got {data.type_name}")
    columns = []
    for index, item in enumerate(data.items):
        fields = item.value if item.type is DataType.STRUCTURE else None
        if not isinstance(fields, tuple) or len(fields) != 4:
            raise DecodeError(meter_id, f"capture object {index}: expected structure of 4, got {item.type_name}")
        class_id, name, attr_id, data_index = (f.value for f in fields)
        if not (isinstance(class_id, int) and isinstance(name, bytes) and len(name) == 6
                and isinstance(attr_id, int) and isinstance(data_index, int)):
            raise DecodeError(meter_id, f"capture object {index}: malformed fields")
        columns.append(CaptureColumn(class_id, ".".join(str(b) for b in name), attr_id, data_index))
    return tuple(columns)


def _cell(meter_id: str, data: Data, column: CaptureColumn, what: str) -> CellValue:
    if data.type is DataType.NULL:
        return None
    if column.is_clock:
        raise AssertionError("clock cells are converted by the row parser")
    if data.type in _INTEGER_TYPES or data.type in _FLOAT_TYPES:
        number = _number(meter_id, data, what)
        if column.unit_code is not None or column.scaler:
            return scale(number, column.scaler)
        return number
    if data.type is DataType.BOOLEAN:
        return bool(data.value)
    if data.type in (DataType.OCTET_STRING, DataType.VISIBLE_STRING, DataType.UTF8_STRING, DataType.BIT_STRING):
        return data.value  # type: ignore[return-value]
    if data.type is DataType.DATE_TIME:
        assert isinstance(data.value, CosemDateTime)
        return data.value.raw
    raise DecodeError(meter_id, f"{what}: {data.type_name} cells are not supported")


def parse_profile_buffer(
    meter_id: str,
    raw: bytes,
    columns: Sequence[CaptureColumn],
    *,
    capture_period_s: int,
    meter_tz: tzinfo | None,
    quirks: frozenset[str] = frozenset(),
) -> tuple[ProfileRow, ...]:
    """Profile generic buffer (array of structures, one cell per capture object) into rows.

    A null cell stays in its column as ``None``: a row whose length differs from the capture objects
    is an error, never shifted. A null clock cell is the previous row's time plus the capture period
    (when there is one), marked ``time_inferred``.
    """
    data = _decode(meter_id, raw, "profile buffer")
    if data.type is not DataType.ARRAY:
        raise DecodeError(meter_id, f"profile buffer: expected an array, got {data.type_name}")
    clock_index = next((i for i, c in enumerate(columns) if c.is_clock), None)
    rows: list[ProfileRow] = []
    previous: datetime | None = None
    for number, entry in enumerate(data.items):
        cells = entry.value if entry.type is DataType.STRUCTURE else None
        if not isinstance(cells, tuple):
            raise DecodeError(meter_id, f"profile row {number}: expected a structure, got {entry.type_name}")
        if len(cells) != len(columns):
            raise DecodeError(
                meter_id, f"profile row {number} has {len(cells)} cells for {len(columns)} capture objects"
            )
        values: list[CellValue] = []
        time: datetime | None = None
        inferred = False
        for index, (cell, column) in enumerate(zip(cells, columns)):
            what = f"profile row {number} column {index} ({column.obis})"
            if index == clock_index:
                if cell.type is DataType.NULL:
                    if previous is not None and capture_period_s > 0:
                        time, inferred = previous + timedelta(seconds=capture_period_s), True
                else:
                    time = _instant(meter_id, _date_time(meter_id, cell, what), meter_tz, quirks, what)
                values.append(time)
            else:
                values.append(_cell(meter_id, cell, column, what))
        previous = time
        rows.append(ProfileRow(time=time, time_inferred=inferred, values=tuple(values)))
    return tuple(rows)


def _scalable(column: CaptureColumn) -> bool:
    if column.class_id in (CLASS_REGISTER, CLASS_EXTENDED_REGISTER):
        return column.attribute == 2
    if column.class_id == CLASS_DEMAND_REGISTER:
        return column.attribute in (2, 3)
    return False


def profile_row_limit(start: datetime, end: datetime, capture_period_s: int) -> int:
    """The most rows a range read of [start, end] (inclusive) may answer for a profile capturing
    every ``capture_period_s`` seconds: its capture periods plus a spare (see ``_SPARE_ROWS``)."""
    if capture_period_s <= 0:
        raise ValueError(f"capture period must be positive, got {capture_period_s}")
    periods = max(0, int((end - start).total_seconds() // capture_period_s)) + 1
    return periods + periods // 4 + _SPARE_ROWS


def _byte_limit(rows: int, columns: int) -> int:
    return _ARRAY_OVERHEAD_BYTES + rows * (_ROW_OVERHEAD_BYTES + columns * _MAX_CELL_BYTES)


def _in_range(
    meter_id: str, obis: str, rows: tuple[ProfileRow, ...], start: datetime, end: datetime
) -> tuple[ProfileRow, ...]:
    """The rows within [start, end]; those outside are dropped with one warning. A meter must not
    answer them, and accepting them would store intervals nobody asked for (and read them again at
    every poll). Rows without a time are kept: nothing can place them, the normalizer skips them."""
    kept = tuple(row for row in rows if row.time is None or start <= row.time <= end)
    dropped = len(rows) - len(kept)
    if dropped:
        log.warning(
            "meter %s: profile %s: dropped %d of %d row(s) outside the requested range %s .. %s",
            meter_id, obis, dropped, len(rows), start.isoformat(), end.isoformat(),
        )
    return kept


async def read_profile(
    session: DlmsSession,
    obis: str,
    start: datetime | None,
    end: datetime | None,
    *,
    meter_tz: tzinfo | None = None,
    scaler_cache: ScalerUnitCache | None = None,
    profile: MeterProfile | None = None,
    interval_data: bool = False,
) -> ProfileReading:
    """A profile generic object read by date range: capture objects, capture period (seconds) and the
    buffer restricted to [start, end] (both None: the whole buffer), register columns scaled.

    The range bounds go to the meter in its own zone (``meter_tz``) so that meters ignoring the
    deviation still select the right entries. A range read is checked against what was asked: a
    profile without a clock column is ``ProfileUnusable`` (before its buffer is read); a reply with
    more rows than the range can hold (``profile_row_limit``), or far more bytes than those rows
    need, is ``ProfileTooLarge`` (before its rows are decoded); rows outside the range are dropped
    with a warning. ``interval_data``: the profile must have a capture period (a load profile).
    """
    meter_id = session.meter_id
    obis = normalize_obis(obis)
    policy = _policy(profile)
    quirks = profile.quirks if profile is not None else frozenset()
    if (start is None) != (end is None):
        raise ConfigError(meter_id, "give both profile range bounds or neither")
    header = await _get_many(
        session,
        [attribute(CLASS_PROFILE_GENERIC, obis, 3), attribute(CLASS_PROFILE_GENERIC, obis, 4)],
        policy,
    )
    for answer in header:
        if isinstance(answer, AccessDenied):
            raise answer
    assert isinstance(header[0], bytes) and isinstance(header[1], bytes)
    columns = parse_capture_objects(meter_id, header[0])
    period_data = _decode(meter_id, header[1], f"capture period of {obis}")
    period = _number(meter_id, period_data, f"capture period of {obis}")
    if not isinstance(period, int) or period < 0:
        raise DecodeError(meter_id, f"capture period of {obis} is {period}, not a whole number of seconds")
    if start is not None and not any(c.is_clock for c in columns):
        # The range restricts on the clock (IEC 62056-6-2 §4.3.6 range_descriptor): without a clock
        # column the meter cannot honour it and we could not check or place its rows.
        raise ProfileUnusable(meter_id, f"profile {obis} has no clock column among its capture objects", obis)
    if interval_data and period == 0:
        raise ProfileUnusable(meter_id, f"profile {obis} has capture period 0: it holds no interval data", obis)

    registers = [CosemObject(c.obis, c.class_id) for c in columns if _scalable(c)]
    scalers = await _scalers(session, registers, scaler_cache, policy)
    scaled_columns = []
    for column in columns:
        found = scalers.get(column.obis) if _scalable(column) else None
        if isinstance(found, AccessDenied):
            raise found
        if found is not None:
            column = CaptureColumn(column.class_id, column.obis, column.attribute, column.data_index,
                                   found.scaler, found.unit_code)
        scaled_columns.append(column)

    buffer = attribute(CLASS_PROFILE_GENERIC, obis, 2)
    row_limit: int | None = None
    if start is None or end is None:
        raw = await session.get(buffer)
    else:
        if meter_tz is not None:
            start, end = start.astimezone(meter_tz), end.astimezone(meter_tz)
        raw = await session.get_profile_range(buffer, start, end)
        if period > 0:
            row_limit = profile_row_limit(start, end, period)
            byte_limit = _byte_limit(row_limit, len(columns))
            if len(raw) > byte_limit:
                raise ProfileTooLarge(
                    meter_id, f"profile {obis}: {len(raw)} bytes answered for a range of at most {row_limit} "
                    f"rows (at most {byte_limit} bytes); refused", obis,
                )
    rows = parse_profile_buffer(
        meter_id, raw, scaled_columns, capture_period_s=period, meter_tz=meter_tz, quirks=quirks,
    )
    if start is not None and end is not None:
        if row_limit is not None and len(rows) > row_limit:
            raise ProfileTooLarge(
                meter_id, f"profile {obis}: {len(rows)} rows answered for a range of at most {row_limit} "
                f"rows; refused", obis,
            )
        rows = _in_range(meter_id, obis, rows, start.astimezone(timezone.utc), end.astimezone(timezone.utc))
    return ProfileReading(
        obis=obis, columns=tuple(scaled_columns), capture_period_s=period,
        start=None if start is None else start.astimezone(timezone.utc),
        end=None if end is None else end.astimezone(timezone.utc), rows=rows,
    )


def _is_event_code(column: CaptureColumn) -> bool:
    # 0.x.96.11.e.255: event code objects (Blue Book 7.4.1 / IDIS), class 1 value.
    parts = column.obis.split(".")
    return column.class_id == CLASS_DATA and column.attribute == 2 and parts[2:4] == ["96", "11"]


async def read_event_log(
    session: DlmsSession,
    obis: str,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    meter_tz: tzinfo | None = None,
    profile: MeterProfile | None = None,
) -> tuple[EventLogEntry, ...]:
    """An event log (a profile generic of clock + event code + optional values), by range or whole.

    A range read is checked as ``read_profile`` checks it: entries outside the range are dropped."""
    reading = await read_profile(session, obis, start, end, meter_tz=meter_tz, profile=profile)
    code_index = next((i for i, c in enumerate(reading.columns) if _is_event_code(c)), None)
    if code_index is None:
        code_index = next(
            (i for i, c in enumerate(reading.columns) if not c.is_clock and c.class_id == CLASS_DATA), None
        )
    clock_index = next((i for i, c in enumerate(reading.columns) if c.is_clock), None)
    entries = []
    for row in reading.rows:
        code = row.values[code_index] if code_index is not None else None
        if code is not None and not isinstance(code, int):
            raise DecodeError(session.meter_id, f"event code in {reading.obis} is not an integer: {code!r}")
        rest = tuple(v for i, v in enumerate(row.values) if i not in (code_index, clock_index))
        entries.append(EventLogEntry(log_obis=reading.obis, time=row.time, code=code, values=rest))
    return tuple(entries)
