"""Generate a simulated fleet: N meters cycling through the makes, models and security levels.

Used by `gateway simulate`, the demo and the fleet benchmark, so all of them agree on which
simulated meter is which: meter i is `sim-{i:04d}`, its model cycles omnipower/e450/e360 and
(with security "mixed") its level cycles none/lls/hls-gmac every three meters, so every model
appears with every level.
"""
from __future__ import annotations

from drivers.simulator.faults import MeterFaults
from drivers.simulator.meter import MeterConfig, SecurityLevel

MODEL_CYCLE = ("omnipower", "e450", "e360")
SECURITY_CYCLE = (SecurityLevel.NONE, SecurityLevel.LLS, SecurityLevel.HLS_GMAC)
_SERIAL_PREFIX = {"omnipower": "57", "e450": "35", "e360": "36"}


def fleet(
    count: int,
    seed: int = 0,
    security: SecurityLevel | None = None,
    latency_ms: int = 0,
    meters_per_bus: int = 8,
    hdlc_address_base: int = 17,
) -> tuple[MeterConfig, ...]:
    """`count` meter configs; security None means "mixed" (cycle through the three levels)."""
    if count < 1:
        raise ValueError(f"a fleet needs at least one meter, got {count}")
    if not 16 <= hdlc_address_base <= 0x3FFF - meters_per_bus:
        raise ValueError(f"HDLC address base {hdlc_address_base} outside 16..{0x3FFF - meters_per_bus}")
    faults = MeterFaults(latency_ms=latency_ms)
    configs = []
    for i in range(count):
        model = MODEL_CYCLE[i % 3]
        configs.append(MeterConfig(
            meter_id=f"sim-{i:04d}",
            model=model,
            serial=f"{_SERIAL_PREFIX[model]}{seed % 100:02d}{i:04d}",
            seed=seed,
            security=security if security is not None else SECURITY_CYCLE[(i // 3) % 3],
            hdlc_address=hdlc_address_base + i % meters_per_bus,
            faults=faults,
        ))
    return tuple(configs)
