"""Nothing of dlms-cosem reaches stdout or stderr except through our logging (issue 10, item 4).

dlms-cosem 25.1.0 calls ``print()`` on meter bytes (a malformed InitiateResponse prints its
conformance bytes as ``bytearray(...)``), which corrupts ``gateway decode --json`` and bypasses the
log format of ``gateway poll``/``run``. Every such call found in the installed package must be
shadowed by our library boundary; the recorded AARE made malformed goes through the real session.
"""
from __future__ import annotations

import ast
import builtins
import dataclasses
import importlib
import logging
from pathlib import Path

import dlms_cosem
import pytest

from drivers.errors import DriverError
from drivers.logging import silence_dlms_cosem_logging
from drivers.meters import get_profile
from drivers.recording import ReplayTransport, load_recording
from tests.decode import SESSIONS, recorded_aare_with_malformed_initiate_response
from tests.fixtures_tools.record_sessions import session_for

pytestmark = pytest.mark.anyio


def modules_calling_print() -> set[str]:
    """Every dlms_cosem module whose source calls the name ``print``."""
    root = Path(dlms_cosem.__file__).parent
    found = set()
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
               for node in ast.walk(tree)):
            parts = path.relative_to(root.parent).with_suffix("").parts
            found.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def test_every_print_call_in_the_installed_dlms_cosem_is_silenced(capfd: pytest.CaptureFixture[str]) -> None:
    printing = modules_calling_print()
    assert "dlms_cosem.protocol.xdlms.initiate_response" in printing  # the scan sees the known one
    silence_dlms_cosem_logging()
    for name in sorted(printing):
        module = importlib.import_module(name)
        assert getattr(module, "print", builtins.print) is not builtins.print, f"{name} still prints"
        module.print(bytearray(b"\x31\x32\x33\x34\x35\x36\x37\x38"))
    assert capfd.readouterr() == ("", "")


async def test_session_given_a_malformed_initiate_response_prints_nothing(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    recording = load_recording(SESSIONS / "kamstrup_omnipower_none.json")
    first = next(i for i, event in enumerate(recording.events) if event.kind == "receive")
    events = list(recording.events)
    events[first] = dataclasses.replace(events[first], apdu=recorded_aare_with_malformed_initiate_response())
    recording = dataclasses.replace(recording, events=tuple(events))
    header = recording.header
    profile = get_profile(header.plan["make"], header.plan["model"])
    caplog.set_level(logging.DEBUG)

    with pytest.raises(DriverError):
        async with session_for(ReplayTransport(recording), header.security, header.secrets, dict(header.session),
                               profile):
            pass

    assert capfd.readouterr() == ("", "")
    # What dlms-cosem printed is noted through our logging, without the meter's bytes.
    noted = [r for r in caplog.records if r.name == "drivers.dlms_cosem" and r.levelno == logging.DEBUG]
    assert noted and all("\\x1f" not in r.getMessage() and "5E1F" not in r.getMessage().upper() for r in noted)
