"""Writing a meter's clock (class 8): SET of attribute 2 to a UTC instant, or the shift_time method.

The date-time is written the way the meter reads out its own: with the deviation it sent (COSEM
sign: UTC = local + deviation), or, for a meter that sends "deviation not specified" (0x8000), as
local time in its configured zone with 0x8000 again. The daylight-saving bit of the status is kept.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone, tzinfo

from dlms_cosem import cosem

from drivers.errors import ConfigError
from drivers.readers import CLASS_CLOCK, CLOCK_OBIS, attribute
from drivers.session import DlmsSession

CLOCK_SHIFT_TIME = 6  # Blue Book 4.5.1: shift_time(long: -900..900 s)
STATUS_DAYLIGHT_SAVING = 0x80
_UNSPECIFIED_DEVIATION = 0x8000


def encode_clock_time(
    utc: datetime, deviation_min: int | None, meter_tz: tzinfo | None, *, daylight_saving: bool = False
) -> bytes:
    """The A-XDR octet string (09 0C + 12 bytes) of a COSEM date-time for the instant ``utc``."""
    if utc.tzinfo is None:
        raise ValueError("the instant to write must be timezone-aware")
    if deviation_min is not None:
        local = utc.astimezone(timezone.utc).replace(tzinfo=None) - timedelta(minutes=deviation_min)
        deviation = deviation_min & 0xFFFF
    elif meter_tz is not None:
        local = utc.astimezone(meter_tz).replace(tzinfo=None)
        deviation = _UNSPECIFIED_DEVIATION
    else:
        raise ValueError("a meter without deviation needs its configured timezone")
    status = STATUS_DAYLIGHT_SAVING if daylight_saving else 0
    return b"\x09\x0c" + (
        local.year.to_bytes(2, "big")
        + bytes((local.month, local.day, local.isoweekday(), local.hour, local.minute, local.second,
                 local.microsecond // 10_000))
        + deviation.to_bytes(2, "big")
        + bytes((status,))
    )


async def set_clock(
    session: DlmsSession, utc: datetime, deviation_min: int | None, meter_tz: tzinfo | None, *,
    obis: str = CLOCK_OBIS, daylight_saving: bool = False,
) -> None:
    """SET clock attribute 2 to ``utc`` (AccessDenied / DataAccessRefused if the meter refuses)."""
    try:
        value = encode_clock_time(utc, deviation_min, meter_tz, daylight_saving=daylight_saving)
    except ValueError as exc:
        raise ConfigError(session.meter_id, f"cannot write clock {obis}: {exc}") from None
    await session.set(attribute(CLASS_CLOCK, obis, 2), value)


async def shift_clock(session: DlmsSession, seconds: int, *, obis: str = CLOCK_OBIS) -> None:
    """Call the clock's shift_time(seconds), -900..900."""
    if not -900 <= seconds <= 900:
        raise ConfigError(session.meter_id, f"shift_time takes -900..900 s, not {seconds}")
    clock = attribute(CLASS_CLOCK, obis, 2)
    method = cosem.CosemMethod(clock.interface, clock.instance, CLOCK_SHIFT_TIME)
    await session.action(method, b"\x10" + seconds.to_bytes(2, "big", signed=True))
