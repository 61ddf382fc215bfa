"""Tests of the ``gateway`` commands, as an operator runs them. ``run_gateway`` runs one as a real
subprocess of this checkout."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gateway

REPO_ROOT = Path(gateway.__file__).resolve().parent.parent


def run_gateway(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
                stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m gateway ARGS`` with text output captured; never raises on a non-zero exit."""
    # The package may not be installed: run it from this checkout. The caller's own
    # GATEWAY_STORE must not leak in and point the command at a real store.
    environ = {k: v for k, v in os.environ.items() if k != "GATEWAY_STORE"}
    environ.update(PYTHONPATH=str(REPO_ROOT), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        input=stdin, capture_output=True, text=True, env=environ, cwd=cwd, timeout=timeout,
        check=False,
    )
