"""`gateway check-config FILE` as an operator runs it: a real subprocess, exit codes and output."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.config.conftest import BASE, HDLC_METER, REPO, WRAPPER_METER


def _check_config(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_DEMO_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", *args],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=60,
    )


@pytest.mark.slow
def test_demo_config_is_ok() -> None:
    result = _check_config("config/demo-fleet.toml")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        "OK: config/demo-fleet.toml: gateway demo-gateway: 8 meters, 5 concentrators, 0 optical ports, store sqlite"
    )
    # The demo's secrets come from the environment at run time; check-config only notes they are unset.
    assert "note: environment variable GATEWAY_DEMO_HLS_AK is not set here" in result.stdout
    assert result.stderr == ""


@pytest.mark.slow
def test_every_problem_is_listed_with_exit_1_and_no_traceback(tmp_path: Path) -> None:
    secret = "0F0E0D0C0B0A09080706050403020100"
    text = (
        BASE
        + HDLC_METER.replace("physical_address = 17", "physical_adress = 17")
        + WRAPPER_METER.replace('security = { level = "none" }',
                                f'security = {{ level = "hls_gmac", authentication_key = "{secret}" }}')
    )
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    result = _check_config(str(path))

    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == f"{len(lines) - 1} problems in the fleet config:"
    assert f"  - {path}: meters[0].physical_adress (id 'lg-1'): unknown key; did you mean 'physical_address'?" in lines
    starts = [f"  - {path}: meters[1].security.authentication_key (id 'kam-1'): a secret must not be written",
              f"  - {path}: meters[1].security.encryption_key (id 'kam-1'): missing required secret reference"]
    assert all(any(line.startswith(start) for line in lines) for start in starts)
    assert secret not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_unreadable_file_exits_1() -> None:
    result = _check_config("config/no-such-fleet.toml")

    assert result.returncode == 1
    assert "config/no-such-fleet.toml: cannot read the file" in result.stderr
    assert "Traceback" not in result.stderr
