"""The local Cosmos DB-compatible test server as a pytest session fixture.

``cosmos_server`` starts ``node tests/cosmos_server/server.js`` (``@vercel/cosmosdb-server`` plus the
change-feed extension, HTTPS with a self-signed certificate) on a free loopback port, waits for its
ready line and stops it by PID at the end of the session. A test that needs it fails loudly when it
cannot start (``npm ci`` not run, node missing, port trouble), it is never skipped.

Import ``cosmos_server`` (and ``cosmos_config`` for a fresh container per test) into a conftest:
several conftests importing it share one server process.
"""
from __future__ import annotations

import os
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from gateway.store.cosmos_client import CosmosConfig

SERVER_DIR = Path(__file__).resolve().parent / "cosmos_server"
KEY_ENV = "GATEWAY_TEST_COSMOS_KEY"
# The public, documented key of the Azure Cosmos DB emulator; the test server does not check it.
EMULATOR_KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
READY_PREFIX = "cosmosdb-server ready "
START_TIMEOUT_S = 20.0


class CosmosServerError(RuntimeError):
    """The test server could not be started."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class CosmosServer:
    """One running server process."""

    endpoint: str
    port: int
    process: subprocess.Popen[str]

    @property
    def pid(self) -> int:
        return self.process.pid

    def config(self, container: str | None = None, database: str = "gateway-tests",
               **overrides: object) -> CosmosConfig:
        os.environ.setdefault(KEY_ENV, EMULATOR_KEY)
        return CosmosConfig(
            endpoint=self.endpoint,
            database=database,
            container=container or f"events-{uuid.uuid4().hex[:12]}",
            key_env=KEY_ENV,
            verify_tls=False,  # self-signed certificate of the local test server only
            **overrides,  # type: ignore[arg-type]
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def start_cosmos_server(port: int | None = None) -> CosmosServer:
    """Start a server (on `port`, or a free one) and wait until it accepts connections."""
    node = shutil.which("node")
    if node is None:
        raise CosmosServerError("node is not installed; the Cosmos test server needs Node.js >= 18")
    if not (SERVER_DIR / "node_modules" / "@vercel" / "cosmosdb-server").is_dir():
        raise CosmosServerError(
            f"the Cosmos test server is not installed: run `cd {SERVER_DIR} && npm ci`")
    port = free_port() if port is None else port
    # stderr goes to a file, never to an unread pipe: the stock server prints a stack trace per 500
    # answer, and a full pipe would block it (and every test with it).
    stderr_log = tempfile.TemporaryFile(mode="w+t", prefix="cosmosdb-server-", suffix=".log")
    process = subprocess.Popen(
        [node, "server.js", "--port", str(port)],
        cwd=SERVER_DIR, stdout=subprocess.PIPE, stderr=stderr_log, text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(timeout=remaining):
                process.kill()
                process.wait()
                raise CosmosServerError(f"the Cosmos test server gave no ready line within "
                                        f"{START_TIMEOUT_S:.0f} s")
            line = process.stdout.readline()
            if line.startswith(READY_PREFIX):
                return CosmosServer(line[len(READY_PREFIX):].strip(), port, process)
            if not line:  # exited
                process.wait()
                stderr_log.seek(0)
                stderr = stderr_log.read()
                raise CosmosServerError(
                    f"the Cosmos test server exited with {process.returncode}: {stderr.strip()}")


_shared: CosmosServer | None = None
_users = 0


@pytest.fixture(scope="session")
def cosmos_server() -> Iterator[CosmosServer]:
    """The session's Cosmos test server (fails the test if it cannot start)."""
    global _shared, _users
    if _shared is None:
        try:
            _shared = start_cosmos_server()
        except CosmosServerError as exc:
            pytest.fail(str(exc), pytrace=False)
    _users += 1
    try:
        yield _shared
    finally:
        _users -= 1
        if _users == 0 and _shared is not None:
            _shared.stop()
            _shared = None


@pytest.fixture
def cosmos_config(cosmos_server: CosmosServer) -> CosmosConfig:
    """A configuration pointing at a fresh, not yet created container of the session server."""
    return cosmos_server.config()
