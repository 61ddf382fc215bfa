"""Meter simulator: Kamstrup- and Landis+Gyr-like DLMS/COSEM meters served over TCP on loopback.

`MeterSimulator` serves the meters (wrapper and HDLC framing); `meter` holds the deterministic
model and the oracle functions tests use to know what a meter must answer.
"""
from drivers.simulator.faults import NO_FAULTS, MeterFaults
from drivers.simulator.meter import (
    TEST_AUTHENTICATION_KEY,
    TEST_ENCRYPTION_KEY,
    TEST_LLS_PASSWORD,
    MeterConfig,
    SecurityLevel,
    SimulatedMeter,
    expected_clock,
    expected_events,
    expected_profile_rows,
    expected_register,
)
from drivers.simulator.server import Framing, MeterEndpoint, MeterSimulator, SimClock, SimulatorConfig

__all__ = [
    "NO_FAULTS", "MeterFaults", "TEST_AUTHENTICATION_KEY", "TEST_ENCRYPTION_KEY", "TEST_LLS_PASSWORD",
    "MeterConfig", "SecurityLevel", "SimulatedMeter", "expected_clock", "expected_events",
    "expected_profile_rows", "expected_register", "Framing", "MeterEndpoint", "MeterSimulator",
    "SimClock", "SimulatorConfig",
]
