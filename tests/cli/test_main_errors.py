"""gateway.cli.main: what a user sees when a command fails in a way it did not expect."""
from __future__ import annotations

import argparse

import pytest

from gateway import cli


def _fake_command(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    def func(args: argparse.Namespace) -> int:
        raise error

    class Parser(argparse.ArgumentParser):
        def parse_args(self, argv=None, namespace=None):  # type: ignore[no-untyped-def,override]
            args = cli.build_parser.__wrapped__().parse_args(argv)  # type: ignore[attr-defined]
            args.func = func
            return args

    real = cli.build_parser

    def build_parser() -> argparse.ArgumentParser:
        return Parser()

    build_parser.__wrapped__ = real  # type: ignore[attr-defined]
    monkeypatch.setattr(cli, "build_parser", build_parser)


def test_a_bug_is_one_line_exit_70_without_its_message(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("GATEWAY_DEBUG", raising=False)
    _fake_command(monkeypatch, ZeroDivisionError("secret-ish detail"))
    assert cli.main(["streams", "list"]) == cli.EX_SOFTWARE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ZeroDivisionError" in err and "--debug" in err
    assert "secret-ish" not in err and "Traceback" not in err


def test_debug_lets_the_traceback_through(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_command(monkeypatch, ZeroDivisionError("boom"))
    with pytest.raises(ZeroDivisionError):
        cli.main(["--debug", "streams", "list"])
    monkeypatch.setenv("GATEWAY_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        cli.main(["streams", "list"])


def test_ctrl_c_even_inside_a_task_group_is_one_line_and_130(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    _fake_command(monkeypatch, BaseExceptionGroup("tasks", [KeyboardInterrupt()]))
    assert cli.main(["streams", "list"]) == 130
    assert capsys.readouterr().err == "interrupted\n"
