"""The projection runner lock: one holder at a time, released however its holder ends."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import gateway
from gateway.projections.runner_lock import ProjectionRunnerBusy, projection_runner

REPO_ROOT = Path(gateway.__file__).resolve().parent.parent


def test_a_second_holder_is_refused_until_the_first_leaves(tmp_path: Path) -> None:
    lock = tmp_path / "views.lock"
    with projection_runner(lock):
        assert lock.read_text() == f"{os.getpid()}\n"
        with pytest.raises(ProjectionRunnerBusy, match=f"pid {os.getpid()}"):
            with projection_runner(lock):
                pass
    with projection_runner(lock):
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    lock = tmp_path / "views.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from gateway.projections.runner_lock import projection_runner
            with projection_runner(Path({str(lock)!r})):
                print("held", flush=True)
                time.sleep(600)
        """)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(ProjectionRunnerBusy, match=f"pid {holder.pid}"):
            with projection_runner(lock):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with projection_runner(lock):  # the kernel released it with the process
        pass
