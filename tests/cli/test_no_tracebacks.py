"""No traceback reaches a user from any `gateway` command: every sub-command of the parser (so a new
one is covered without editing this file) runs as a subprocess with bad inputs: a missing file, a
garbage file, a directory where a file is expected, and a bad option value."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gateway.cli import build_parser

from tests.cli import REPO_ROOT


def _leaves(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _leaves(sub, (*prefix, name))
    return found or [(prefix, parser)]


def _args(parser: argparse.ArgumentParser, bad: str) -> list[str]:
    """The command line with ``bad`` for every path option and every required argument."""
    args: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.nargs == 0:
            continue
        takes_path = action.type is Path or (action.dest in ("config", "db", "to", "out", "file"))
        if not (action.required or takes_path or not action.option_strings):
            continue
        value = bad if (takes_path or action.choices is None) else next(iter(action.choices))
        if action.option_strings:
            args += [action.option_strings[-1], value]
        elif action.nargs not in ("?", "*"):
            args.append(value)
    if not args:  # nothing takes a file: a bad value for every option (no benchmark or server starts)
        for action in parser._actions:
            if action.option_strings and action.nargs != 0 and not isinstance(action, argparse._HelpAction):
                args += [action.option_strings[-1], bad]
    return args


COMMANDS = _leaves(build_parser())


def _run(argv: list[str], cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("GATEWAY_STORE", "GATEWAY_DEBUG")}
    env.update(PYTHONPATH=str(REPO_ROOT), GATEWAY_COSMOS_KEY="not base64!")
    try:
        done = subprocess.run([sys.executable, "-m", "gateway", *argv], capture_output=True, text=True,
                              env=env, cwd=cwd, timeout=30, stdin=subprocess.DEVNULL)
        return done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:  # a server that started anyway: its output so far
        return f"{exc.stdout or ''}{exc.stderr or ''}"


@pytest.mark.slow
def test_no_command_shows_a_traceback_for_bad_inputs(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.toml"
    garbage.write_bytes(b"\x00\xff[[[ not toml nor sqlite = \n" * 300)
    directory = tmp_path / "adir"
    directory.mkdir()
    bad_inputs = {"missing file": str(tmp_path / "missing" / "x.db"), "garbage file": str(garbage),
                  "directory": str(directory)}
    runs = [(f"{' '.join(cmd)} with a {what}", [*cmd, *_args(parser, value)])
            for cmd, parser in COMMANDS for what, value in bad_inputs.items()]
    runs += [(f"{' '.join(cmd)} with a bad option", [*cmd, "--no-such-option", "x"]) for cmd, _ in COMMANDS]
    assert len(COMMANDS) >= 15
    with ThreadPoolExecutor(max_workers=4) as pool:
        outputs = list(pool.map(lambda run: _run(run[1], tmp_path), runs))
    shown = [f"{name}: {argv}\n{output}" for (name, argv), output in zip(runs, outputs) if "Traceback" in output]
    assert not shown, "\n\n".join(shown)
