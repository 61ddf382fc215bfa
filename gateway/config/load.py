"""Read a fleet config (TOML) into a ``FleetConfig``, reporting every problem at once.

This module is the schema: which tables and keys exist, their defaults, and the checks across sections
(a meter's connection exists, its addresses fit the framing, ids and addresses are unique). The typed
reading itself, which records problems instead of stopping, is in ``gateway.config.reader``; whatever
parsed is still cross-checked, and one ``ConfigError`` carries every problem found.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any, Collection, Mapping
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from drivers.meters.profiles import override_problems
from gateway.config.clock_sync import DEFAULT_CLOCK_SYNC, ClockSyncConfig, read_clock_sync
from gateway.config.errors import ConfigError, ConfigIssue
from gateway.config.model import (
    DEFAULT_PROJECTIONS,
    FRAMINGS,
    KNOWN_PROFILES,
    LOG_FORMATS,
    LOG_LEVELS,
    SECURITY_LEVELS,
    SIGN_ONS,
    ConcentratorConfig,
    ConnectionConfig,
    CosmosStoreConfig,
    FleetConfig,
    Framing,
    Limits,
    LoggingConfig,
    MeterConfig,
    OpticalPortConfig,
    ProjectionsConfig,
    MetricsConfig,
    DEFAULT_METRICS,
    Schedule,
    Schedules,
    SecurityConfig,
    SqliteStoreConfig,
    StoreConfig,
    Timeouts,
)
from gateway.config.reader import Context, Table, one_of, suggest, type_name

_BAUD_RATES = (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
# HDLC addresses (IEC 62056-46 §6.4.2.2): 0 is NO_STATION, the top values CALLING and ALL_STATION;
# lower (physical) addresses 0x01-0x0F are reserved, client 0x7F is the all-station broadcast.
_HDLC_SERVER_MAX = 0x3FFD
_HDLC_PHYSICAL_MIN = 0x10
_HDLC_CLIENT_MAX = 0x7E
_WPORT_MAX = 0xFFFF
_SECRET_WORDS = ("password", "secret", "key")

_SCHEDULE_DEFAULTS = {  # interval_s, jitter_s
    "registers": (900.0, 60.0),
    "load_profile": (900.0, 120.0),
    "clock_check": (3600.0, 300.0),
    "event_log": (3600.0, 300.0),
}


def load_config(path: str | Path, *, check_secret_files: bool = True) -> FleetConfig:
    """Load and validate a fleet config file; raises ``ConfigError`` listing every problem.

    ``check_secret_files`` also checks that each ``{ file = ... }`` secret exists with mode 0600 or
    narrower (they are checked again when resolved). Environment variables are only read at use time.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(path), "", f"cannot read the file ({exc.strerror})")]) from None
    except UnicodeDecodeError:
        raise ConfigError([ConfigIssue(str(path), "", "is not UTF-8 text")]) from None
    return parse_config(text, file=str(path), base_dir=path.resolve().parent,
                        check_secret_files=check_secret_files, source=path)


def parse_config(
    text: str,
    *,
    file: str = "<config>",
    base_dir: Path | None = None,
    check_secret_files: bool = True,
    source: Path | None = None,
) -> FleetConfig:
    """Parse config text; relative paths are taken from ``base_dir`` (default: current directory)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message names the line and column, never the offending value.
        raise ConfigError([ConfigIssue(file, "", f"not valid TOML: {exc}")]) from None
    ctx = Context(file, (base_dir or Path.cwd()).resolve(), check_secret_files)
    config = _read_fleet(ctx, data, source or Path(file))
    if ctx.issues or config is None:
        raise ConfigError(ctx.issues)
    return config


def _read_fleet(ctx: Context, data: dict[str, Any], source: Path) -> FleetConfig | None:
    top = Table(ctx, data, "", (
        "gateway_id", "default_timezone", "clock_drift_threshold_s", "store", "schedules", "limits",
        "logging", "projections", "metrics", "clock_sync", "concentrators", "optical_ports", "meters",
    ))
    gateway_id = top.ident("gateway_id")
    default_tz = _timezone(top, "default_timezone") if top.has("default_timezone") else None
    drift = top.number("clock_drift_threshold_s", 10.0)
    store = _read_store(top)
    schedules = _read_schedules(top)
    limits = _read_limits(top)
    logging = _read_logging(top)
    projections = _read_projections(top)
    metrics = _read_metrics(top)
    clock_sync = read_clock_sync(top, DEFAULT_CLOCK_SYNC)
    concentrator_tables = top.array_of_tables("concentrators")
    optical_tables = top.array_of_tables("optical_ports")
    concentrators = [c for p, d in concentrator_tables if (c := _read_concentrator(ctx, p, d))]
    optical = [o for p, d in optical_tables if (o := _read_optical_port(ctx, p, d))]
    # Concentrator and optical port ids share one namespace: a meter's `connection` names either.
    _check_unique_ids(ctx, concentrator_tables + optical_tables, "connection")
    parsed: list[ConnectionConfig] = [*concentrators, *optical]
    connections = {conn.id: conn for conn in reversed(parsed)}  # the first of duplicates wins
    meter_tables = top.array_of_tables("meters")
    tz_fallback = _TzFallback(default_tz, reported=top.has("default_timezone") and default_tz is None)
    # A connection that failed to parse is still declared: its meters are not "unknown connection" too.
    declared = {d["id"] for _, d in concentrator_tables + optical_tables if isinstance(d.get("id"), str)}
    meters = [m for p, d in meter_tables
              if (m := _read_meter(ctx, p, d, connections, declared, tz_fallback, clock_sync or DEFAULT_CLOCK_SYNC))]
    _check_unique_ids(ctx, meter_tables, "meter")
    if not meter_tables and not any(issue.key_path == "meters" for issue in ctx.issues):
        ctx.add("meters", "the fleet has no meters: add at least one [[meters]] section")
    _check_fleet(ctx, meters, connections, limits)
    if ctx.issues:
        return None
    assert gateway_id and drift is not None and store and schedules and limits and logging and projections and metrics
    assert clock_sync is not None
    return FleetConfig(
        source=source,
        gateway_id=gateway_id,
        clock_drift_threshold_s=drift,
        store=store,
        schedules=schedules,
        limits=limits,
        logging=logging,
        concentrators=tuple(concentrators),
        optical_ports=tuple(optical),
        meters=tuple(meters),
        projections=projections,
        metrics=metrics,
        clock_sync=clock_sync,
    )


@dataclass(frozen=True)
class _TzFallback:
    zone: ZoneInfo | None
    reported: bool  # default_timezone was given but invalid: already reported once


def _timezone(table: Table, key: str) -> ZoneInfo | None:
    name = table.string(key)
    if name is None:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        table.ctx.add(table.key(key), f"unknown IANA time zone {name!r}{suggest(name, available_timezones())}")
        return None


def _read_store(top: Table) -> StoreConfig | None:
    sqlite_keys = ("kind", "path")
    cosmos_keys = ("kind", "endpoint", "database", "container", "views_container", "key", "verify_tls", "outbox_path",
                   "outbox_max_mb")
    raw = top.data.get("store")
    kind = raw.get("kind") if isinstance(raw, dict) else None
    known = {"sqlite": sqlite_keys, "cosmos": cosmos_keys}.get(str(kind), (*sqlite_keys, *cosmos_keys[1:]))
    store = top.table("store", known, required=True)
    if store is None:
        return None
    kind = store.choice("kind", ("sqlite", "cosmos"))
    if kind == "sqlite":
        path = store.path_value("path")
        return SqliteStoreConfig(path) if path else None
    if kind != "cosmos":
        return None
    endpoint = store.string("endpoint")
    if endpoint is not None:
        url = urlparse(endpoint)
        if url.scheme != "https" or not url.hostname:
            top.ctx.add(store.key("endpoint"), "must be an https:// URL")
            endpoint = None
    database = store.string("database", "meter-gateway")
    container = store.string("container", "events")
    views_container = store.string("views_container", None)
    if views_container is not None and views_container == container:
        top.ctx.add(store.key("views_container"), "must not be the events container (`container`)")
        views_container = None
    key = store.secret("key", env_only=True)
    verify_tls = store.boolean("verify_tls", True)
    outbox_path = store.path_value("outbox_path")
    outbox_mb = store.integer("outbox_max_mb", 1024, lo=1)
    if (endpoint is None or database is None or container is None or key is None or verify_tls is None
            or outbox_path is None or outbox_mb is None):
        return None
    return CosmosStoreConfig(endpoint, database, container, key, verify_tls, outbox_path, outbox_mb * 1024 * 1024,
                             views_container)


def _read_schedules(top: Table) -> Schedules | None:
    schedules = top.table("schedules", tuple(_SCHEDULE_DEFAULTS))
    if schedules is None:
        return None
    read: dict[str, Schedule | None] = {}
    for name, (interval_default, jitter_default) in _SCHEDULE_DEFAULTS.items():
        table = schedules.table(name, ("interval_s", "jitter_s", "enabled"))
        if table is None:
            read[name] = None
            continue
        interval = table.number("interval_s", interval_default)
        jitter = table.number("jitter_s", min(jitter_default, interval or jitter_default), positive=False)
        enabled = table.boolean("enabled", True)
        if interval is not None and jitter is not None and jitter >= interval:
            top.ctx.add(table.key("jitter_s"), f"must be less than interval_s ({interval:g})")
            jitter = None
        if interval is None or jitter is None or enabled is None:
            read[name] = None
        else:
            read[name] = Schedule(interval, jitter, enabled)
    registers, load_profile, clock_check, event_log = (read[name] for name in _SCHEDULE_DEFAULTS)
    if registers is None or load_profile is None or clock_check is None or event_log is None:
        return None
    return Schedules(registers, load_profile, clock_check, event_log)


def _read_limits(top: Table) -> Limits | None:
    limits = top.table(
        "limits", ("max_concurrent_polls", "meter_deadline_s", "retries", "backoff_initial_s", "backoff_max_s")
    )
    if limits is None:
        return None
    concurrency = limits.integer("max_concurrent_polls", 32, lo=1)
    deadline = limits.number("meter_deadline_s", 60.0)
    retries = limits.integer("retries", 2, lo=0, hi=10)
    initial = limits.number("backoff_initial_s", 2.0)
    maximum = limits.number("backoff_max_s", 60.0)
    if initial is not None and maximum is not None and maximum < initial:
        top.ctx.add(limits.key("backoff_max_s"), f"must be at least backoff_initial_s ({initial:g})")
        maximum = None
    if concurrency is None or deadline is None or retries is None or initial is None or maximum is None:
        return None
    return Limits(concurrency, deadline, retries, initial, maximum)


def _read_logging(top: Table) -> LoggingConfig | None:
    logging = top.table("logging", ("level", "format"))
    if logging is None:
        return None
    level = logging.choice("level", LOG_LEVELS, "INFO")
    fmt = logging.choice("format", LOG_FORMATS, "text")
    return LoggingConfig(level, fmt) if level is not None and fmt is not None else None


def _read_metrics(top: Table) -> MetricsConfig | None:
    table = top.table("metrics", ("enabled", "address", "port", "stale_intervals"))
    if table is None:
        return DEFAULT_METRICS
    enabled = table.boolean("enabled", DEFAULT_METRICS.enabled)
    address = table.string("address", DEFAULT_METRICS.address)
    port = table.integer("port", DEFAULT_METRICS.port, lo=0, hi=65535)
    stale = table.integer("stale_intervals", DEFAULT_METRICS.stale_intervals, lo=1, hi=1000)
    if enabled is None or address is None or port is None or stale is None:
        return None
    return MetricsConfig(enabled, address, port, stale)


def _read_projections(top: Table) -> ProjectionsConfig | None:
    table = top.table("projections", ("enabled", "interval_s", "batch_size"))
    if table is None:
        return None
    enabled = table.boolean("enabled", DEFAULT_PROJECTIONS.enabled)
    interval = table.number("interval_s", DEFAULT_PROJECTIONS.interval_s)
    batch = table.integer("batch_size", DEFAULT_PROJECTIONS.batch_size, lo=1, hi=100_000)
    if enabled is None or interval is None or batch is None:
        return None
    return ProjectionsConfig(enabled, interval, batch)


def _read_timeouts(parent: Table) -> Timeouts | None:
    table = parent.table("timeouts", ("connect_s", "response_s"), example=" like { connect_s = 5, response_s = 10 }")
    if table is None:
        return None
    connect = table.number("connect_s", 5.0)
    response = table.number("response_s", 10.0)
    return Timeouts(connect, response) if connect is not None and response is not None else None


def _read_concentrator(ctx: Context, path: str, data: dict[str, Any]) -> ConcentratorConfig | None:
    table = Table(ctx, data, path, ("id", "host", "port", "framing", "max_sessions", "timeouts"))
    cid = table.ident("id")
    host = table.string("host")
    port = table.integer("port", lo=1, hi=65535)
    framing = table.choice("framing", FRAMINGS)
    max_sessions = table.integer("max_sessions", 1 if framing == "hdlc" else 4, lo=1)
    if framing == "hdlc" and max_sessions is not None and max_sessions > 1:
        ctx.add(table.key("max_sessions"), "an HDLC bus (RS-485) carries one session at a time: must be 1")
        max_sessions = None
    timeouts = _read_timeouts(table)
    if cid is None or host is None or port is None or framing is None or max_sessions is None or timeouts is None:
        return None
    return ConcentratorConfig(cid, host, port, framing, max_sessions, timeouts)


def _read_optical_port(ctx: Context, path: str, data: dict[str, Any]) -> OpticalPortConfig | None:
    table = Table(ctx, data, path, ("id", "device", "baud", "sign_on", "timeouts"))
    pid = table.ident("id")
    device = table.string("device")
    baud = table.integer("baud", 9600)
    if baud is not None and baud not in _BAUD_RATES:
        ctx.add(table.key("baud"), f"unsupported baud rate {baud}; expected one of {', '.join(map(str, _BAUD_RATES))}")
        baud = None
    sign_on = table.choice("sign_on", SIGN_ONS, "mode_e")
    timeouts = _read_timeouts(table)
    if pid is None or device is None or baud is None or sign_on is None or timeouts is None:
        return None
    return OpticalPortConfig(pid, device, baud, sign_on, timeouts)


_METER_KEYS = (
    "id", "make", "profile", "connection", "client_address", "logical_address", "physical_address", "wport",
    "security", "timezone", "max_power_w", "overrides", "clock_sync",
)
_SECURITY_KEYS = ("level", "password", "authentication_key", "encryption_key", "client_system_title")
_SECURITY_EXAMPLE = ' like { level = "lls", password = { env = "VARIABLE_NAME" } }'


def _read_meter(
    ctx: Context,
    path: str,
    data: dict[str, Any],
    connections: Mapping[str, ConcentratorConfig | OpticalPortConfig],
    declared: Collection[str],
    tz_fallback: _TzFallback,
    fleet_clock_sync: ClockSyncConfig = DEFAULT_CLOCK_SYNC,
) -> MeterConfig | None:
    table = Table(ctx, data, path, _METER_KEYS)
    mid = table.ident("id")
    make = table.choice("make", tuple(KNOWN_PROFILES))
    profile = table.string("profile")
    if make is not None and profile is not None and profile not in KNOWN_PROFILES[make]:
        hint = suggest(profile, KNOWN_PROFILES[make]) or f"; known {make} profiles: {one_of(KNOWN_PROFILES[make])}"
        ctx.add(table.key("profile"), f"unknown profile {profile!r} for make {make!r}{hint}")
        profile = None

    conn_id = table.string("connection")
    conn = connections.get(conn_id) if conn_id is not None else None
    if conn_id is not None and conn is None and conn_id not in declared:
        hint = suggest(conn_id, connections) or (
            f"; known: {one_of(connections)}" if connections else "; no concentrator or optical port is configured")
        ctx.add(table.key("connection"), f"unknown concentrator or optical port {conn_id!r}{hint}")
    addresses = _read_addresses(table, conn)
    security = _read_security(table)
    timezone = _timezone(table, "timezone") if table.has("timezone") else tz_fallback.zone
    if not table.has("timezone") and tz_fallback.zone is None and not tz_fallback.reported:
        ctx.add(table.key("timezone"), "missing: set timezone here, or default_timezone at the top of the file")
    max_power = table.number("max_power_w")
    overrides = _read_overrides(table)
    clock_sync = read_clock_sync(table, fleet_clock_sync)
    if (mid is None or make is None or profile is None or conn is None or addresses is None or security is None
            or timezone is None or max_power is None or overrides is None or clock_sync is None):
        return None
    return MeterConfig(
        id=mid, make=make, profile=profile, connection=conn.id, framing=_framing_of(conn),
        client_address=addresses.client, logical_address=addresses.logical,
        physical_address=addresses.physical, wport=addresses.wport,
        security=security, timezone=timezone, max_power_w=Decimal(str(max_power)), overrides=overrides,
        clock_sync=clock_sync,
    )


def _framing_of(conn: ConnectionConfig) -> Framing:
    return conn.framing if isinstance(conn, ConcentratorConfig) else "hdlc"


@dataclass(frozen=True)
class _Addresses:
    client: int | None
    logical: int | None
    physical: int | None
    wport: int | None


def _read_addresses(table: Table, conn: ConnectionConfig | None) -> _Addresses | None:
    ctx = table.ctx
    if conn is None:
        return None  # unknown connection: already reported, and the framing is unknown
    framing = _framing_of(conn)
    client_max = _HDLC_CLIENT_MAX if framing == "hdlc" else _WPORT_MAX
    client = table.integer("client_address", None, lo=1, hi=client_max)
    logical = physical = wport = None
    ok = not (table.has("client_address") and client is None)
    if framing == "wrapper":
        for key in ("logical_address", "physical_address"):
            if table.has(key):
                ctx.add(table.key(key),
                        f"connection {conn.id!r} uses the DLMS wrapper: address the meter by wport, not {key}")
                ok = False
        if not table.has("wport"):
            ctx.add(table.key("wport"),
                    f"missing: a meter behind wrapper concentrator {conn.id!r} needs its wport (server wPort)")
            return None
        wport = table.integer("wport", lo=1, hi=_WPORT_MAX)
        ok = ok and wport is not None
    else:
        if table.has("wport"):
            ctx.add(table.key("wport"), f"connection {conn.id!r} uses HDLC: address the meter by "
                    "physical_address and logical_address, not wport")
            ok = False
        logical = table.integer("logical_address", None, lo=1, hi=_HDLC_SERVER_MAX)
        ok = ok and not (table.has("logical_address") and logical is None)
        on_bus = isinstance(conn, ConcentratorConfig)
        if on_bus and not table.has("physical_address"):
            ctx.add(table.key("physical_address"),
                    f"missing: a meter on HDLC bus {conn.id!r} needs its HDLC physical address")
            return None
        physical = table.integer("physical_address", None, lo=_HDLC_PHYSICAL_MIN, hi=_HDLC_SERVER_MAX)
        ok = ok and not (table.has("physical_address") and physical is None)
    return _Addresses(client, logical, physical, wport) if ok else None


def _read_security(meter: Table) -> SecurityConfig | None:
    table = meter.table("security", _SECURITY_KEYS, required=True, example=_SECURITY_EXAMPLE)
    if table is None:
        return None
    level = table.choice("level", SECURITY_LEVELS)
    if level is None:
        return None
    wanted = {"none": (), "lls": ("password",), "hls_gmac": ("authentication_key", "encryption_key")}[level]
    for key in ("password", "authentication_key", "encryption_key", "client_system_title"):
        if table.has(key) and key not in wanted and not (key == "client_system_title" and level == "hls_gmac"):
            table.ctx.add(table.key(key), f"is not used with security level {level!r}")
    refs = {key: table.secret(key) for key in wanted}
    title: bytes | None = None
    if level == "hls_gmac":
        text = table.string("client_system_title", None)
        if text is not None:
            try:
                title = bytes.fromhex(text)
            except ValueError:
                title = b""
            if len(title) != 8:
                table.ctx.add(table.key("client_system_title"), "must be 8 bytes written as 16 hex digits")
                return None
    if any(ref is None for ref in refs.values()):
        return None
    return SecurityConfig(level=level, client_system_title=title, **refs)


def _read_overrides(meter: Table) -> Mapping[str, Any] | None:
    raw = meter.data.get("overrides", {})
    if not isinstance(raw, dict):
        meter.ctx.add(meter.key("overrides"), f"expected a table, got {type_name(raw)}")
        return None
    for key in raw:
        if any(word in key.lower() for word in _SECRET_WORDS):
            meter.ctx.add(f"{meter.key('overrides')}.{key}",
                          "secrets belong in the security table, by reference, not in overrides")
            return None
    # The drivers' profile validation, run now so a bad table fails check-config, not every poll.
    problems = override_problems(raw)
    for key, message in problems:
        meter.ctx.add(f"{meter.key('overrides')}.{key}", message)
    return None if problems else MappingProxyType(dict(raw))


def _check_unique_ids(ctx: Context, tables: list[tuple[str, dict[str, Any]]], what: str) -> None:
    first_use: dict[str, str] = {}
    for path, data in tables:
        value = data.get("id")
        if not isinstance(value, str):
            continue
        if value in first_use:
            ctx.add(f"{path}.id", f"duplicate {what} id {value!r} (already used by {first_use[value]})")
        else:
            first_use[value] = path


def _check_fleet(
    ctx: Context,
    meters: list[MeterConfig],
    connections: Mapping[str, ConcentratorConfig | OpticalPortConfig],
    limits: Limits | None,
) -> None:
    """Checks across sections: unique addresses, one meter per optical probe, timeouts."""
    by_address: dict[tuple[str, str, int], list[str]] = {}
    per_port: dict[str, list[str]] = {}
    for m in meters:
        conn = connections[m.connection]
        if isinstance(conn, OpticalPortConfig):
            per_port.setdefault(conn.id, []).append(m.id)
        elif m.framing == "hdlc":
            address = (m.physical_address or 0) * 0x4000 + (m.logical_address or 0)
            by_address.setdefault((conn.id, "physical/logical address", address), []).append(m.id)
        elif m.wport is not None:
            by_address.setdefault((conn.id, "wport", m.wport), []).append(m.id)
    for (conn_id, what, _), ids in by_address.items():
        if len(ids) > 1:
            ctx.add("meters", f"meters {', '.join(map(repr, ids))} share one {what} on {conn_id!r}")
    for port_id, ids in per_port.items():
        if len(ids) > 1:
            ctx.add("meters", f"optical port {port_id!r} reaches one meter, but {', '.join(map(repr, ids))} use it")
    if limits is None:
        return
    for conn in connections.values():
        needed = conn.timeouts.connect_s + conn.timeouts.response_s
        if limits.meter_deadline_s <= needed:
            ctx.add("limits.meter_deadline_s",
                    f"{limits.meter_deadline_s:g} s is not more than one connect and exchange on {conn.id!r} "
                    f"({needed:g} s): every poll there would hit the deadline")
