"""Deliveries while one endpoint's name never resolves: every other host keeps being served.

The webhook client, as the services build it but for a small resolver bound, against a real
receiver on 127.0.0.1. The names are fake: a resolver backend answers 127.0.0.1 for all of
them except one, whose lookup never ends. Once through aiohttp's resolver interface (an
asynchronous backend), once through the real threaded ``getaddrinfo`` path with the blocking
call replaced, so the executor's threads are what is at stake.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from collections.abc import Awaitable, Iterator

import pytest

from shared.delivery.http_client import WebhookClient
from shared.delivery.resolver import LookupTimedOut, ResolverLimits
from shared.model.routing import classify_exception
from tests.support.receiver import Receiver
from tests.support.resolvers import StaticResolver

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
HUNG = "hung.example"
OTHER_HOSTS = [f"h{n}.example" for n in range(20)]
# Two lookups at once in all: the hung name takes one, every other name shares the other.
LIMITS = ResolverLimits(lookup_timeout_s=10.0, max_lookups=2)


class BlockingGetaddrinfo:
    """Stands in for ``socket.getaddrinfo``: blocks its thread for ``hung`` until released,
    answers 127.0.0.1 for any other name."""

    def __init__(self, hung: str) -> None:
        self._hung = hung
        self._release = threading.Event()
        self._started = threading.Event()
        self.blocked_threads = 0

    def __call__(self, host: str, *_: object) -> list[tuple[object, ...]]:
        if host == self._hung:
            self.blocked_threads += 1
            self._started.set()
            self._release.wait()
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 0))]

    async def hung_started(self) -> None:
        await asyncio.to_thread(self._started.wait)

    def release(self) -> None:
        self._release.set()


@pytest.fixture(name="blocking_getaddrinfo")
def fixture_blocking_getaddrinfo(monkeypatch: pytest.MonkeyPatch) -> Iterator[BlockingGetaddrinfo]:
    fake = BlockingGetaddrinfo(HUNG)
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    yield fake
    fake.release()  # the blocked executor thread ends with the test


async def deliveries_complete_while_the_hung_name_waits(
    client: WebhookClient, receiver: Receiver, hung_started: Awaitable[object]
) -> None:
    hung = [
        asyncio.create_task(client.post(f"http://{HUNG}:{receiver.port}/hung", {}, b"x"))
        for _ in range(5)
    ]
    try:
        await hung_started
        responses = await asyncio.gather(
            *(
                client.post(f"http://{host}:{receiver.port}/{host}", {}, b"x")
                for host in OTHER_HOSTS * 2
            )
        )
        still_waiting = [not delivery.done() for delivery in hung]
    finally:
        for delivery in hung:
            delivery.cancel()
        await asyncio.gather(*hung, return_exceptions=True)

    assert [response.status for response in responses] == [200] * len(OTHER_HOSTS) * 2
    assert all(still_waiting)
    assert len(receiver.received) == len(OTHER_HOSTS) * 2


async def test_deliveries_to_other_hosts_complete_while_one_name_never_resolves(
    receiver: Receiver,
) -> None:
    backend = StaticResolver("127.0.0.1", hung=HUNG)
    client = WebhookClient(LOOPBACK, timeout_s=30.0, resolver=backend, resolver_limits=LIMITS)
    try:
        await deliveries_complete_while_the_hung_name_waits(
            client, receiver, backend.hung_started.wait()
        )
    finally:
        await client.close()


async def test_a_name_blocking_getaddrinfo_holds_one_thread_and_leaves_the_others(
    receiver: Receiver, blocking_getaddrinfo: BlockingGetaddrinfo
) -> None:
    client = WebhookClient(LOOPBACK, timeout_s=30.0, resolver_limits=LIMITS)
    try:
        await deliveries_complete_while_the_hung_name_waits(
            client, receiver, blocking_getaddrinfo.hung_started()
        )
    finally:
        await client.close()

    assert blocking_getaddrinfo.blocked_threads == 1


async def test_lookup_that_never_answers_is_a_timeout_outcome() -> None:
    backend = StaticResolver("127.0.0.1", hung=HUNG)
    limits = ResolverLimits(lookup_timeout_s=0.2)
    client = WebhookClient(LOOPBACK, timeout_s=30.0, resolver=backend, resolver_limits=limits)
    try:
        with pytest.raises(LookupTimedOut) as timed_out:
            await client.post(f"https://{HUNG}/hook", {}, b"x")
    finally:
        await client.close()

    assert timed_out.value.host == HUNG
    assert classify_exception(timed_out.value) == "timeout"
