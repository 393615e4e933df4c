"""The webhook client against real servers on 127.0.0.1: keep-alive, stale connections,
headers it cannot send, happy eyeballs, TLS.

No broker is involved. The hostile-receiver cases are in test_delivery_limits.py and, one
response per row, test_http_conformance.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.delivery.http_client import WebhookClient
from shared.model.errors import UnsendableRequest
from shared.model.routing import classify_exception
from tests.support.loopback import read_http_request
from tests.support.resolvers import StaticResolver

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


@dataclass
class KeepAliveServer:
    """Answers every request on a connection with 200, or closes after each answer."""

    close_after_answer: bool = False
    connections: int = 0
    requests: int = 0
    port: int = 0
    _server: asyncio.Server | None = None

    async def start(self, tls: ssl.SSLContext | None = None) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def url(self, scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}/hook"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                await read_http_request(reader)
                self.requests += 1
                writer.write(OK)
                await writer.drain()
                if self.close_after_answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()


@pytest.fixture(name="server")
async def fixture_server() -> AsyncIterator[KeepAliveServer]:
    server = KeepAliveServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(name="client")
async def fixture_client() -> AsyncIterator[WebhookClient]:
    client = WebhookClient(LOOPBACK, timeout_s=2.0)
    yield client
    await client.close()


async def test_sequential_requests_share_one_kept_alive_connection(
    server: KeepAliveServer, client: WebhookClient
) -> None:
    for _ in range(20):
        response = await client.post(server.url(), {"content-type": "text/plain"}, b"hi")
        assert (response.status, response.body) == (200, b"ok")

    assert (server.connections, server.requests) == (1, 20)


async def test_concurrent_requests_open_one_connection_each_and_reuse_them(
    server: KeepAliveServer, client: WebhookClient
) -> None:
    async def burst() -> None:
        await asyncio.gather(*(client.post(server.url(), {}, b"x") for _ in range(5)))

    await burst()
    await burst()

    assert (server.connections, server.requests) == (5, 10)


async def test_connection_the_receiver_closed_while_idle_is_replaced_transparently(
    client: WebhookClient,
) -> None:
    server = KeepAliveServer(close_after_answer=True)
    await server.start()
    try:
        first = await client.post(server.url(), {}, b"1")
        await asyncio.sleep(0.05)  # the receiver's close reaches the pooled connection
        second = await client.post(server.url(), {}, b"2")
    finally:
        await server.stop()

    assert (first.status, second.status) == (200, 200)
    assert (server.connections, server.requests) == (2, 2)


async def test_header_value_with_a_line_break_is_refused_before_sending(
    server: KeepAliveServer, client: WebhookClient
) -> None:
    with pytest.raises(UnsendableRequest) as refused:
        await client.post(server.url(), {"x-injected": "a\r\nx-evil: 1"}, b"x")

    assert classify_exception(refused.value) == "error"
    assert server.connections == 0


@pytest.mark.parametrize(
    "headers",
    [{"x-name": "Zoë 短"}, {"x-emoji": "\N{ROCKET}"}, {"x-ünïcode-名": "v"}],
    ids=["cjk-value", "emoji-value", "non-latin-1-name"],
)
async def test_header_outside_latin_1_is_refused_before_sending(
    server: KeepAliveServer, client: WebhookClient, headers: dict[str, str]
) -> None:
    with pytest.raises(UnsendableRequest, match="Latin-1") as refused:
        await client.post(server.url(), headers, b"x")

    assert classify_exception(refused.value) == "error"
    assert server.connections == 0


async def test_header_value_with_nul_is_refused_before_sending(
    server: KeepAliveServer, client: WebhookClient
) -> None:
    with pytest.raises(UnsendableRequest, match="x-nul"):
        await client.post(server.url(), {"x-nul": "a\x00b"}, b"x")

    assert server.connections == 0


async def test_latin_1_header_value_is_sent_as_latin_1(client: WebhookClient) -> None:
    heads: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await read_http_request(reader))
        writer.write(OK)
        await writer.drain()
        writer.close()

    recorder = await asyncio.start_server(record, "127.0.0.1", 0)
    port = recorder.sockets[0].getsockname()[1]
    try:
        await client.post(f"http://127.0.0.1:{port}/hook", {"x-name": "Zoë"}, b"x")
    finally:
        recorder.close()
        await recorder.wait_closed()

    assert b"\r\nx-name: Zo\xeb\r\n" in heads[0]


# --- happy eyeballs --------------------------------------------------------------------------


@pytest.fixture(name="blackhole")
def fixture_blackhole(server: KeepAliveServer) -> Iterator[str]:
    """127.0.0.2 on the server's port, with its accept queue full: a connect there hangs."""
    address = "127.0.0.2"
    listener = socket.socket()
    listener.bind((address, server.port))
    listener.listen(0)
    fillers = [socket.socket() for _ in range(2)]
    for filler in fillers:
        filler.setblocking(False)
        filler.connect_ex((address, server.port))
    yield address
    for sock in (*fillers, listener):
        sock.close()


async def test_address_that_never_answers_is_raced_past_by_the_next_one(
    server: KeepAliveServer, blackhole: str
) -> None:
    """One at a time, the first address would take the whole timeout and fail the delivery."""
    resolver = StaticResolver(blackhole, "127.0.0.1")
    client = WebhookClient(LOOPBACK, timeout_s=5.0, resolver=resolver)
    try:
        response = await client.post(server.url(host="hooks.example"), {}, b"x")
    finally:
        await client.close()

    assert response.status == 200
    assert (server.connections, server.requests) == (1, 1)


# --- TLS -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


@pytest.fixture(name="certificate", scope="module")
def fixture_certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for localhost and 127.0.0.1, made by the openssl CLI."""
    folder = tmp_path_factory.mktemp("tls")
    made = Certificate(folder / "cert.pem", folder / "key.pem")
    command = (
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1"
        " -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1"
        f" -keyout {made.key} -out {made.cert}"
    )
    subprocess.run(command.split(), check=True, capture_output=True)
    return made


@pytest.fixture(name="tls_server")
async def fixture_tls_server(certificate: Certificate) -> AsyncIterator[KeepAliveServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate.cert, certificate.key)
    server = KeepAliveServer()
    await server.start(tls=context)
    yield server
    await server.stop()


async def test_https_delivery_verifies_the_receiver_certificate_and_keeps_alive(
    tls_server: KeepAliveServer, certificate: Certificate
) -> None:
    trusting = ssl.create_default_context(cafile=certificate.cert)
    client = WebhookClient(LOOPBACK, timeout_s=2.0, ssl_context=trusting)
    try:
        responses = [await client.post(tls_server.url("https"), {}, b"x") for _ in range(3)]
    finally:
        await client.close()

    assert [r.status for r in responses] == [200, 200, 200]
    assert (tls_server.connections, tls_server.requests) == (1, 3)


async def test_untrusted_certificate_is_a_tls_error_and_nothing_is_sent(
    tls_server: KeepAliveServer, client: WebhookClient
) -> None:
    with pytest.raises(ssl.SSLError) as failed:
        await client.post(tls_server.url("https"), {}, b"x")

    assert classify_exception(failed.value) == "tls_error"
    assert tls_server.requests == 0
