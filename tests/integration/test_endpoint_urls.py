"""Endpoint URLs through the API, and what the delivery client puts on the wire for them.

The API runs with the production URL policy (https only, no allowed CIDRs) and keeps an
accepted URL exactly as typed, IDN host included; the delivery client turns it into the
punycode host and a percent-encoded UTF-8 target, which the second half checks on a loopback
receiver reached through a resolver that answers 127.0.0.1 for every name.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestClient, TestServer

from services.ingest.app import create_app
from services.ingest.urls import MAX_URL_CHARS
from shared.delivery.http_client import WebhookClient
from shared.delivery.sender import AttemptResult, Sender
from shared.kafka.service_base import service_base
from tests.integration.conftest import ACCOUNT_A, auth, make_settings
from tests.support.endpoints import endpoint_to

# One API (and its broker base) serves every test here: a few dozen URLs cost seconds.
pytestmark = pytest.mark.asyncio(loop_scope="module")

Client = TestClient[Any, Any]
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


@pytest_asyncio.fixture(name="api", scope="module", loop_scope="module")
async def fixture_api(kafka_bootstrap: str) -> AsyncIterator[Client]:
    """The ingest API with the defaults of production: https only, no private destinations."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    settings = make_settings(kafka_bootstrap, prefix, allow_http=False, allowed_cidrs=())
    async with service_base(settings) as base:
        await base.endpoints.loaded.wait()
        async with TestClient(TestServer(create_app(base))) as client:
            yield client


async def create(api: Client, url: str) -> tuple[int, dict[str, Any]]:
    response = await api.post("/v1/endpoints", json={"url": url}, headers=auth(ACCOUNT_A))
    body: dict[str, Any] = await response.json()
    return response.status, body


# --- accepted ---------------------------------------------------------------------------------

ACCEPTED = {
    "idn-latin": "https://bücher.example/x",
    "idn-cjk": "https://短.be/hook",
    "punycode": "https://xn--bcher-kva.example/x",
    "port": "https://hooks.example.com:8443/in",
    "query": "https://hooks.example.com/in?token=abc&tags=a,b&empty=",
    "unicode-path": "https://hooks.example.com/päth/データ?q=ü",
    "percent-encoded": "https://hooks.example.com/a%2Fb/%E3%83%87?q=a%20b&x=%26",
    "mixed-case": "HTTPS://Hooks.Example.com/In",
    "public-ipv4": "https://8.8.8.8/in",
    "max-length": "https://hooks.example.com/" + "a" * (MAX_URL_CHARS - 26),
}


@pytest.mark.kafka
@pytest.mark.parametrize("url", ACCEPTED.values(), ids=ACCEPTED.keys())
async def test_url_is_accepted_and_stored_as_typed(api: Client, url: str) -> None:
    status, created = await create(api, url)
    shown = await (await api.get(f"/v1/endpoints/{created['id']}", headers=auth(ACCOUNT_A))).json()

    assert status == 201, created
    assert created["url"] == url
    assert shown["url"] == url


@pytest.mark.kafka
async def test_idn_url_is_kept_as_typed_not_converted_to_punycode(api: Client) -> None:
    _, created = await create(api, "https://bücher.example/x")

    assert created["url"] == "https://bücher.example/x"
    assert "xn--" not in created["url"]


# --- refused ----------------------------------------------------------------------------------

REFUSED = {
    "user-only": ("https://user@hooks.example.com/x", "user name or password"),
    "password-only": ("https://:pw@hooks.example.com/x", "user name or password"),
    "empty-password": ("https://user:@hooks.example.com/x", "user name or password"),
    "file": ("file:///etc/passwd", "must use https"),
    "javascript": ("javascript:alert(1)", "must use https"),
    "data": ("data:text/plain,hi", "must use https"),
    "gopher": ("gopher://hooks.example.com/x", "must use https"),
    "scheme-relative": ("//hooks.example.com/x", "must use https"),
    "http-not-allowed": ("http://hooks.example.com/x", "must use https"),
    "one-over-max": ("https://hooks.example.com/" + "a" * (MAX_URL_CHARS - 25), "longer than"),
    "far-over-max": ("https://hooks.example.com/?" + "q" * 100_000, "longer than"),
    "loopback": ("https://127.0.0.1/x", "loopback"),
    "loopback-v6": ("https://[::1]/x", "loopback"),
    "rfc1918": ("https://192.168.1.10/x", "private"),
    "metadata": ("https://169.254.169.254/latest/meta-data", "link_local"),
    "ula-v6": ("https://[fd00::1]/x", "private"),
    "mapped-v6": ("https://[::ffff:10.0.0.1]/x", "private"),
    "cgnat": ("https://100.64.0.1/x", "reserved"),
    "unspecified": ("https://0.0.0.0/x", "reserved"),
    "no-host": ("https:///x", "needs a host"),
    "scheme-only": ("https://", "needs a host"),
    "no-slashes": ("https:hooks", "needs a host"),
    "backslash-authority": ("https://hooks.example.com\\@evil.example/x", "is not a URL"),
    "port-out-of-range": ("https://hooks.example.com:99999/x", "is not a URL"),
    "fragment": ("https://hooks.example.com/x#part", "fragment"),
}


@pytest.mark.kafka
@pytest.mark.parametrize(("url", "problem"), REFUSED.values(), ids=REFUSED.keys())
async def test_refused_url_is_a_422_naming_the_url_field(
    api: Client, url: str, problem: str
) -> None:
    status, body = await create(api, url)
    details = body["error"]["details"]

    assert status == 422
    assert {d["field"] for d in details} == {"url"}
    assert any(problem in d["problem"] for d in details), details


@pytest.mark.kafka
async def test_patch_to_a_refused_url_is_a_422_and_keeps_the_stored_url(api: Client) -> None:
    _, created = await create(api, "https://hooks.example.com/kept")
    path = f"/v1/endpoints/{created['id']}"

    patched = await api.patch(path, json={"url": "https://10.0.0.1/x"}, headers=auth(ACCOUNT_A))
    shown = await (await api.get(path, headers=auth(ACCOUNT_A))).json()

    assert patched.status == 422
    assert (await patched.json())["error"]["details"][0]["field"] == "url"
    assert shown["url"] == "https://hooks.example.com/kept"


# --- on the wire ------------------------------------------------------------------------------


class LoopbackResolver(AbstractResolver):
    """Answers 127.0.0.1 for every name and records the names it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        return None


@dataclass
class WireReceiver:
    """Records the request line and headers of each request, answers 204."""

    port: int = 0
    heads: list[list[bytes]] = field(default_factory=list)
    connections: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head.rstrip(b"\r\n").split(b"\r\n"))
            writer.write(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
            await writer.drain()
        finally:
            writer.close()

    @property
    def target(self) -> bytes:
        """The request target of the last request: ``POST <target> HTTP/1.1``."""
        return self.heads[-1][0].split(b" ")[1]

    def header(self, name: bytes) -> list[bytes]:
        prefix = name.lower() + b":"
        return [
            line.split(b":", 1)[1].strip()
            for line in self.heads[-1]
            if line.lower().startswith(prefix)
        ]


@pytest_asyncio.fixture(name="wire", loop_scope="module")
async def fixture_wire() -> AsyncIterator[WireReceiver]:
    receiver = WireReceiver()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    yield receiver
    server.close()
    await server.wait_closed()


async def deliver(
    url: str,
    resolver: LoopbackResolver,
    allowed: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = LOOPBACK,
) -> AttemptResult:
    """One attempt to ``url`` by the services' delivery client."""
    endpoint = endpoint_to(url, endpoint_id="ep_url", account_id="acc_a")
    client = WebhookClient(allowed, timeout_s=2.0, resolver=resolver)
    try:
        return await Sender(client).attempt(
            endpoint, {"id": "evt_1"}, webhook_id="msg_1", event_id="evt_1", attempt=1
        )
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("host", "punycode"),
    [("bücher.example", b"xn--bcher-kva.example"), ("短.be", b"xn--s7y.be")],
    ids=["latin", "cjk"],
)
async def test_idn_url_is_resolved_and_sent_as_its_punycode_host(
    wire: WireReceiver, host: str, punycode: bytes
) -> None:
    resolver = LoopbackResolver()

    result = await deliver(f"http://{host}:{wire.port}/x", resolver)

    assert result.outcome == "success"
    assert resolver.asked == [punycode.decode()]
    assert wire.header(b"host") == [punycode + b":%d" % wire.port]


async def test_unicode_path_and_query_are_sent_as_percent_encoded_utf8(
    wire: WireReceiver,
) -> None:
    await deliver(f"http://hooks.example:{wire.port}/päth/データ?q=ü", LoopbackResolver())

    assert wire.target == b"/p%C3%A4th/%E3%83%87%E3%83%BC%E3%82%BF?q=%C3%BC"


async def test_percent_encoding_in_the_url_is_sent_unchanged(wire: WireReceiver) -> None:
    await deliver(
        f"http://hooks.example:{wire.port}/a%2Fb/%E3%83%87?q=a%20b&x=%26", LoopbackResolver()
    )

    assert wire.target == b"/a%2Fb/%E3%83%87?q=a%20b&x=%26"


async def test_port_and_query_string_reach_the_receiver(wire: WireReceiver) -> None:
    await deliver(f"http://hooks.example:{wire.port}/in?token=abc&tags=a,b", LoopbackResolver())

    assert wire.target == b"/in?token=abc&tags=a,b"
    assert wire.header(b"host") == [b"hooks.example:%d" % wire.port]


@pytest.mark.parametrize(
    "tail", ["/x\r\nX-Injected: 1", "/x?a=1\r\nX-Injected: 1", "/x\nX-Injected: 1"]
)
async def test_line_breaks_in_a_url_never_become_a_header(wire: WireReceiver, tail: str) -> None:
    result = await deliver(f"http://hooks.example:{wire.port}{tail}", LoopbackResolver())

    assert result.outcome == "success"
    assert wire.header(b"x-injected") == []
    assert b"\r" not in wire.target
    assert b"\n" not in wire.target


@pytest.mark.parametrize(
    "host", ["2130706433", "127.1", "0177.0.0.1", "017700000001", "0x7f.0.0.1"]
)
async def test_legacy_numeric_form_of_loopback_is_never_connected_to(
    wire: WireReceiver, host: str
) -> None:
    """aiohttp refuses the all-digit forms itself; the hex one goes through the guarded resolver."""
    result = await deliver(f"http://{host}:{wire.port}/x", LoopbackResolver(), allowed=())

    assert result.outcome in ("error", "refused_destination")
    assert wire.connections == 0
