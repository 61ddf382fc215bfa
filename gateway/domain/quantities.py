"""What OBIS codes measure and what event-log codes mean: the catalogue the normalizer names things by.

One table per question, in one place: the quantity (name, SI base unit, cumulative/interval/instant)
of an electricity OBIS code, and the meaning of IDIS/DSMR standard event-log codes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, Mapping

QuantityKind = Literal["cumulative", "interval", "instant"]


@dataclass(frozen=True, slots=True)
class Quantity:
    name: str
    unit: str  # the SI base unit the value must have; "" for an OBIS code not in the table
    kind: QuantityKind  # cumulative counter, energy over one capture period, or instantaneous


# Electricity (A=1) quantities by OBIS value group C and D (IEC 62056-6-1 §7.5: C = quantity,
# D = processing: 7 instantaneous, 8 time integral 1 i.e. cumulative since manufacture,
# 29 time integral 5, the energy of the last capture period as used in load profiles).
QUANTITIES: Final[Mapping[tuple[int, int], tuple[str, str, QuantityKind]]] = {
    (1, 8): ("active_energy_import", "Wh", "cumulative"),
    (2, 8): ("active_energy_export", "Wh", "cumulative"),
    (3, 8): ("reactive_energy_import", "varh", "cumulative"),
    (4, 8): ("reactive_energy_export", "varh", "cumulative"),
    (9, 8): ("apparent_energy_import", "VAh", "cumulative"),
    (10, 8): ("apparent_energy_export", "VAh", "cumulative"),
    (1, 29): ("active_energy_import_interval", "Wh", "interval"),
    (2, 29): ("active_energy_export_interval", "Wh", "interval"),
    (3, 29): ("reactive_energy_import_interval", "varh", "interval"),
    (4, 29): ("reactive_energy_export_interval", "varh", "interval"),
    (1, 7): ("active_power_import", "W", "instant"),
    (2, 7): ("active_power_export", "W", "instant"),
    (3, 7): ("reactive_power_import", "var", "instant"),
    (4, 7): ("reactive_power_export", "var", "instant"),
    (9, 7): ("apparent_power_import", "VA", "instant"),
    (10, 7): ("apparent_power_export", "VA", "instant"),
    (13, 7): ("power_factor", "", "instant"),
    (14, 7): ("frequency", "Hz", "instant"),
    (21, 7): ("active_power_import_l1", "W", "instant"),
    (41, 7): ("active_power_import_l2", "W", "instant"),
    (61, 7): ("active_power_import_l3", "W", "instant"),
    (22, 7): ("active_power_export_l1", "W", "instant"),
    (42, 7): ("active_power_export_l2", "W", "instant"),
    (62, 7): ("active_power_export_l3", "W", "instant"),
    (31, 7): ("current_l1", "A", "instant"),
    (51, 7): ("current_l2", "A", "instant"),
    (71, 7): ("current_l3", "A", "instant"),
    (91, 7): ("current_neutral", "A", "instant"),
    (32, 7): ("voltage_l1", "V", "instant"),
    (52, 7): ("voltage_l2", "V", "instant"),
    (72, 7): ("voltage_l3", "V", "instant"),
}


def quantity_of(obis: str) -> Quantity:
    """The quantity an OBIS code measures: ``1.0.1.8.0.255`` -> active_energy_import in Wh.

    E (tariff) 1..63 adds ``_t<E>``; F other than 255 (a billing period's value) adds ``_f<F>``.
    A code outside the table gets a name derived from the code and no expected unit.
    """
    a, _b, c, d, e, f = (int(part) for part in obis.split("."))
    known = QUANTITIES.get((c, d)) if a == 1 else None
    if known is None:
        return Quantity("obis_" + obis.replace(".", "_"), "", "instant")
    name, unit, kind = known
    if e:
        name += f"_t{e}"
    if f != 255:
        name += f"_f{f}"
    return Quantity(name, unit, kind)


# IDIS / DSMR standard event log (0.0.99.98.0.255) and fraud detection log event codes (DSMR P3
# companion standard, "Event codes"; codes 1..17 and 255 cross-checked against the Open Smart Grid
# Platform's EventType). Meter-specific codes get a generic meaning.
EVENT_MEANINGS: Final[Mapping[int, str]] = {
    1: "power down",
    2: "power up",
    3: "daylight saving time enabled or disabled",
    4: "clock adjusted (old time)",
    5: "clock adjusted (new time)",
    6: "clock invalid",
    7: "replace battery",
    8: "battery voltage low",
    9: "tariff (TOU) activated",
    10: "error register cleared",
    11: "alarm register cleared",
    12: "hardware error: program memory",
    13: "hardware error: RAM",
    14: "hardware error: NV memory",
    15: "watchdog error",
    16: "hardware error: measurement system",
    17: "firmware ready for activation",
    18: "firmware activated",
    40: "terminal cover removed",
    41: "terminal cover closed",
    42: "strong DC field detected",
    43: "no strong DC field anymore",
    44: "meter cover removed",
    45: "meter cover closed",
    255: "event log cleared",
}


def event_meaning(code: int) -> str:
    return EVENT_MEANINGS.get(code, f"event code {code} (not a standard IDIS/DSMR code)")


__all__ = ["EVENT_MEANINGS", "QUANTITIES", "Quantity", "QuantityKind", "event_meaning", "quantity_of"]
