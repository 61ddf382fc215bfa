"""Record the DLMS session fixtures in ``fixtures/sessions/`` from the meter simulator (rerunnable).

    python tests/fixtures_tools/record_sessions.py [--out fixtures/sessions]

For a Kamstrup OMNIPOWER and a Landis+Gyr E450, in each security level (none, LLS, HLS-GMAC), one
session reads identity, registers, clock, one day of the 15-minute load profile (96 rows: block
transfer) and a week of the event log, through a ``RecordingTransport``. Every client-side input
that ends up in a request is fixed (simulated time frozen, range bounds, client system title,
first invocation counter, HLS client challenge), so replaying a recording through the real session
and readers sends the recorded requests byte for byte. The same ``run_plan``/``session_for`` are
used by the replay tests.

Rerunning gives the same requests except the HLS reply (a GMAC over the simulator's random
server challenge, which the recording holds). Re-record after a change to what the session sends
(e.g. its invoke-id policy): the replay tests then fail with ``ReplayMismatch`` until you do.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio

from drivers.meters import MeterProfile, get_profile
from drivers.readers import (
    ScalerUnitCache,
    read_clock,
    read_event_log,
    read_identity,
    read_profile,
    read_registers,
)
from drivers.readings import to_jsonable
from drivers.recording import (
    MemoryInvocationCounterStore,
    RecordingHeader,
    RecordingTransport,
    SessionRecording,
    TestSecrets,
    save_recording,
)
from drivers.security import HlsGmacSecurity, LowLevelSecurity, NoSecurity, SecuritySettings
from drivers.session import DlmsSession
from drivers.transport.base import Transport
from drivers.transport.hdlc import HdlcTcpTransport
from drivers.transport.wrapper import WrapperTransport

REPO = Path(__file__).resolve().parents[2]
SESSIONS_DIR = REPO / "fixtures" / "sessions"

# Frozen simulated time: just after local midnight, so the previous local day is complete.
SIM_TIME = datetime(2026, 3, 2, 0, 7, 30, tzinfo=timezone.utc)
METER_TZ = timezone(timedelta(hours=1))  # the simulated meters' fixed UTC+1
PROFILE_START = datetime(2026, 3, 1, 0, 0, tzinfo=METER_TZ)
PROFILE_END = datetime(2026, 3, 1, 23, 45, tzinfo=METER_TZ)  # inclusive: 96 quarter hours
EVENTS_START = datetime(2026, 2, 23, 0, 0, tzinfo=METER_TZ)
EVENTS_END = datetime(2026, 3, 2, 0, 0, tzinfo=METER_TZ)
CLIENT_SYSTEM_TITLE = bytes.fromhex("4D47573030303031")  # "MGW00001"
FIRST_INVOCATION_COUNTER = 4096
HLS_CHALLENGE = bytes(range(0x40, 0x60))  # 32 bytes, as DlmsSession asks for
SEED = 7
LEVELS = ("none", "lls", "hls_gmac")


@dataclass(frozen=True)
class Target:
    """One meter to record: fleet-config make/model keys and the simulator's model name."""

    make: str
    model: str
    sim_model: str
    serial: str
    framing: str  # which simulator endpoint the recording goes through


TARGETS = (
    Target("kamstrup", "omnipower", "omnipower", "57070001", "wrapper"),
    Target("landis_gyr", "e450", "e450", "35070001", "hdlc"),
)


def fixture_name(target: Target, level: str) -> str:
    return f"{target.make}_{target.model}_{level}.json"


def plan_for(profile: MeterProfile) -> dict[str, Any]:
    assert profile.load_profile is not None
    return {
        "identity": True,
        "registers": [r.obis for r in profile.registers],
        "clock": True,
        "gateway_time": SIM_TIME.isoformat(),
        "meter_utc_offset_min": 60,
        "profile": {"obis": profile.load_profile, "start": PROFILE_START.isoformat(), "end": PROFILE_END.isoformat()},
        "event_log": {"obis": profile.event_logs[0], "start": EVENTS_START.isoformat(), "end": EVENTS_END.isoformat()},
    }


async def run_plan(session: DlmsSession, profile: MeterProfile, plan: dict[str, Any]) -> dict[str, Any]:
    """Read what ``plan`` says, in a fixed order, and return the readings in JSON form."""
    meter_tz = timezone(timedelta(minutes=plan["meter_utc_offset_min"]))
    gateway_time = datetime.fromisoformat(plan["gateway_time"])
    out: dict[str, Any] = {}
    if plan.get("identity"):
        out["identity"] = to_jsonable(await read_identity(session, profile))
    if plan.get("registers"):
        readings = await read_registers(session, plan["registers"], ScalerUnitCache(), profile=profile)
        out["registers"] = to_jsonable(readings)
    if plan.get("clock"):
        clock = await read_clock(session, meter_tz, quirks=profile.quirks, now=lambda: gateway_time)
        out["clock"] = to_jsonable(clock)
    if (spec := plan.get("profile")) is not None:
        reading = await read_profile(
            session, spec["obis"], datetime.fromisoformat(spec["start"]), datetime.fromisoformat(spec["end"]),
            meter_tz=meter_tz, scaler_cache=ScalerUnitCache(), profile=profile,
        )
        out["profile"] = to_jsonable(reading)
    if (spec := plan.get("event_log")) is not None:
        entries = await read_event_log(
            session, spec["obis"], datetime.fromisoformat(spec["start"]), datetime.fromisoformat(spec["end"]),
            meter_tz=meter_tz, profile=profile,
        )
        out["event_log"] = to_jsonable(entries)
    return out


def security_for(level: str, secrets: TestSecrets, session_inputs: dict[str, Any]) -> SecuritySettings:
    if level == "none":
        return NoSecurity()
    if level == "lls":
        assert secrets.password is not None
        return LowLevelSecurity(password=secrets.password)
    assert secrets.authentication_key is not None and secrets.encryption_key is not None
    return HlsGmacSecurity(
        authentication_key=secrets.authentication_key, encryption_key=secrets.encryption_key,
        client_system_title=bytes.fromhex(session_inputs["client_system_title"]),
    )


def session_for(
    transport: Transport, level: str, secrets: TestSecrets, session_inputs: dict[str, Any], profile: MeterProfile
) -> DlmsSession:
    """The session exactly as recorded: same security inputs, system title, HLS challenge, first
    invocation counter, PDU size and release."""
    challenge = bytes.fromhex(session_inputs["hls_challenge"])

    def fixed_challenge(length: int) -> bytes:
        assert length == len(challenge), f"the session wants a {length}-byte challenge"
        return challenge

    counters = MemoryInvocationCounterStore({transport.meter_id: session_inputs["first_invocation_counter"]})
    return DlmsSession(
        transport,
        security=security_for(level, secrets, session_inputs),
        timeout_s=5.0,
        retries=0,
        use_release=profile.use_release,
        max_pdu_size=session_inputs["max_pdu_size"],
        invocation_counters=counters if level == "hls_gmac" else None,
        client_system_title=bytes.fromhex(session_inputs["client_system_title"]),
        challenge_factory=fixed_challenge,
    )


def session_inputs_for(profile: MeterProfile) -> dict[str, Any]:
    return {
        "client_system_title": CLIENT_SYSTEM_TITLE.hex(),
        "first_invocation_counter": FIRST_INVOCATION_COUNTER,
        "hls_challenge": HLS_CHALLENGE.hex(),
        "max_pdu_size": profile.max_pdu_size,
    }


async def record_one(target: Target, level: str, make_transport: Callable[[str, Any], Transport]) -> SessionRecording:
    """Record one session against a running simulator; ``make_transport(level, endpoint)`` builds the link."""
    from drivers.simulator.meter import TEST_AUTHENTICATION_KEY, TEST_ENCRYPTION_KEY, TEST_LLS_PASSWORD

    profile = get_profile(target.make, target.model)
    secrets = TestSecrets(
        password=TEST_LLS_PASSWORD if level == "lls" else None,
        authentication_key=TEST_AUTHENTICATION_KEY if level == "hls_gmac" else None,
        encryption_key=TEST_ENCRYPTION_KEY if level == "hls_gmac" else None,
    )
    inputs = session_inputs_for(profile)
    plan = plan_for(profile)
    recorder = RecordingTransport(make_transport(level, target))
    async with session_for(recorder, level, secrets, inputs, profile) as session:
        readings = await run_plan(session, profile, plan)
    header = RecordingHeader(
        make=profile.display_name.split(" ")[0],
        model=profile.display_name.split(" ", 1)[1],
        firmware=readings["identity"]["firmware"],
        meter_id=recorder.meter_id,
        security=level,
        transport=target.framing,
        source=f"drivers.simulator seed {SEED} serial {target.serial}, simulated time frozen at {SIM_TIME.isoformat()}",
        reads=("identity", "registers", "clock", "load profile: one day, 96 rows", "event log: one week"),
        secrets=secrets,
        session=inputs,
        plan={"make": target.make, "model": target.model, **plan},
        readings=readings,
    )
    return recorder.recording(header)


async def record_all(out_dir: Path) -> list[Path]:
    from drivers.simulator.meter import MeterConfig, SecurityLevel
    from drivers.simulator.server import Framing, MeterSimulator, SimulatorConfig

    sim_levels = {"none": SecurityLevel.NONE, "lls": SecurityLevel.LLS, "hls_gmac": SecurityLevel.HLS_GMAC}
    written = []
    for target in TARGETS:
        for level in LEVELS:
            meter_id = f"{target.make}-{target.model}-{level}"
            config = SimulatorConfig(
                meters=(MeterConfig(meter_id=meter_id, model=target.sim_model, serial=target.serial, seed=SEED,
                                    security=sim_levels[level]),),
                start=SIM_TIME, speed=0.0,
            )
            # A fresh simulator per recording: its invocation counters start where the recording expects.
            async with MeterSimulator(config) as simulator:
                endpoint = simulator.endpoint(meter_id, Framing(target.framing))
                recording = await record_one(target, level, lambda lvl, t: make_sim_transport(endpoint, lvl, t))
            path = out_dir / fixture_name(target, level)
            save_recording(recording, path)
            written.append(path)
    return written


def make_sim_transport(endpoint: Any, level: str, target: Target) -> Transport:
    """A real TCP transport to a simulator endpoint (wrapper, or HDLC over TCP)."""
    profile = get_profile(target.make, target.model)
    client = profile.client_address_for(level)
    if endpoint.framing.value == "wrapper":
        return WrapperTransport(endpoint.meter_id, endpoint.host, endpoint.port,
                                client_wport=client, server_wport=endpoint.server_logical_address)
    return HdlcTcpTransport(
        endpoint.meter_id, endpoint.host, endpoint.port, client_address=client,
        server_logical_address=endpoint.server_logical_address, server_physical_address=endpoint.physical_address,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=SESSIONS_DIR)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in anyio.run(record_all, args.out):
        print(path.relative_to(REPO) if path.is_relative_to(REPO) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
