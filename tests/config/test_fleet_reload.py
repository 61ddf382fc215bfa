"""What a SIGHUP reload accepts and refuses (gateway.polling.fleet_reload); `gateway run` doing it is in
tests/pipeline/test_reload.py."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pytest

from gateway.config import load_config
from gateway.polling.fleet_reload import ReloadRefused, carried_backoff, describe_changes, load_for_reload
from gateway.domain.poll_result import StepError
from gateway.domain.poll_result import PollSummary
from gateway.polling.scheduler import MeterBackoff

from .conftest import BASE

FLEET = BASE  # a wrapper concentrator dc-1 (and a bus the meters below do not use)


def meter(meter_id: str, wport: int, max_power_w: int = 55200) -> str:
    return f"""
[[meters]]
id = "{meter_id}"
make = "kamstrup"
profile = "omnipower"
connection = "dc-1"
wport = {wport}
security = {{ level = "none" }}
max_power_w = {max_power_w}
"""


def test_meters_added_removed_and_changed_are_named(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(FLEET + meter("kam-1", 1) + meter("kam-2", 2))
    running = load_config(path)
    path.write_text(FLEET + meter("kam-1", 1, max_power_w=69000) + meter("kam-3", 3))
    new = load_for_reload(path, running)
    assert [m.id for m in new.meters] == ["kam-1", "kam-3"]
    assert describe_changes(running, new) == "2 meters; added: kam-3; removed: kam-2; changed: kam-1"


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda text: text.replace('"gw-test"', '"gw-other"'), "gateway_id changed: that needs a restart"),
        (lambda text: text.replace('"events.sqlite3"', '"other.sqlite3"'), "store changed: that needs a restart"),
        (lambda text: text.replace("wport = 1", "wport = -1"), "the config is not valid: "),
    ],
    ids=["gateway-id", "store", "invalid"],
)
def test_a_config_that_cannot_replace_the_running_one_is_refused(
    tmp_path: Path, edit: Callable[[str], str], reason: str
) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(FLEET + meter("kam-1", 1))
    running = load_config(path)
    path.write_text(edit(path.read_text()))
    with pytest.raises(ReloadRefused, match=reason):
        load_for_reload(path, running)


def test_dead_meters_keep_their_backoff_unless_the_reload_may_be_their_fix(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(FLEET + meter("kam-1", 1) + meter("kam-2", 2) + meter("kam-3", 3))
    running = load_config(path)
    backoff = MeterBackoff()
    now = datetime(2026, 11, 26, tzinfo=timezone.utc)
    timeout = (StepError("identity", "MeterTimeout", "no answer"),)
    for _ in range(5):
        for meter_id in ("kam-1", "kam-2"):
            backoff.record(PollSummary(meter_id, now, frozenset({"identity"}), timeout, retryable=True))
    secret = (StepError("identity", "SecretUnavailable", "secret env X: not set"),)
    backoff.record(PollSummary("kam-3", now, frozenset({"identity"}), secret, retryable=False))
    assert [backoff.period(m) > 1 for m in ("kam-1", "kam-2", "kam-3")] == [True, True, True]

    path.write_text(FLEET + meter("kam-1", 1) + meter("kam-2", 2, max_power_w=69000) + meter("kam-3", 3))
    carried = carried_backoff(backoff, running, load_for_reload(path, running))
    # kam-1 is unchanged and still dead; kam-2's config changed; kam-3 failed on a secret.
    assert [carried.period(m) for m in ("kam-1", "kam-2", "kam-3")] == [backoff.period("kam-1"), 1, 1]
    assert carried.period("kam-1") > 1
