"""``[clock_sync]`` in the fleet config (issue 14, item 2): off by default, fleet defaults with
per-meter overrides, and every mistake named by its key, as check-config shows them."""
from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, ConfigIssue, load_config
from gateway.config.clock_sync import DEFAULT_CLOCK_SYNC, ClockSyncConfig
from tests.config.conftest import BASE, HDLC_METER, WRAPPER_METER


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    return load_config(path)


def issues(tmp_path: Path, text: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    found: list[ConfigIssue] = list(info.value.issues)
    return {issue.key_path: issue.message for issue in found}


def test_clock_sync_is_off_by_default(tmp_path: Path) -> None:
    config = load(tmp_path, BASE + HDLC_METER)
    assert config.clock_sync == DEFAULT_CLOCK_SYNC and not config.clock_sync.enabled
    assert config.meters[0].clock_sync == DEFAULT_CLOCK_SYNC


def test_fleet_defaults_and_a_meter_override(tmp_path: Path) -> None:
    fleet = "\n[clock_sync]\nenabled = true\nthreshold_s = 5\nmax_step_s = 120\nsafe_window_s = 30\n"
    meter = WRAPPER_METER.replace("max_power_w = 55200", 'max_power_w = 55200\nclock_sync = { method = "shift_time", '
                                  "enabled = false }")
    config = load(tmp_path, BASE + fleet + HDLC_METER + meter)
    want = ClockSyncConfig(enabled=True, threshold_s=5, max_step_s=120, safe_window_s=30)
    assert config.clock_sync == want
    assert config.meter("lg-1").clock_sync == want
    assert config.meter("kam-1").clock_sync == ClockSyncConfig(False, 5, 120, 30, 900, "shift_time")


def test_every_mistake_is_named_by_key(tmp_path: Path) -> None:
    fleet = '\n[clock_sync]\nenabled = "yes"\nthreshold_s = -1\nmethod = "adjust_to_quarter"\nmax_stepp_s = 5\n'
    found = issues(tmp_path, BASE + fleet + HDLC_METER)
    assert "expected true or false" in found["clock_sync.enabled"]
    assert "must be greater than 0" in found["clock_sync.threshold_s"]
    assert "unknown value 'adjust_to_quarter'" in found["clock_sync.method"]
    assert "did you mean 'max_step_s'?" in found["clock_sync.max_stepp_s"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("threshold_s = 60\nmax_step_s = 30", "must be greater than threshold_s"),
        ("max_step_s = 800\nsafe_window_s = 60", "must stay below period_s (900)"),
        ('method = "shift_time"\nmax_step_s = 1000\nperiod_s = 3600', "moves at most 900 s"),
    ],
)
def test_inconsistent_limits_are_refused(tmp_path: Path, table: str, message: str) -> None:
    found = issues(tmp_path, BASE + f"\n[clock_sync]\nenabled = true\n{table}\n" + HDLC_METER)
    assert message in found["clock_sync.max_step_s"]


def test_a_meter_override_is_checked_against_the_merged_values(tmp_path: Path) -> None:
    fleet = "\n[clock_sync]\nenabled = true\nmax_step_s = 300\n"
    meter = HDLC_METER.replace("max_power_w = 69000", "max_power_w = 69000\nclock_sync = { threshold_s = 400 }")
    found = issues(tmp_path, BASE + fleet + meter)
    assert "must be greater than threshold_s (400)" in found["meters[0].clock_sync.max_step_s"]
