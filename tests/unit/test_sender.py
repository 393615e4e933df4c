"""The SSRF guard in the delivery client refuses before any socket is opened."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from shared.delivery.http_client import GuardedResolver, WebhookClient
from shared.delivery.sender import Sender
from shared.model.errors import RefusedDestination
from tests.support.endpoints import endpoint_to
from tests.support.resolvers import answers


class FakeResolver(AbstractResolver):
    """Answers every name with the given addresses, one answer list per call."""

    def __init__(self, *answers: list[str]) -> None:
        self._answers = list(answers)
        self.calls = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = self._answers[min(self.calls, len(self._answers) - 1)]
        self.calls += 1
        return answers(host, port, addresses)

    async def close(self) -> None:
        return None


@pytest.fixture(name="connects")
def fixture_connects(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every socket connect is recorded and refused, so a test can assert there was none."""
    attempts: list[object] = []

    def refuse(sock: socket.socket, address: object) -> None:
        attempts.append(address)
        raise AssertionError(f"connect to {address!r} attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


PRIVATE_ANSWERS = [
    "127.0.0.1",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",
    "169.254.169.254",
    "::1",
    "fd00::1",
    "fe80::1",
    "::ffff:10.0.0.1",
    "::ffff:127.0.0.1",
]


@pytest.mark.parametrize("address", PRIVATE_ANSWERS)
async def test_name_resolving_to_a_private_address_is_refused_without_connecting(
    address: str, connects: list[object]
) -> None:
    client = WebhookClient((), timeout_s=2.0, resolver=FakeResolver([address]))
    try:
        result = await Sender(client).attempt(
            endpoint_to("https://hooks.example.com/x"),
            {"id": "evt_1"},
            webhook_id="msg_1",
            event_id="evt_1",
            attempt=1,
        )
    finally:
        await client.close()

    assert result.outcome == "refused_destination"
    assert result.record.error is not None
    assert "refused destination" in result.record.error
    assert connects == []


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/x",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]:8443/x",
        "https://[::ffff:127.0.0.1]/x",
        "https://10.0.0.1/x",
    ],
)
async def test_ip_literal_private_url_is_refused_without_connecting(
    url: str, connects: list[object]
) -> None:
    resolver = FakeResolver(["93.184.216.34"])
    client = WebhookClient((), timeout_s=2.0, resolver=resolver)
    try:
        result = await Sender(client).attempt(
            endpoint_to(url), {"id": "evt_1"}, webhook_id="msg_1", event_id="evt_1", attempt=1
        )
    finally:
        await client.close()

    assert result.outcome == "refused_destination"
    assert connects == []
    assert resolver.calls == 0


async def test_private_addresses_are_dropped_from_a_mixed_answer() -> None:
    guard = GuardedResolver((), FakeResolver(["10.0.0.5", "93.184.216.34", "fd00::5"]))

    kept = await guard.resolve("hooks.example.com", 443)

    assert [r["host"] for r in kept] == ["93.184.216.34"]


async def test_rebinding_to_a_private_address_is_refused_on_the_next_resolution() -> None:
    guard = GuardedResolver((), FakeResolver(["93.184.216.34"], ["127.0.0.1"]))

    first = await guard.resolve("rebind.example.com", 443)
    with pytest.raises(RefusedDestination) as refused:
        await guard.resolve("rebind.example.com", 443)

    assert [r["host"] for r in first] == ["93.184.216.34"]
    assert refused.value.reason == "loopback"


async def test_allowed_cidrs_let_a_private_destination_through() -> None:
    allowed = (ipaddress.ip_network("127.0.0.0/8"),)
    guard = GuardedResolver(allowed, FakeResolver(["127.0.0.1"]))

    kept = await guard.resolve("localhost", 8080)

    assert [r["host"] for r in kept] == ["127.0.0.1"]
