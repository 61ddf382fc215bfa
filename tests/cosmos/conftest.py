"""Fixtures of the Cosmos DB backend tests: a TLS-terminating HTTP proxy that can lose the answer
to a write or answer 429 in its place. (The session's test server and a fresh store per test,
``cosmos_server`` and ``cosmos_store``, come from tests/conftest.py.)

The proxy is a real TCP/TLS hop between the SDK and the server (no mock): it forwards requests
unchanged, and when told to, it lets a document create reach the server but closes the client's
connection instead of relaying the answer (a response lost in the network), or answers a document
create with 429 Too Many Requests itself.
"""
from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import AsyncIterator

import anyio
import pytest
from anyio.abc import ByteStream, SocketAttribute
from anyio.streams.tls import TLSListener

from tests.cosmos_fixture import SERVER_DIR, CosmosServer

CERT_DIR = SERVER_DIR / "node_modules" / "@vercel" / "cosmosdb-server"


def _is_document_create(head: bytes) -> bool:
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {k.strip().lower(): v.strip().lower()
               for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    return (method == "POST" and path.rstrip("/").endswith("/docs")
            and headers.get("x-ms-documentdb-isquery") != "true"
            and headers.get("x-ms-documentdb-is-upsert") != "true"
            and headers.get("x-ms-cosmos-is-batch-request") != "true")


def _content_length(head: bytes) -> int:
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            return int(value.strip())
    return 0


_THROTTLED_BODY = b'{"code":"TooManyRequests","message":"Request rate is large"}'
THROTTLED = (
    b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n"
    b"x-ms-retry-after-ms: 20\r\nx-ms-request-charge: 0\r\nconnection: keep-alive\r\n"
    b"content-length: " + str(len(_THROTTLED_BODY)).encode() + b"\r\n\r\n" + _THROTTLED_BODY
)


@dataclass
class FaultyProxy:
    """Knobs of the proxy, set by a test before the request they should hit."""

    upstream_port: int
    port: int = 0
    lose_next_create_answers: int = 0  # creates that reach the server but whose answer is lost
    throttle_next_creates: int = 0  # creates answered 429 by the proxy, not forwarded
    creates_seen: int = 0
    answers_lost: int = 0
    throttled: int = 0
    _contexts: tuple[ssl.SSLContext, ssl.SSLContext] | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def contexts(self) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        if self._contexts is None:
            server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_side.load_cert_chain(CERT_DIR / "cert.pem", CERT_DIR / "key.pem")
            client_side = ssl.create_default_context()
            client_side.check_hostname = False
            client_side.verify_mode = ssl.CERT_NONE  # the test server's self-signed certificate
            self._contexts = (server_side, client_side)
        return self._contexts

    async def handle(self, client: ByteStream) -> None:
        _, client_side = self.contexts()
        async with client, await anyio.connect_tcp(
            "127.0.0.1", self.upstream_port, ssl_context=client_side,
            tls_standard_compatible=False,
        ) as upstream:
            cut = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._requests, client, upstream, cut)
                tg.start_soon(self._answers, upstream, client, cut)
                await cut.wait()
                tg.cancel_scope.cancel()

    async def _requests(self, client: ByteStream, upstream: ByteStream, cut: anyio.Event) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    buffer += await client.receive()
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = _content_length(head)
                while len(rest) < length:
                    rest += await client.receive()
                body, buffer = rest[:length], rest[length:]
                if _is_document_create(head):
                    self.creates_seen += 1
                    if self.throttle_next_creates > 0:
                        self.throttle_next_creates -= 1
                        self.throttled += 1
                        await client.send(THROTTLED)
                        continue
                    if self.lose_next_create_answers > 0:
                        self.lose_next_create_answers -= 1
                        self._losing = True
                await upstream.send(head + b"\r\n\r\n" + body)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError,
                ssl.SSLError, OSError):
            cut.set()

    _losing: bool = False

    async def _answers(self, upstream: ByteStream, client: ByteStream, cut: anyio.Event) -> None:
        try:
            while True:
                data = await upstream.receive()
                if self._losing:
                    # The server has applied the write and answered: drop the answer and the
                    # connection, as a network failure would.
                    self._losing = False
                    self.answers_lost += 1
                    break
                await client.send(data)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError,
                ssl.SSLError, OSError):
            pass
        cut.set()


@pytest.fixture
async def faulty_proxy(cosmos_server: CosmosServer, anyio_backend: str
                       ) -> AsyncIterator[FaultyProxy]:
    proxy = FaultyProxy(upstream_port=cosmos_server.port)
    server_side, _ = proxy.contexts()
    listener = TLSListener(await anyio.create_tcp_listener(local_host="127.0.0.1"), server_side,
                           standard_compatible=False)
    proxy.port = listener.listener.extra(SocketAttribute.local_port)
    async with listener:
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, proxy.handle)
            try:
                yield proxy
            finally:
                tg.cancel_scope.cancel()
