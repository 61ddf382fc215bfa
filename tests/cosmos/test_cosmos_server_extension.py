"""Runs the change-feed extension's own tests (tests/cosmos_server/test, node's built-in runner), so
the README's pytest command covers the JavaScript that the Cosmos tests rely on."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.cosmos_fixture import SERVER_DIR


def test_change_feed_extension_node_tests_pass() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed; the Cosmos test server needs Node.js >= 18")
    result = subprocess.run(
        [node, "--test", "test/"], cwd=SERVER_DIR, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout and "# pass 0" not in result.stdout
