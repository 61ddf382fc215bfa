"""COSEM physical units: unit codes to symbols, scaling, and conversion between prefixed units.

A COSEM register carries ``scaler_unit`` = (scaler, unit code): the physical value is
``raw * 10**scaler`` in the unit the code names (DLMS UA 1000-1 Blue Book, table "Enumerated values
for physical units"). Units are always SI base units without prefix (Wh, W, V, A, varh ...): a
meter reporting kWh sends unit Wh with scaler 3, so scaling alone yields base units, exactly,
as ``Decimal``. ``convert`` moves a base-unit value to a prefixed unit (Wh -> kWh) for display.
"""
from __future__ import annotations

from decimal import Context, Decimal

from drivers.errors import DecodeError

# Blue Book (DLMS UA 1000-1 Ed. 12) unit enumeration; 255 "count" means a dimensionless count.
UNIT_SYMBOLS: dict[int, str] = {
    1: "a", 2: "mo", 3: "wk", 4: "d", 5: "h", 6: "min", 7: "s", 8: "°", 9: "°C", 10: "currency",
    11: "m", 12: "m/s", 13: "m³", 14: "m³", 15: "m³/h", 16: "m³/h", 17: "m³/d", 18: "m³/d", 19: "l",
    20: "kg", 21: "N", 22: "Nm", 23: "Pa", 24: "bar", 25: "J", 26: "J/h", 27: "W", 28: "VA", 29: "var",
    30: "Wh", 31: "VAh", 32: "varh", 33: "A", 34: "C", 35: "V", 36: "V/m", 37: "F", 38: "Ω", 39: "Ωm²/m",
    40: "Wb", 41: "T", 42: "A/m", 43: "H", 44: "Hz", 45: "1/(Wh)", 46: "1/(varh)", 47: "1/(VAh)",
    48: "V²h", 49: "A²h", 50: "kg/s", 51: "S", 52: "K", 53: "1/(V²h)", 54: "1/(A²h)", 55: "1/m³",
    56: "%", 57: "Ah", 60: "Wh/m³", 61: "J/m³", 62: "Mol %", 63: "g/m³", 64: "Pa s", 65: "J/kg",
    66: "g/cm²", 67: "atm", 70: "dBm", 71: "dBµV", 72: "dB", 254: "other", 255: "",
}

# Codes 14, 16, 18 are volumes "corrected" to base conditions: same symbol, different quantity.
CORRECTED_VOLUME_CODES = frozenset({14, 16, 18})

_PREFIXES: dict[str, int] = {"": 0, "k": 3, "M": 6, "G": 9, "m": -3}
# Base symbols that may carry a decimal prefix in ``convert`` (electrical quantities only:
# "min" or "mo" must never parse as milli-"in" or milli-"o").
_PREFIXABLE = ("Wh", "W", "VAh", "VA", "varh", "var", "V", "Ah", "A", "Hz", "J")


def unit_symbol(code: int | None) -> str:
    """The symbol of a COSEM unit code; ``None`` (an object without scaler_unit) is dimensionless."""
    if code is None:
        return ""
    try:
        return UNIT_SYMBOLS[code]
    except KeyError:
        raise DecodeError(None, f"unknown COSEM unit code {code}") from None


def scale(raw: int | Decimal, scaler: int) -> Decimal:
    """``raw * 10**scaler`` exactly (Blue Book 4.3.2: scaler is a power of ten, -128..127)."""
    if not -128 <= scaler <= 127:
        raise DecodeError(None, f"scaler {scaler} is outside -128..127")
    value = Decimal(raw).scaleb(scaler)
    if value.as_tuple().exponent > 0:  # type: ignore[operator]
        # 4236513 with scaler 1 is 42365130, not 4.236513E+7: people and parsers expect plain digits.
        value = value.quantize(Decimal(1), context=Context(prec=max(28, value.adjusted() + 1)))
    return value


def _split(symbol: str) -> tuple[int, str]:
    if symbol in _PREFIXABLE:
        return 0, symbol
    for prefix, exponent in _PREFIXES.items():
        if prefix and symbol.startswith(prefix) and symbol[len(prefix):] in _PREFIXABLE:
            return exponent, symbol[len(prefix):]
    raise DecodeError(None, f"unit {symbol!r} is not a (prefixed) electrical unit we convert")


def convert(value: Decimal, from_unit: str, to_unit: str) -> Decimal:
    """Convert between decimal-prefixed forms of one unit: ``convert(Decimal(1500), "Wh", "kWh") == 1.5``."""
    from_exponent, from_base = _split(from_unit)
    to_exponent, to_base = _split(to_unit)
    if from_base != to_base:
        raise DecodeError(None, f"cannot convert {from_unit} to {to_unit}: different quantities")
    return value.scaleb(from_exponent - to_exponent)
