"""Helpers for the fleet config tests: a small valid fleet to break one key at a time."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from gateway.config import ConfigError, ConfigIssue, load_config

REPO = Path(__file__).resolve().parents[2]

BASE = """\
gateway_id = "gw-test"
default_timezone = "Europe/Copenhagen"

[store]
kind = "sqlite"
path = "events.sqlite3"

[[concentrators]]
id = "bus-1"
host = "127.0.0.1"
port = 4059
framing = "hdlc"

[[concentrators]]
id = "dc-1"
host = "127.0.0.1"
port = 4060
framing = "wrapper"
"""

HDLC_METER = """
[[meters]]
id = "lg-1"
make = "landis_gyr"
profile = "e450"
connection = "bus-1"
physical_address = 17
security = { level = "none" }
max_power_w = 69000
"""

WRAPPER_METER = """
[[meters]]
id = "kam-1"
make = "kamstrup"
profile = "omnipower"
connection = "dc-1"
wport = 1
security = { level = "none" }
max_power_w = 55200
"""


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    def write(text: str, name: str = "fleet.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def issues_of(write_config: Callable[[str], Path]) -> Callable[[str], list[ConfigIssue]]:
    """Write the text, load it, and return the issues of the ConfigError it must raise."""

    def issues(text: str) -> list[ConfigIssue]:
        path = write_config(text)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert all(issue.file == str(path) for issue in info.value.issues)
        return list(info.value.issues)

    return issues


def by_key(issues: list[ConfigIssue], key_path: str) -> ConfigIssue:
    matches = [issue for issue in issues if issue.key_path == key_path]
    assert matches, f"no issue at {key_path!r}; got: {[str(i) for i in issues]}"
    return matches[0]
