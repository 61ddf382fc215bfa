"""The simulated meter: what a Kamstrup- or Landis+Gyr-like meter measures, as pure functions of time.

Every value is a deterministic function of (seed, serial, simulated time), computed in closed
form, so a test can compute what the meter must answer without talking to it:

- energy registers follow E(t) = base + integral of a strictly positive daily load curve, so
  they only grow and are O(1) to evaluate at any instant;
- the meter clock drifts: meter_time(t) = t + offset0 + drift_ppm * (t - sync_reference); offset0 and
  drift are seeded or configured (``clock_offset_s``, ``clock_drift_ppm``), and a SET of the clock
  or a clock ACTION (``set_clock``) moves offset0 and sync_reference, as a real meter's clock is set;
- the 15-minute load profile captures the energy registers at the instants the *meter* clock
  crosses a quarter hour, so profile increments are exactly register deltas;
- the event log holds power-down/power-up pairs on pseudo-random days.

`expected_register`, `expected_clock`, `expected_profile_rows` and `expected_events` are the
public oracle for tests; the COSEM server (`cosem.py`) serves the same functions.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum

from drivers.simulator.faults import NO_FAULTS, MeterFaults

# Green Book test keys (DLMS UA 1000-2, security examples): test keys only, never real ones.
TEST_ENCRYPTION_KEY = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
TEST_AUTHENTICATION_KEY = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
TEST_LLS_PASSWORD = b"12345678"

CAPTURE_PERIOD_S = 900
# The meters' installation instant: registers start from their base value here.
INSTALLED_AT = datetime(2024, 1, 1, tzinfo=timezone.utc)
_EPOCH_S = INSTALLED_AT.timestamp()
_DAY_S = 86_400
_OMEGA = 2 * math.pi / 24.0  # daily cycle, per hour

OBIS_CLOCK = "0.0.1.0.0.255"
OBIS_SERIAL = "0.0.96.1.0.255"
OBIS_MODEL = "0.0.96.1.1.255"
OBIS_FIRMWARE = "1.0.0.2.0.255"
OBIS_LOGICAL_DEVICE_NAME = "0.0.42.0.0.255"
OBIS_ENERGY_IMPORT = "1.0.1.8.0.255"
OBIS_ENERGY_EXPORT = "1.0.2.8.0.255"
OBIS_POWER_IMPORT = "1.0.1.7.0.255"
OBIS_VOLTAGE_L1 = "1.0.32.7.0.255"
OBIS_LOAD_PROFILE = "1.0.99.1.0.255"
OBIS_EVENT_LOG = "0.0.99.98.0.255"
OBIS_EVENT_CODE = "0.0.96.11.0.255"
OBIS_ASSOCIATION = "0.0.40.0.0.255"

UNIT_WH = 30
UNIT_W = 27
UNIT_V = 35

EVENT_POWER_DOWN = 1
EVENT_POWER_UP = 2
# Profile status bit set on an interval in which the power went down (L+G "PDN", IDIS bit 7).
STATUS_POWER_DOWN = 0x80


class SecurityLevel(str, Enum):
    """Security the meter demands from its reading client (the public client never has any)."""

    NONE = "none"
    LLS = "lls"
    HLS_GMAC = "hls-gmac"


# Clock (class 8) methods the simulator carries out (Blue Book 4.5.1).
CLOCK_ADJUST_TO_QUARTER = 1
CLOCK_SHIFT_TIME = 6
_AUTHENTICATED = frozenset({SecurityLevel.LLS, SecurityLevel.HLS_GMAC})


@dataclass(frozen=True)
class AccessRight:
    """Write (an attribute) or execute (a method) right on one object, for associations of these
    security levels. An association without authentication (the public client, or a reading
    client of a meter with security "none") is read-only whatever is listed here."""

    obis: str
    index: int  # attribute or method number
    method: bool
    levels: frozenset[SecurityLevel] = _AUTHENTICATED


# By default LLS and HLS clients may set the clock (attribute 2) and call adjust_to_quarter / shift_time.
DEFAULT_RIGHTS: tuple[AccessRight, ...] = (
    AccessRight(OBIS_CLOCK, 2, method=False),
    AccessRight(OBIS_CLOCK, CLOCK_ADJUST_TO_QUARTER, method=True),
    AccessRight(OBIS_CLOCK, CLOCK_SHIFT_TIME, method=True),
)


@dataclass(frozen=True)
class ModelProfile:
    """What differs between the simulated makes and models."""

    make: str
    model: str
    flag_id: str  # 3-letter manufacturer id, first bytes of the system title
    firmware: str
    energy_scaler: int
    max_pdu_size: int
    # Meter clocks run on a fixed UTC+1 local time (no DST, to keep the oracle simple).
    utc_offset_minutes: int
    # False: the clock sends deviation 0x8000 ("not specified") and local time, as some
    # E360 firmwares do; the client must apply the meter's configured timezone.
    deviation_specified: bool
    profile_depth_days: int
    event_log_depth: int


MODELS: dict[str, ModelProfile] = {
    "omnipower": ModelProfile(
        make="Kamstrup", model="OMNIPOWER", flag_id="KAM", firmware="OP-3.2.1",
        energy_scaler=0, max_pdu_size=1024, utc_offset_minutes=60, deviation_specified=True,
        profile_depth_days=40, event_log_depth=100,
    ),
    "e450": ModelProfile(
        make="Landis+Gyr", model="E450", flag_id="LGZ", firmware="E450-B31.05",
        energy_scaler=0, max_pdu_size=512, utc_offset_minutes=60, deviation_specified=True,
        profile_depth_days=30, event_log_depth=100,
    ),
    "e360": ModelProfile(
        make="Landis+Gyr", model="E360", flag_id="LGZ", firmware="E360-A02.11",
        energy_scaler=1, max_pdu_size=512, utc_offset_minutes=60, deviation_specified=False,
        profile_depth_days=30, event_log_depth=100,
    ),
}


@dataclass(frozen=True)
class MeterConfig:
    """One simulated meter. Secrets are excluded from repr so they never reach a log line."""

    meter_id: str
    model: str = "omnipower"
    serial: str = "00000001"
    seed: int = 0
    security: SecurityLevel = SecurityLevel.NONE
    password: bytes = field(default=TEST_LLS_PASSWORD, repr=False)
    encryption_key: bytes = field(default=TEST_ENCRYPTION_KEY, repr=False)
    authentication_key: bytes = field(default=TEST_AUTHENTICATION_KEY, repr=False)
    # HDLC physical address on its bus (16..16383; > 127 needs 4-byte extended addressing).
    hdlc_address: int = 17
    faults: MeterFaults = NO_FAULTS
    # True: rows of intervals with a power-down carry null-data energy cells (as meters that
    # could not capture do); exercises a client's null handling. Status still says PDN.
    null_cells_on_power_down: bool = False
    # The clock's offset from true time at the simulator's start and its drift; None: seeded
    # (within +-20 s and +-40 ppm).
    clock_offset_s: float | None = None
    clock_drift_ppm: float | None = None
    # Write/execute rights of authenticated clients (see AccessRight); ``clock_read_only`` drops
    # those on the clock, so that a SET or ACTION on it is refused (read-write-denied).
    rights: tuple[AccessRight, ...] = DEFAULT_RIGHTS
    clock_read_only: bool = False
    # The largest APDU the meter takes and sends (its AARE's server-max-receive-pdu-size); None:
    # the model's. A small one makes a client use block transfer for SET as for GET.
    max_pdu_size: int | None = None

    @property
    def pdu_size(self) -> int:
        return self.profile.max_pdu_size if self.max_pdu_size is None else self.max_pdu_size

    def may(self, obis: str, index: int, *, method: bool, level: SecurityLevel | None) -> bool:
        """Whether an association authenticated at ``level`` (None: no authentication) may write
        attribute / call method ``index`` of ``obis``."""
        if level is None or level is SecurityLevel.NONE:
            return False
        if self.clock_read_only and obis == OBIS_CLOCK:
            return False
        return any(
            r.obis == obis and r.index == index and r.method == method and level in r.levels for r in self.rights
        )

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"meter {self.meter_id}: unknown model {self.model!r}, known: {sorted(MODELS)}")
        if not 16 <= self.hdlc_address <= 0x3FFF:
            raise ValueError(f"meter {self.meter_id}: HDLC address {self.hdlc_address} outside 16..16383")
        if len(self.encryption_key) != 16 or len(self.authentication_key) != 16:
            raise ValueError(f"meter {self.meter_id}: suite 0 keys must be 16 bytes")
        if not self.serial.isascii() or not 1 <= len(self.serial) <= 16:
            raise ValueError(f"meter {self.meter_id}: serial must be 1..16 ASCII characters")

    @property
    def profile(self) -> ModelProfile:
        return MODELS[self.model]

    @property
    def system_title(self) -> bytes:
        """8 bytes: FLAG id + 5 bytes from the serial (COSEM system title layout)."""
        digits = int(hashlib.blake2b(self.serial.encode(), digest_size=5).hexdigest(), 16)
        return self.profile.flag_id.encode() + digits.to_bytes(5, "big")


@dataclass(frozen=True)
class RegisterValue:
    """A register as the meter encodes it: raw integer, scaler and COSEM unit code."""

    raw: int
    scaler: int
    unit: int

    @property
    def value(self) -> Decimal:
        return Decimal(self.raw).scaleb(self.scaler)


@dataclass(frozen=True)
class MeterClockReading:
    """Clock attribute 2 as the meter sends it."""

    local_time: datetime  # naive, the meter's local wall time
    deviation: int | None  # DLMS deviation in minutes (-60 for UTC+1), None = 0x8000
    status: int
    utc: datetime  # what the meter believes UTC is (aware)


@dataclass(frozen=True)
class ProfileRow:
    """One load profile row: (clock, status, +A register raw, -A register raw)."""

    clock: datetime  # aware, in the meter's local offset; the meter's own (drifted) time
    status: int
    energy_import: int | None  # None: null-data cell
    energy_export: int | None


@dataclass(frozen=True)
class EventRow:
    clock: datetime  # aware, meter time
    code: int


def _require_aware(*instants: datetime | None) -> None:
    # A naive datetime would silently be read in the host's timezone: refuse it.
    if any(t is not None and t.tzinfo is None for t in instants):
        raise ValueError("simulated meter times must be timezone-aware datetimes")


def _unit(seed: int, serial: str, *tags: object) -> float:
    """A deterministic pseudo-random number in [0, 1) for (seed, serial, tags)."""
    text = ":".join([str(seed), serial, *map(str, tags)]).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") / 2**64


@dataclass(frozen=True)
class _Curve:
    """Energy in Wh since installation: base + closed-form integral of a positive load curve."""

    base_wh: float
    mean_w: float
    a1: float
    phi1: float
    a2: float
    phi2: float

    def energy_wh(self, hours: float) -> float:
        if self.mean_w == 0.0:
            return self.base_wh
        p = self.mean_w
        term1 = p * self.a1 / _OMEGA * (math.cos(self.phi1) - math.cos(_OMEGA * hours + self.phi1))
        term2 = p * self.a2 / (2 * _OMEGA) * (math.cos(self.phi2) - math.cos(2 * _OMEGA * hours + self.phi2))
        return self.base_wh + p * hours + term1 + term2

    def power_w(self, hours: float) -> float:
        p = self.mean_w
        return p * (1 + self.a1 * math.sin(_OMEGA * hours + self.phi1) + self.a2 * math.sin(2 * _OMEGA * hours + self.phi2))


class SimulatedMeter:
    """The measuring model of one meter; mutable only in its fault set and invocation counter.

    `sync_reference` is the instant the meter clock was last right (plus a seeded offset);
    the simulator passes its own start time so a run is reproducible from seed and clock.
    """

    def __init__(self, config: MeterConfig, sync_reference: datetime) -> None:
        self.config = config
        self.faults: MeterFaults = config.faults
        # Server invocation counter for ciphered APDUs; must only grow across associations.
        self.server_invocation_counter = 1 + int(_unit(config.seed, config.serial, "ic") * 1000)
        # Last client invocation counter accepted (replays are refused, as real meters do).
        self.last_client_invocation_counter = -1
        s, n = config.seed, config.serial
        self._import = _Curve(
            base_wh=1_000_000 + _unit(s, n, "base+") * 20_000_000,
            mean_w=250 + _unit(s, n, "mean+") * 2_000,
            a1=0.3 + 0.3 * _unit(s, n, "a1+"), phi1=2 * math.pi * _unit(s, n, "phi1+"),
            a2=0.1 + 0.1 * _unit(s, n, "a2+"), phi2=2 * math.pi * _unit(s, n, "phi2+"),
        )
        has_export = _unit(s, n, "solar") < 0.4
        self._export = _Curve(
            base_wh=_unit(s, n, "base-") * 2_000_000,
            mean_w=(100 + _unit(s, n, "mean-") * 600) if has_export else 0.0,
            a1=0.5, phi1=2 * math.pi * _unit(s, n, "phi1-"),
            a2=0.3, phi2=2 * math.pi * _unit(s, n, "phi2-"),
        )
        self._voltage_phase = 2 * math.pi * _unit(s, n, "volt")
        seeded_offset = -20 + 40 * _unit(s, n, "clock-offset")
        seeded_drift = -40 + 80 * _unit(s, n, "clock-drift")
        self._offset0_s = seeded_offset if config.clock_offset_s is None else float(config.clock_offset_s)
        self._drift = (seeded_drift if config.clock_drift_ppm is None else float(config.clock_drift_ppm)) * 1e-6
        # What clients wrote and invoked, in order ((obis, attribute or method)): tests check that a
        # refused synchronisation sent nothing.
        self.sets: list[tuple[str, int]] = []
        self.actions: list[tuple[str, int]] = []
        self.set_blocks_received = 0  # datablocks of SETs with block transfer
        self._sync_s = sync_reference.timestamp()
        self._tz = timezone(timedelta(minutes=config.profile.utc_offset_minutes))

    # -- time --------------------------------------------------------------------------

    @property
    def local_timezone(self) -> timezone:
        return self._tz

    def meter_seconds(self, true_s: float) -> float:
        return true_s + self._offset0_s + self._drift * (true_s - self._sync_s)

    def true_seconds(self, meter_s: float) -> float:
        return (meter_s - self._offset0_s + self._drift * self._sync_s) / (1 + self._drift)

    def clock_offset_seconds(self, at: datetime) -> float:
        """How far the meter clock is ahead of true time at `at` (negative: behind)."""
        t = at.timestamp()
        return self.meter_seconds(t) - t

    def set_clock(self, meter_utc: datetime, at: datetime) -> None:
        """The clock is set to ``meter_utc`` at true time ``at``; it keeps drifting from there."""
        _require_aware(meter_utc, at)
        t = at.timestamp()
        self._offset0_s = meter_utc.timestamp() - t
        self._sync_s = t

    def shift_clock(self, seconds: float, at: datetime) -> None:
        """shift_time: the clock moves by ``seconds`` (Blue Book: -900..900)."""
        now_m = self.meter_seconds(at.timestamp())
        self.set_clock(datetime.fromtimestamp(now_m + seconds, timezone.utc), at)

    def adjust_clock_to_quarter(self, at: datetime) -> None:
        """adjust_to_quarter: the clock goes to the nearest quarter hour (*:00, *:15, *:30, *:45)."""
        now_m = self.meter_seconds(at.timestamp())
        self.set_clock(datetime.fromtimestamp(round(now_m / 900) * 900, timezone.utc), at)

    def clock(self, at: datetime) -> MeterClockReading:
        meter_utc = datetime.fromtimestamp(self.meter_seconds(at.timestamp()), timezone.utc)
        local = meter_utc.astimezone(self._tz)
        prof = self.config.profile
        deviation = -prof.utc_offset_minutes if prof.deviation_specified else None
        return MeterClockReading(
            local_time=local.replace(tzinfo=None), deviation=deviation, status=0, utc=meter_utc,
        )

    # -- registers ---------------------------------------------------------------------

    def register(self, obis: str, at: datetime) -> RegisterValue:
        _require_aware(at)
        return self._register_at(obis, at.timestamp())

    def _register_at(self, obis: str, true_s: float) -> RegisterValue:
        hours = (true_s - _EPOCH_S) / 3600.0
        if obis in (OBIS_ENERGY_IMPORT, OBIS_ENERGY_EXPORT):
            curve = self._import if obis == OBIS_ENERGY_IMPORT else self._export
            scaler = self.config.profile.energy_scaler
            wh = curve.energy_wh(max(hours, 0.0))
            return RegisterValue(raw=math.floor(wh / 10**scaler), scaler=scaler, unit=UNIT_WH)
        if obis == OBIS_POWER_IMPORT:
            return RegisterValue(raw=math.floor(self._import.power_w(hours)), scaler=0, unit=UNIT_W)
        if obis == OBIS_VOLTAGE_L1:
            volts = 230.0 + 3.0 * math.sin(3.1 * _OMEGA * hours + self._voltage_phase)
            return RegisterValue(raw=round(volts * 10), scaler=-1, unit=UNIT_V)
        raise KeyError(f"meter {self.config.meter_id}: no register {obis}")

    # -- event log ---------------------------------------------------------------------

    def _events_of_day(self, day: int) -> list[tuple[float, int]]:
        """Events (true UTC seconds, code) on UTC day `day` since installation."""
        s, n = self.config.seed, self.config.serial
        if _unit(s, n, "outage", day) >= 0.3:
            return []
        start = _EPOCH_S + day * _DAY_S + math.floor(_unit(s, n, "outage-at", day) * 80_000)
        duration = 30 + math.floor(_unit(s, n, "outage-for", day) * 1_800)
        return [(float(start), EVENT_POWER_DOWN), (float(start + duration), EVENT_POWER_UP)]

    def _events_between(self, from_true_s: float, to_true_s: float) -> list[tuple[float, int]]:
        first = max(0, math.floor((from_true_s - _EPOCH_S) / _DAY_S))
        last = math.floor((to_true_s - _EPOCH_S) / _DAY_S)
        out: list[tuple[float, int]] = []
        for day in range(first, last + 1):
            out.extend(e for e in self._events_of_day(day) if from_true_s <= e[0] <= to_true_s)
        return out

    def events(self, from_m: datetime | None, to_m: datetime | None, now: datetime) -> list[EventRow]:
        """Event log rows with meter-time stamps in [from_m, to_m], as the meter holds them at `now`."""
        _require_aware(from_m, to_m, now)
        now_s = now.timestamp()
        window_start = now_s - 120 * _DAY_S
        lo = window_start if from_m is None else max(window_start, self.true_seconds(from_m.timestamp()))
        hi = now_s if to_m is None else min(now_s, self.true_seconds(to_m.timestamp()))
        held = self._events_between(window_start, now_s)[-self.config.profile.event_log_depth:]
        return [
            EventRow(clock=self._meter_dt(t), code=code)
            for t, code in held
            if lo - 1e-6 <= t <= hi + 1e-6
        ]

    # -- load profile ------------------------------------------------------------------

    def _meter_dt(self, true_s: float) -> datetime:
        return datetime.fromtimestamp(round(self.meter_seconds(true_s)), self._tz)

    def profile_rows(self, from_m: datetime | None, to_m: datetime | None, now: datetime) -> list[ProfileRow]:
        """Load profile rows whose (meter) capture time lies in [from_m, to_m], held at `now`."""
        _require_aware(from_m, to_m, now)
        meter_now = self.meter_seconds(now.timestamp())
        newest = math.floor(meter_now / CAPTURE_PERIOD_S)
        depth = self.config.profile.profile_depth_days * 96
        installed = math.ceil(self.meter_seconds(_EPOCH_S) / CAPTURE_PERIOD_S)
        oldest = max(newest - depth + 1, installed)
        if from_m is not None:
            oldest = max(oldest, math.ceil(from_m.timestamp() / CAPTURE_PERIOD_S))
        if to_m is not None:
            newest = min(newest, math.floor(to_m.timestamp() / CAPTURE_PERIOD_S))
        if newest < oldest:
            return []
        captures = [self.true_seconds(k * CAPTURE_PERIOD_S) for k in range(oldest - 1, newest + 1)]
        outages = [t for t, code in self._events_between(captures[0], captures[-1]) if code == EVENT_POWER_DOWN]
        rows = []
        for i in range(1, len(captures)):
            t_prev, t = captures[i - 1], captures[i]
            status = STATUS_POWER_DOWN if any(t_prev < o <= t for o in outages) else 0
            blank = status and self.config.null_cells_on_power_down
            rows.append(ProfileRow(
                clock=datetime.fromtimestamp((oldest + i - 1) * CAPTURE_PERIOD_S, self._tz),
                status=status,
                energy_import=None if blank else self._register_at(OBIS_ENERGY_IMPORT, t).raw,
                energy_export=None if blank else self._register_at(OBIS_ENERGY_EXPORT, t).raw,
            ))
        return rows

    def profile_entries_in_use(self, now: datetime) -> int:
        meter_now = self.meter_seconds(now.timestamp())
        newest = math.floor(meter_now / CAPTURE_PERIOD_S)
        installed = math.ceil(self.meter_seconds(_EPOCH_S) / CAPTURE_PERIOD_S)
        return max(0, min(self.config.profile.profile_depth_days * 96, newest - installed + 1))


def expected_register(meter: SimulatedMeter, obis: str, at: datetime) -> RegisterValue:
    """What the meter answers for register `obis` (attr 2 raw + attr 3 scaler/unit) at true time `at`."""
    return meter.register(obis, at)


def expected_clock(meter: SimulatedMeter, at: datetime) -> MeterClockReading:
    """What the meter's clock attribute 2 says at true time `at`."""
    return meter.clock(at)


def expected_profile_rows(
    meter: SimulatedMeter, from_: datetime, to: datetime, now: datetime | None = None
) -> list[ProfileRow]:
    """Load profile rows a range read [from_, to] (meter time, inclusive) returns at `now` (default: to)."""
    return meter.profile_rows(from_, to, now if now is not None else to)


def expected_events(
    meter: SimulatedMeter, from_: datetime | None, to: datetime | None, now: datetime
) -> list[EventRow]:
    """Event log rows a read returns at `now`; None bounds mean the whole held log."""
    return meter.events(from_, to, now)
