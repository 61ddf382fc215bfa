"""One `gateway run` per store: a second one is refused at once, naming the first one's pid."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.commands._run_lock import gateway_run_lock, run_lock_path
from gateway.config import load_config

from tests.cli import REPO_ROOT, run_gateway


def _fleet(tmp_path: Path) -> Path:
    """The demo fleet with its store in ``tmp_path``."""
    text = (REPO_ROOT / "config" / "demo-fleet.toml").read_text()
    config = tmp_path / "fleet.toml"
    config.write_text(text.replace('path = "../var/demo-events.db"', f'path = "{tmp_path / "events.db"}"'))
    return config


@pytest.mark.slow
def test_a_second_gateway_on_the_same_store_exits_1_naming_the_holder(tmp_path: Path) -> None:
    config = _fleet(tmp_path)
    store = load_config(config).store
    assert run_lock_path(store) == tmp_path / "events.db.run.lock"
    with gateway_run_lock(store):  # the first gateway
        result = run_gateway("run", "--config", str(config), timeout=30)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "ERROR" in lines[0] and f"pid {os.getpid()}" in lines[0] and "events.db.run.lock" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
