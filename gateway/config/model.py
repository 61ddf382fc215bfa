"""The parsed fleet config: frozen values the scheduler, drivers and store are built from.

Produced only by ``gateway.config.load``, which has already checked every cross-reference (a meter's
connection exists, addresses fit the framing, ids are unique), so code that receives a ``FleetConfig``
can trust it. Durations are seconds (``_s``), power is watts (``_w``), relative paths are already
resolved against the config file's directory.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping
from zoneinfo import ZoneInfo

from gateway.config.clock_sync import DEFAULT_CLOCK_SYNC, ClockSyncConfig
from gateway.config.secrets import SecretRef

# Must follow the meter profiles in drivers/meters/ (one profile module per make): a profile listed
# here but missing there fails at poll time, one missing here is refused by check-config.
KNOWN_PROFILES: Mapping[str, frozenset[str]] = {
    "kamstrup": frozenset({"omnipower"}),
    "landis_gyr": frozenset({"e450", "e360", "e570"}),
}

Framing = Literal["wrapper", "hdlc"]
SignOn = Literal["mode_e", "none"]
SecurityLevel = Literal["none", "lls", "hls_gmac"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["text", "json"]

FRAMINGS: tuple[Framing, ...] = ("wrapper", "hdlc")
SIGN_ONS: tuple[SignOn, ...] = ("mode_e", "none")
SECURITY_LEVELS: tuple[SecurityLevel, ...] = ("none", "lls", "hls_gmac")
LOG_LEVELS: tuple[LogLevel, ...] = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")


@dataclass(frozen=True, slots=True)
class SqliteStoreConfig:
    path: Path


@dataclass(frozen=True, slots=True)
class CosmosStoreConfig:
    """Cosmos DB as the store, fed through a local SQLite outbox that survives WAN outages."""

    endpoint: str
    database: str
    container: str
    key: SecretRef  # always an environment variable (issue 4)
    verify_tls: bool
    outbox_path: Path
    outbox_max_bytes: int  # the outbox alarms and refuses new events beyond this
    # The container of the views and their checkpoints; None: "<container>-views", so fleets
    # sharing a database never share their views.
    views_container: str | None = None

    @property
    def views_container_name(self) -> str:
        return self.views_container or f"{self.container}-views"


StoreConfig = SqliteStoreConfig | CosmosStoreConfig


@dataclass(frozen=True, slots=True)
class Schedule:
    interval_s: float
    jitter_s: float  # each poll starts at a random offset in [0, jitter_s) so polls spread out
    enabled: bool


@dataclass(frozen=True, slots=True)
class Schedules:
    registers: Schedule
    load_profile: Schedule
    clock_check: Schedule
    event_log: Schedule


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect_s: float
    response_s: float  # one request/response exchange, per attempt


@dataclass(frozen=True, slots=True)
class ConcentratorConfig:
    """A TCP endpoint: a DLMS wrapper concentrator, or HDLC over TCP to an RS-485 bus."""

    id: str
    host: str
    port: int
    framing: Framing
    max_sessions: int  # 1 for an HDLC bus: the bus carries one session at a time
    timeouts: Timeouts


@dataclass(frozen=True, slots=True)
class OpticalPortConfig:
    """A serial optical probe (IEC 62056-21) on one meter; always one session at a time."""

    id: str
    device: str
    baud: int  # the HDLC baud rate after sign-on
    sign_on: SignOn
    timeouts: Timeouts


ConnectionConfig = ConcentratorConfig | OpticalPortConfig


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    level: SecurityLevel
    password: SecretRef | None = None  # lls
    authentication_key: SecretRef | None = None  # hls_gmac, 16 bytes as hex
    encryption_key: SecretRef | None = None  # hls_gmac, 16 bytes as hex
    client_system_title: bytes | None = None  # hls_gmac, 8 bytes; None: the drivers' default


@dataclass(frozen=True, slots=True)
class MeterConfig:
    id: str
    make: str
    profile: str
    connection: str  # id of a concentrator or an optical port
    framing: Framing  # from the connection (optical ports speak HDLC)
    client_address: int | None  # None: the profile's default for the security level
    logical_address: int | None  # HDLC server logical address; None: the profile's default
    physical_address: int | None  # HDLC server physical address (required on a bus)
    wport: int | None  # wrapper server wPort (required behind a wrapper concentrator)
    security: SecurityConfig
    timezone: ZoneInfo  # used when the meter's clock says "deviation not specified"
    max_power_w: Decimal  # energy rising faster than this is flagged as suspect
    overrides: Mapping[str, Any]  # profile overrides, interpreted by drivers/meters
    clock_sync: ClockSyncConfig = DEFAULT_CLOCK_SYNC  # the fleet's [clock_sync] with the meter's overrides


@dataclass(frozen=True, slots=True)
class Limits:
    max_concurrent_polls: int
    meter_deadline_s: float  # a dead meter costs the fleet no more than this per poll
    retries: int
    backoff_initial_s: float
    backoff_max_s: float


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: LogLevel
    format: LogFormat


@dataclass(frozen=True, slots=True)
class ProjectionsConfig:
    """Whether ``gateway run`` also keeps the views up to date (as ``gateway project`` does)."""

    enabled: bool
    interval_s: float  # idle time between feed reads once the views have caught up
    batch_size: int  # events read from the feed per page


DEFAULT_PROJECTIONS = ProjectionsConfig(enabled=False, interval_s=1.0, batch_size=1000)


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """``[metrics]``: whether ``gateway run`` serves /metrics (Prometheus) and /healthz, and where."""

    enabled: bool
    address: str
    port: int
    stale_intervals: int  # /healthz is 503 once nothing was stored for this many poll intervals


DEFAULT_METRICS = MetricsConfig(enabled=False, address="127.0.0.1", port=9464, stale_intervals=3)


@dataclass(frozen=True, slots=True)
class FleetConfig:
    source: Path
    gateway_id: str
    clock_drift_threshold_s: float
    store: StoreConfig
    schedules: Schedules
    limits: Limits
    logging: LoggingConfig
    concentrators: tuple[ConcentratorConfig, ...]
    optical_ports: tuple[OpticalPortConfig, ...]
    meters: tuple[MeterConfig, ...]
    projections: ProjectionsConfig = DEFAULT_PROJECTIONS
    metrics: MetricsConfig = DEFAULT_METRICS
    clock_sync: ClockSyncConfig = DEFAULT_CLOCK_SYNC

    def meter(self, meter_id: str) -> MeterConfig:
        for meter in self.meters:
            if meter.id == meter_id:
                return meter
        raise KeyError(meter_id)

    def connection(self, connection_id: str) -> ConnectionConfig:
        conns: tuple[ConnectionConfig, ...] = (*self.concentrators, *self.optical_ports)
        for conn in conns:
            if conn.id == connection_id:
                return conn
        raise KeyError(connection_id)

    def secret_refs(self) -> Iterator[SecretRef]:
        if isinstance(self.store, CosmosStoreConfig):
            yield self.store.key
        for meter in self.meters:
            sec = meter.security
            for ref in (sec.password, sec.authentication_key, sec.encryption_key):
                if ref is not None:
                    yield ref
