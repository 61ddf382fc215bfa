"""Readings read by the real readers from the meter simulator over TCP, normalized: what the meter
holds becomes events exactly once, in base units, and nothing the simulator serves is refused."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from drivers.meters import get_profile
from drivers.readers import ScalerUnitCache, read_clock, read_event_log, read_identity, read_profile, read_registers
from drivers.session import DlmsSession
from drivers.simulator import (
    Framing,
    MeterConfig,
    MeterSimulator,
    SecurityLevel,
    SimulatedMeter,
    SimulatorConfig,
    expected_events,
    expected_profile_rows,
    expected_register,
)
from drivers.transport.wrapper import WrapperTransport
from gateway.domain.normalize import normalize
from gateway.domain.poll_result import PollResult
from tests.normalize import LOAD_PROFILE, METER_ID, SETTINGS, FakeHistory, by_type, events_of, meter_config

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 3, 2, 0, 7, 30, tzinfo=timezone.utc)
UTC_PLUS_1 = timezone(timedelta(hours=1))
DAY_START = datetime(2026, 3, 1, 0, 0, tzinfo=UTC_PLUS_1)
DAY_END = datetime(2026, 3, 1, 23, 45, tzinfo=UTC_PLUS_1)


async def read_poll() -> tuple[PollResult, SimulatedMeter]:
    profile = get_profile("landis_gyr", "e450")
    config = SimulatorConfig(
        meters=(MeterConfig(meter_id=METER_ID, model="e450", serial="12340001", seed=3,
                            security=SecurityLevel.NONE),),
        start=NOW, speed=0.0,
    )
    async with MeterSimulator(config) as simulator:
        endpoint = simulator.endpoint(METER_ID, Framing.WRAPPER)
        transport = WrapperTransport(METER_ID, endpoint.host, endpoint.port,
                                     client_wport=profile.public_client_address,
                                     server_wport=endpoint.server_logical_address)
        async with DlmsSession(transport, timeout_s=5.0, retries=0, use_release=profile.use_release,
                               max_pdu_size=profile.max_pdu_size) as dlms:
            poll = PollResult(
                meter_id=METER_ID,
                read_time=NOW,
                identity=await read_identity(dlms, profile),
                clock=await read_clock(dlms, UTC_PLUS_1, quirks=profile.quirks, now=lambda: NOW),
                registers=await read_registers(dlms, [r.obis for r in profile.registers], ScalerUnitCache(),
                                               profile=profile),
                profiles=(await read_profile(dlms, LOAD_PROFILE, DAY_START, DAY_END, meter_tz=UTC_PLUS_1,
                                             profile=profile),),
                events=await read_event_log(dlms, "0.0.99.98.0.255", DAY_START - timedelta(days=14), DAY_END,
                                            meter_tz=UTC_PLUS_1, profile=profile),
            )
        return poll, simulator.meter(METER_ID)


async def test_a_simulated_poll_is_stored_once_and_completely(anyio_backend: str) -> None:
    poll, meter = await read_poll()
    history = FakeHistory()
    plans = history.run(poll, meter_config(max_power_w=Decimal(50_000)))
    assert [p.year for p in plans] == [2026]
    counts = by_type(plans)
    assert "SuspectReadingFlagged" not in counts and "ReadingGapDetected" not in counts, counts

    rows = [row for e in events_of(plans, "IntervalsRecorded") for row in e.rows]
    expected_rows = expected_profile_rows(meter, DAY_START, DAY_END, now=NOW)
    assert len(rows) == len(expected_rows) == 96
    scaler = expected_register(meter, "1.0.1.8.0.255", NOW).scaler
    for row, want in zip(rows, expected_rows):
        assert row.end_time == want.clock.astimezone(timezone.utc)
        assert want.energy_import is not None
        assert row.values["1.0.1.8.0.255"] == Decimal(want.energy_import).scaleb(scaler)
        assert row.units["1.0.1.8.0.255"] == "Wh" and row.status == want.status

    reads = {e.obis: e for e in events_of(plans, "RegisterRead")}
    for obis, read in reads.items():
        assert read.value == expected_register(meter, obis, NOW).value
    assert reads["1.0.1.8.0.255"].quantity == "active_energy_import"

    logged = events_of(plans, "MeterEventLogged")
    want_events = expected_events(meter, DAY_START - timedelta(days=14), DAY_END, NOW)
    assert [(e.event_time, e.code) for e in logged] == [(w.clock.astimezone(timezone.utc), w.code) for w in want_events]
    assert {e.meaning for e in logged} <= {"power down", "power up"}

    # The same poll again adds nothing but the (identical) event log entries.
    again = normalize(poll, history.states_for(poll), meter_config(max_power_w=Decimal(50_000)), SETTINGS)
    assert set(by_type(again)) <= {"MeterEventLogged"}
