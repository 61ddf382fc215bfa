"""No password or key, in any textual form, reaches any log or output of a full session at DEBUG.

Every stdlib logger is at DEBUG and captured (caplog), stdout/stderr are captured at the file
descriptor level (capfd, which also sees structlog's PrintLogger), and structlog is first put back
to its leaking defaults, as if another component had reconfigured it.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import structlog

from drivers.errors import DriverError
from drivers.logging import secret_forms
from drivers.security import HlsGmacSecurity, LowLevelSecurity
from drivers.session import DlmsSession, FileInvocationCounterStore
from drivers.transport.wrapper import WrapperTransport

try:
    from .test_session_peer import ENERGY, PROFILE, FakeMeter, serve_wrapper
except ImportError:
    from test_session_peer import ENERGY, PROFILE, FakeMeter, serve_wrapper

pytestmark = pytest.mark.anyio

PASSWORD = b"S3cretLLSpass"
AUTH_KEY = bytes.fromhex("a1b2c3d4e5f60718293a4b5c6d7e8f90")
ENC_KEY = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
WRONG_ENC_KEY = bytes.fromhex("99887766554433221100ffeeddccbbaa")


async def run_sessions(port_lls: int, port_hls: int, tmp_path: Path) -> list[str]:
    errors: list[str] = []
    store = FileInvocationCounterStore(tmp_path)
    cases = [
        (port_lls, LowLevelSecurity(PASSWORD)),
        (port_lls, LowLevelSecurity(PASSWORD + b"x")),  # wrong password: rejected
        (port_hls, HlsGmacSecurity(authentication_key=AUTH_KEY, encryption_key=ENC_KEY)),
        (port_hls, HlsGmacSecurity(authentication_key=AUTH_KEY, encryption_key=WRONG_ENC_KEY)),
    ]
    for port, security in cases:
        transport = WrapperTransport("meter-secret-test", "127.0.0.1", port)
        try:
            async with DlmsSession(transport, security=security, invocation_counters=store, timeout_s=1) as session:
                await session.get(ENERGY)
                await session.get(PROFILE)
        except DriverError as error:
            errors.append(str(error) + repr(error))
        logging.getLogger("drivers").debug("session settings %r", security)
    return errors


async def test_full_lls_and_hls_sessions_at_debug_leak_no_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    structlog.reset_defaults()  # structlog's defaults print every frame and the LLS password
    caplog.set_level(logging.DEBUG)
    logging.getLogger().setLevel(logging.DEBUG)
    lls = FakeMeter(level="lls", password=PASSWORD, block_size=64)
    hls = FakeMeter(level="hls", authentication_key=AUTH_KEY, encryption_key=ENC_KEY, block_size=64)
    async with serve_wrapper(lls) as port_lls, serve_wrapper(hls) as port_hls:
        errors = await run_sessions(port_lls, port_hls, tmp_path)
    out, err = capfd.readouterr()
    logged = caplog.text + "\n".join(record.getMessage() for record in caplog.records)
    everything = "\n".join([out, err, logged, *errors, *(p.read_text() for p in tmp_path.glob("*.json"))])

    assert len(errors) == 2, errors  # the wrong password and the wrong key were refused, typed
    assert hls.requests_seen > 6 and lls.requests_seen > 6  # real sessions ran, with block transfer
    assert "session settings" in logged  # the capture works: our own DEBUG lines are in it
    for secret in (PASSWORD, PASSWORD + b"x", AUTH_KEY, ENC_KEY, WRONG_ENC_KEY):
        for form in secret_forms(secret):
            assert form not in everything, f"a secret leaked in the form {form[:3]}..."


def test_secret_forms_cover_hex_cases_and_reprs() -> None:
    forms = secret_forms(AUTH_KEY)
    assert AUTH_KEY.hex() in forms and AUTH_KEY.hex().upper() in forms and repr(AUTH_KEY) in forms
    assert "S3cretLLSpass" in secret_forms(PASSWORD)
