"""Fleet config loading: the shipped configs load, and each mistake is named by file and key."""
from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Callable
from zoneinfo import ZoneInfo

import pytest

from gateway.config import (
    KNOWN_PROFILES,
    ConcentratorConfig,
    ConfigError,
    ConfigIssue,
    CosmosStoreConfig,
    SqliteStoreConfig,
    load_config,
    parse_config,
)

from .conftest import BASE, HDLC_METER, REPO, WRAPPER_METER, by_key

Issues = Callable[[str], list[ConfigIssue]]


def test_example_config_loads_with_every_section() -> None:
    config = load_config(REPO / "config" / "example-fleet.toml")

    assert config.gateway_id == "substation-north-01"
    assert isinstance(config.store, SqliteStoreConfig)
    assert {c.framing for c in config.concentrators} == {"hdlc", "wrapper"}
    assert [p.sign_on for p in config.optical_ports] == ["mode_e"]
    assert {m.make for m in config.meters} == set(KNOWN_PROFILES)
    assert {m.security.level for m in config.meters} == {"none", "lls", "hls_gmac"}
    kam = config.meter("kam-omni-0001")
    assert kam.wport == 1 and kam.framing == "wrapper"
    assert kam.security.client_system_title == bytes.fromhex("4D47570000000001")
    assert kam.overrides["load_profile"] == "1.0.99.1.0.255"
    assert config.meter("lg-e570-0001").framing == "hdlc"  # optical probes speak HDLC
    assert config.meter("lg-e450-0002").timezone == ZoneInfo("Europe/Copenhagen")  # the default
    assert config.meter("lg-e450-0001").max_power_w == Decimal("69000")
    assert config.schedules.load_profile.interval_s == 900
    assert isinstance(config.connection("feeder-a-bus"), ConcentratorConfig)


def test_demo_config_is_the_mixed_local_fleet() -> None:
    config = load_config(REPO / "config" / "demo-fleet.toml")

    assert {m.make for m in config.meters} == {"kamstrup", "landis_gyr"}
    assert {m.framing for m in config.meters} == {"wrapper", "hdlc"}
    assert {m.security.level for m in config.meters} == {"none", "lls", "hls_gmac"}
    assert {c.host for c in config.concentrators} == {"127.0.0.1"}
    assert all(c.max_sessions == 1 for c in config.concentrators if c.framing == "hdlc")
    assert config.meter("absent-0007").framing == "hdlc"
    assert config.limits.meter_deadline_s <= 5  # the always-failing meter must not stall a short demo


def test_defaults_and_relative_paths(write_config: Callable[[str], Path]) -> None:
    path = write_config(BASE + HDLC_METER)
    config = load_config(path)

    assert config.store == SqliteStoreConfig(path.parent / "events.sqlite3")
    bus, dc = config.connection("bus-1"), config.connection("dc-1")
    assert isinstance(bus, ConcentratorConfig) and isinstance(dc, ConcentratorConfig)
    assert (bus.max_sessions, dc.max_sessions) == (1, 4)
    assert config.limits.retries == 2 and config.logging.format == "text"
    assert config.schedules.registers.enabled
    assert config.meter("lg-1").logical_address is None  # the profile's default
    with pytest.raises(KeyError):
        config.meter("nope")


def test_typo_in_a_key_is_named_with_a_suggestion(issues_of: Issues) -> None:
    text = BASE + HDLC_METER.replace("physical_address = 17", "physical_adress = 17")
    issues = issues_of(text)

    typo = by_key(issues, "meters[0].physical_adress")
    assert "unknown key" in typo.message and "did you mean 'physical_address'?" in typo.message
    assert "needs its HDLC physical address" in by_key(issues, "meters[0].physical_address").message
    assert str(typo).startswith(f"{typo.file}: meters[0].physical_adress (id 'lg-1'): unknown key")


def test_typo_in_a_top_level_table_is_named(issues_of: Issues) -> None:
    issues = issues_of(BASE.replace("[store]", "[stroe]") + HDLC_METER)

    assert "did you mean 'store'?" in by_key(issues, "stroe").message
    assert "missing required table" in by_key(issues, "store").message


def test_missing_meter_addresses(issues_of: Issues) -> None:
    hdlc = HDLC_METER.replace("physical_address = 17\n", "")
    wrapper = WRAPPER_METER.replace("wport = 1\n", "")
    issues = issues_of(BASE + hdlc + wrapper)

    assert "bus 'bus-1' needs its HDLC physical address" in by_key(issues, "meters[0].physical_address").message
    assert "needs its wport" in by_key(issues, "meters[1].wport").message


def test_addresses_must_fit_the_framing(issues_of: Issues) -> None:
    hdlc = HDLC_METER.replace("physical_address = 17", "physical_address = 17\nwport = 3")
    wrapper = WRAPPER_METER.replace("wport = 1", "wport = 1\nphysical_address = 20")
    issues = issues_of(BASE + hdlc + wrapper)

    assert "uses HDLC" in by_key(issues, "meters[0].wport").message
    assert "uses the DLMS wrapper" in by_key(issues, "meters[1].physical_address").message


@pytest.mark.parametrize(
    ("key", "value"),
    [("password", "hunter2-Pa55word"), ("encryption_key", "000102030405060708090A0B0C0D0E0F")],
)
def test_inline_secret_is_refused_without_echoing_it(issues_of: Issues, key: str, value: str) -> None:
    level = "lls" if key == "password" else "hls_gmac"
    security = f'security = {{ level = "{level}", {key} = "{value}" }}'
    issues = issues_of(BASE + HDLC_METER.replace('security = { level = "none" }', security))

    issue = by_key(issues, f"meters[0].security.{key}")
    assert "must not be written in the config file" in issue.message
    assert f'{key} = {{ env = "VARIABLE_NAME" }}' in issue.message
    assert f'{key} = {{ file = "path/to/file" }}' in issue.message
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + HDLC_METER.replace('security = { level = "none" }', security))
    assert value not in str(info.value) and value not in repr(info.value)
    assert all(value not in str(i) and value not in repr(i) for i in info.value.issues)


def test_secret_under_a_mistyped_key_is_not_echoed(issues_of: Issues) -> None:
    security = 'security = { level = "lls", pasword = "hunter2-Pa55word" }'
    issues = issues_of(BASE + HDLC_METER.replace('security = { level = "none" }', security))

    assert "did you mean 'password'?" in by_key(issues, "meters[0].security.pasword").message
    assert "missing required secret reference" in by_key(issues, "meters[0].security.password").message
    assert all("hunter2" not in str(i) for i in issues)


def test_unknown_profile_and_make(issues_of: Issues) -> None:
    other = WRAPPER_METER.replace('make = "kamstrup"', 'make = "landis_gir"')
    issues = issues_of(BASE + HDLC_METER.replace('"e450"', '"e999"') + other)

    profile = by_key(issues, "meters[0].profile")
    assert "unknown profile 'e999' for make 'landis_gyr'" in profile.message
    assert "'e360', 'e450', 'e570'" in profile.message
    assert "did you mean 'landis_gyr'?" in by_key(issues, "meters[1].make").message


def test_bad_timezone(issues_of: Issues) -> None:
    meter = HDLC_METER.replace("max_power_w", 'timezone = "Europe/Copenhagn"\nmax_power_w')
    issues = issues_of(BASE + meter)

    issue = by_key(issues, "meters[0].timezone")
    assert "unknown IANA time zone 'Europe/Copenhagn'; did you mean 'Europe/Copenhagen'?" in issue.message


def test_missing_timezone_without_a_default(issues_of: Issues) -> None:
    issues = issues_of(BASE.replace('default_timezone = "Europe/Copenhagen"\n', "") + HDLC_METER)

    assert "default_timezone" in by_key(issues, "meters[0].timezone").message


def test_unknown_concentrator(issues_of: Issues) -> None:
    issues = issues_of(BASE + HDLC_METER.replace('connection = "bus-1"', 'connection = "bus-2"'))

    issue = by_key(issues, "meters[0].connection")
    assert "unknown concentrator or optical port 'bus-2'; did you mean 'bus-1'?" in issue.message


def test_secret_file_with_wide_permissions_is_refused(issues_of: Issues, tmp_path: Path) -> None:
    (tmp_path / "lls.pw").write_text("hunter2-Pa55word\n")
    os.chmod(tmp_path / "lls.pw", 0o644)
    security = 'security = { level = "lls", password = { file = "lls.pw" } }'
    issues = issues_of(BASE + HDLC_METER.replace('security = { level = "none" }', security))

    issue = by_key(issues, "meters[0].security.password.file")
    assert str(tmp_path / "lls.pw") in issue.message
    assert "0644, wider than 0600" in issue.message and "chmod 600" in issue.message
    assert "hunter2" not in str(issue)


def test_missing_secret_file_is_refused(issues_of: Issues) -> None:
    security = 'security = { level = "lls", password = { file = "nowhere.pw" } }'
    issues = issues_of(BASE + HDLC_METER.replace('security = { level = "none" }', security))

    assert "does not exist" in by_key(issues, "meters[0].security.password.file").message


def test_secret_file_with_0600_is_accepted_relative_to_the_config(
    write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    (tmp_path / "lls.pw").write_text("hunter2-Pa55word\n")
    os.chmod(tmp_path / "lls.pw", 0o600)
    security = 'security = { level = "lls", password = { file = "lls.pw" } }'
    config = load_config(write_config(BASE + HDLC_METER.replace('security = { level = "none" }', security)))

    ref = config.meter("lg-1").security.password
    assert ref is not None and ref.target == str(tmp_path / "lls.pw")
    assert ref.resolve().reveal() == b"hunter2-Pa55word"
    assert "hunter2" not in repr(config)


def test_many_errors_are_reported_at_once(issues_of: Issues) -> None:
    text = (
        BASE.replace('port = 4060', 'port = "4060"')
        + HDLC_METER.replace('"e450"', '"e999"').replace("physical_address = 17\n", "")
        + WRAPPER_METER.replace('connection = "dc-1"', 'connection = "dc-9"').replace("max_power_w", "max_power")
        + HDLC_METER.replace('timezone', 'x').replace("max_power_w", 'timezone = "Nowhere/City"\nmax_power_w')
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, file="fleet.toml")
    keys = {issue.key_path for issue in info.value.issues}

    expected = {
        "concentrators[1].port", "meters[0].profile", "meters[0].physical_address", "meters[1].connection",
        "meters[1].max_power", "meters[1].max_power_w", "meters[2].timezone", "meters[2].id",
    }
    assert expected <= keys
    message = str(info.value)
    assert message.startswith(f"{len(info.value.issues)} problems in the fleet config:")
    assert all(str(issue) in message for issue in info.value.issues)
    assert "fleet.toml: concentrators[1].port (id 'dc-1'): expected an integer" in message
    assert "fleet.toml: meters[1].connection (id 'kam-1'): unknown concentrator" in message
    assert "expected an integer, got a string" in by_key(list(info.value.issues), "concentrators[1].port").message
    assert "duplicate meter id 'lg-1' (already used by meters[0])" in by_key(
        list(info.value.issues), "meters[2].id").message


def test_an_hdlc_bus_has_one_session_and_its_errors_do_not_cascade(issues_of: Issues) -> None:
    issues = issues_of(BASE.replace('framing = "hdlc"', 'framing = "hdlc"\nmax_sessions = 2') + HDLC_METER)

    assert "one session at a time" in by_key(issues, "concentrators[0].max_sessions").message
    assert len(issues) == 1  # the meter on that bus is not reported as on an unknown connection


def test_fleet_consistency_checks(issues_of: Issues) -> None:
    text = (
        BASE
        + HDLC_METER
        + HDLC_METER.replace('"lg-1"', '"lg-2"')
        + "\n[limits]\nmeter_deadline_s = 5\n"
        + '\n[[optical_ports]]\nid = "dc-1"\ndevice = "/dev/ttyUSB0"\nbaud = 9601\n'
    )
    issues = issues_of(text)

    assert "'lg-1', 'lg-2' share one physical/logical address on 'bus-1'" in by_key(issues, "meters").message
    assert "every poll there would hit the deadline" in by_key(issues, "limits.meter_deadline_s").message
    assert "duplicate connection id 'dc-1'" in by_key(issues, "optical_ports[0].id").message
    assert "unsupported baud rate 9601" in by_key(issues, "optical_ports[0].baud").message


def test_no_meters_and_bad_toml(issues_of: Issues) -> None:
    assert "no meters" in by_key(issues_of(BASE), "meters").message
    issues = issues_of(BASE + "[[meters]\n")
    assert len(issues) == 1 and issues[0].message.startswith("not valid TOML")


def test_cosmos_store(write_config: Callable[[str], Path]) -> None:
    cosmos = """\
[store]
kind = "cosmos"
endpoint = "https://localhost:8081/"
key = { env = "METER_GATEWAY_COSMOS_KEY" }
outbox_path = "outbox.sqlite3"
outbox_max_mb = 16
"""
    path = write_config(BASE.replace('[store]\nkind = "sqlite"\npath = "events.sqlite3"\n', cosmos) + HDLC_METER)
    store = load_config(path).store

    assert isinstance(store, CosmosStoreConfig)
    assert store.verify_tls is True  # TLS verification is on unless turned off
    assert (store.database, store.container) == ("meter-gateway", "events")
    assert store.outbox_path == path.parent / "outbox.sqlite3" and store.outbox_max_bytes == 16 * 1024 * 1024
    assert store.key.kind == "env" and store.key.target == "METER_GATEWAY_COSMOS_KEY"
    # Each fleet's views beside its events container, never a container shared by every fleet.
    assert (store.views_container, store.views_container_name) == (None, "events-views")

    named = write_config(BASE.replace('[store]\nkind = "sqlite"\npath = "events.sqlite3"\n',
                                      cosmos + 'container = "north"\nviews_container = "views"\n') + HDLC_METER)
    store = load_config(named).store
    assert isinstance(store, CosmosStoreConfig)
    assert (store.container, store.views_container_name) == ("north", "views")


@pytest.mark.parametrize(
    ("line", "key", "message"),
    [
        ('key = "c2VjcmV0LWtleS12YWx1ZQ=="', "store.key", "must not be written in the config file"),
        ('key = { file = "cosmos.key" }', "store.key", "only from an environment variable"),
        ('endpoint = "http://localhost:8081/"', "store.endpoint", "https://"),
        ('outbox_pth = "x"', "store.outbox_pth", "did you mean 'outbox_path'?"),
        ('views_container = "events"', "store.views_container", "must not be the events container"),
    ],
)
def test_cosmos_store_errors(issues_of: Issues, line: str, key: str, message: str) -> None:
    cosmos = {
        "endpoint": 'endpoint = "https://localhost:8081/"',
        "key": 'key = { env = "METER_GATEWAY_COSMOS_KEY" }',
        "outbox_path": 'outbox_path = "outbox.sqlite3"',
    }
    name = line.split(" ")[0]
    cosmos[name] = line
    store = '[store]\nkind = "cosmos"\n' + "\n".join(cosmos.values()) + "\n"
    issues = issues_of(BASE.replace('[store]\nkind = "sqlite"\npath = "events.sqlite3"\n', store) + HDLC_METER)

    assert message in by_key(issues, key).message
    assert all("c2VjcmV0" not in str(i) for i in issues)


def test_overrides_are_checked_at_load_time_every_problem_under_its_key(issues_of: Issues) -> None:
    overrides = """
[meters.overrides]
load_profile_obis = "1.0.99.1.0.255"
registers = 5
quirks = ["bogus", "clock-deviation-inverted"]
clock = "1.0.1.8"
max_list_size = "ten"
model = "e360"
"""
    issues = issues_of(BASE + HDLC_METER + overrides)

    typo = by_key(issues, "meters[0].overrides.load_profile_obis").message
    assert "unknown profile field" in typo and "did you mean 'load_profile'?" in typo
    assert "expected a list, got 5" in by_key(issues, "meters[0].overrides.registers").message
    assert "unknown quirk(s) ['bogus']" in by_key(issues, "meters[0].overrides.quirks").message
    assert "is not an OBIS code" in by_key(issues, "meters[0].overrides.clock").message
    assert "expected an integer in 1..255" in by_key(issues, "meters[0].overrides.max_list_size").message
    assert "chosen by the profile" in by_key(issues, "meters[0].overrides.model").message


def test_valid_overrides_load_and_build_the_profile(write_config: Callable[[str], Path]) -> None:
    from drivers.meters import profile_for

    overrides = '\n[meters.overrides]\nload_profile = "1-0:99.1.0"\nquirks = ["no-general-block-transfer"]\n'
    config = load_config(write_config(BASE + HDLC_METER + overrides))

    meter = config.meter("lg-1")
    profile = profile_for(meter.make, meter.profile, meter.overrides, meter_id=meter.id)
    assert profile.load_profile == "1.0.99.1.0.255" and profile.has_quirk("no-general-block-transfer")
