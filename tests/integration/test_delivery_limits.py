"""Hostile receivers cost one attempt, bounded time and bounded memory.

The delivery client (``WebhookClient`` + ``Sender``, as the services build it) against raw
asyncio servers on 127.0.0.1 that misbehave at the byte level: an endless body, no answer, a
huge header, a redirect, a connection closed mid-response. No broker is involved.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from shared.delivery.http_client import RESPONSE_BODY_CAP_BYTES, WebhookClient
from shared.delivery.sender import AttemptResult, Sender
from tests.support.endpoints import endpoint_to
from tests.support.loopback import read_http_request
from tests.support.raw_server import RawServer

TIMEOUT_S = 1.0
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)

# What a raw receiver does once it has read the request (or, for "silent", instead of it).
Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "RawReceiver"], Awaitable[None]]


@dataclass(kw_only=True)
class RawReceiver(RawServer):
    """Reads one HTTP request per connection, then misbehaves as ``behaviour`` says."""

    behaviour: Behaviour
    read_request: bool = True
    requests: int = 0
    bytes_sent: int = 0

    async def write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()
        self.bytes_sent += len(data)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int
    ) -> None:
        if self.read_request:
            await read_http_request(reader)
            self.requests += 1
        await self.behaviour(reader, writer, self)


StartReceiver = Callable[..., Awaitable[RawReceiver]]


@pytest.fixture(name="start_receiver")
async def fixture_start_receiver() -> AsyncIterator[StartReceiver]:
    started: list[RawReceiver] = []

    async def start(behaviour: Behaviour, *, read_request: bool = True) -> RawReceiver:
        receiver = RawReceiver(behaviour=behaviour, read_request=read_request)
        await receiver.start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        await receiver.stop()


Attempt = Callable[[str], Awaitable[AttemptResult]]


@pytest.fixture(name="attempt")
async def fixture_attempt() -> AsyncIterator[Attempt]:
    """One delivery attempt to a URL, by the services' own client with a 1 s timeout."""
    client = WebhookClient(LOOPBACK, timeout_s=TIMEOUT_S)
    sender = Sender(client)
    now = datetime.now(UTC)

    async def attempt(url: str) -> AttemptResult:
        endpoint = endpoint_to(url, endpoint_id="ep_limits")
        event = {"id": "evt_1", "type": "link.clicked", "occurred_at": now.isoformat()}
        return await sender.attempt(
            endpoint, event, webhook_id="msg_limits", event_id="evt_1", attempt=1
        )

    yield attempt
    await client.close()


async def timed(attempt: Attempt, url: str) -> tuple[AttemptResult, float]:
    started = time.monotonic()
    result = await attempt(url)
    return result, time.monotonic() - started


# --- behaviours ------------------------------------------------------------------------------


async def endless_body(
    _: asyncio.StreamReader, writer: asyncio.StreamWriter, receiver: RawReceiver
) -> None:
    await receiver.write(writer, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"x" * 64 * 1024)
    while not receiver.stopping.is_set():
        await receiver.write(writer, chunk)


async def never_answer(
    _: asyncio.StreamReader, __: asyncio.StreamWriter, receiver: RawReceiver
) -> None:
    await receiver.stopping.wait()


async def huge_header_line(
    _: asyncio.StreamReader, writer: asyncio.StreamWriter, receiver: RawReceiver
) -> None:
    big = b"x-big: " + b"a" * (70 * 1024) + b"\r\n"
    await receiver.write(writer, b"HTTP/1.1 200 OK\r\n" + big + b"content-length: 0\r\n\r\n")


async def many_headers(
    _: asyncio.StreamReader, writer: asyncio.StreamWriter, receiver: RawReceiver
) -> None:
    lines = b"".join(b"x-h%d: %s\r\n" % (n, b"a" * 100) for n in range(700))  # ~75 KB
    await receiver.write(writer, b"HTTP/1.1 200 OK\r\n" + lines + b"content-length: 0\r\n\r\n")


async def close_before_answering(
    _: asyncio.StreamReader, writer: asyncio.StreamWriter, __: RawReceiver
) -> None:
    writer.close()


async def close_mid_headers(
    _: asyncio.StreamReader, writer: asyncio.StreamWriter, receiver: RawReceiver
) -> None:
    await receiver.write(writer, b"HTTP/1.1 200 OK\r\ncontent-ty")
    writer.close()


async def close_mid_body(
    _: asyncio.StreamReader, writer: asyncio.StreamWriter, receiver: RawReceiver
) -> None:
    await receiver.write(writer, b"HTTP/1.1 500 Oops\r\ncontent-length: 100\r\n\r\npartial")
    writer.close()


async def answer_ok(
    _: asyncio.StreamReader, writer: asyncio.StreamWriter, receiver: RawReceiver
) -> None:
    await receiver.write(writer, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")


# --- endless body ----------------------------------------------------------------------------


async def test_endless_body_ends_the_attempt_after_the_response_cap(
    start_receiver: StartReceiver, attempt: Attempt
) -> None:
    receiver = await start_receiver(endless_body)

    result, took_s = await timed(attempt, receiver.url())

    assert result.outcome == "success"
    assert result.record.status == 200
    assert result.record.response_body == "x" * RESPONSE_BODY_CAP_BYTES
    assert took_s < TIMEOUT_S


async def test_endless_body_connection_is_closed_not_pooled(
    start_receiver: StartReceiver, attempt: Attempt
) -> None:
    receiver = await start_receiver(endless_body)

    await attempt(receiver.url())
    async with asyncio.timeout(2):
        await receiver.closed[1].wait()

    assert receiver.bytes_sent < 16 * 1024 * 1024


async def test_endless_body_attempt_allocates_under_two_megabytes(
    start_receiver: StartReceiver, attempt: Attempt
) -> None:
    receiver = await start_receiver(endless_body)

    tracemalloc.start()
    try:
        await attempt(receiver.url())
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak_bytes < 2 * 1024 * 1024, f"peak {peak_bytes} bytes"


async def test_endless_body_costs_one_request(
    start_receiver: StartReceiver, attempt: Attempt
) -> None:
    receiver = await start_receiver(endless_body)

    await attempt(receiver.url())

    assert (receiver.connections, receiver.requests) == (1, 1)


# --- no answer -------------------------------------------------------------------------------


async def test_receiver_that_never_answers_times_out_after_the_delivery_timeout(
    start_receiver: StartReceiver, attempt: Attempt
) -> None:
    receiver = await start_receiver(never_answer)

    result, took_s = await timed(attempt, receiver.url())

    assert result.outcome == "timeout"
    assert result.record.status is None
    assert TIMEOUT_S * 0.9 <= took_s < TIMEOUT_S + 1.0
    assert (receiver.connections, receiver.requests) == (1, 1)


async def test_receiver_that_accepts_and_never_reads_times_out_after_the_delivery_timeout(
    start_receiver: StartReceiver, attempt: Attempt
) -> None:
    receiver = await start_receiver(never_answer, read_request=False)

    result, took_s = await timed(attempt, receiver.url())

    assert result.outcome == "timeout"
    assert TIMEOUT_S * 0.9 <= took_s < TIMEOUT_S + 1.0
    assert receiver.connections == 1


# --- huge headers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "behaviour", [huge_header_line, many_headers], ids=["one-70KB-header", "700-headers-75KB"]
)
async def test_huge_response_header_is_an_error_outcome_in_bounded_time(
    start_receiver: StartReceiver, attempt: Attempt, behaviour: Behaviour
) -> None:
    receiver = await start_receiver(behaviour)

    result, took_s = await timed(attempt, receiver.url())

    assert result.outcome == "error"
    assert result.record.status is None
    assert result.record.error is not None
    assert took_s < TIMEOUT_S
    assert (receiver.connections, receiver.requests) == (1, 1)


# --- redirects -------------------------------------------------------------------------------


async def test_redirect_is_an_http_3xx_outcome_and_is_not_followed(
    start_receiver: StartReceiver, attempt: Attempt
) -> None:
    target = await start_receiver(answer_ok)

    async def redirect(
        _: asyncio.StreamReader, writer: asyncio.StreamWriter, receiver: RawReceiver
    ) -> None:
        await receiver.write(
            writer,
            b"HTTP/1.1 307 Temporary Redirect\r\nlocation: %s\r\ncontent-length: 0\r\n\r\n"
            % target.url("/elsewhere").encode(),
        )

    redirector = await start_receiver(redirect)

    result = await attempt(redirector.url())

    assert result.outcome == "http_3xx"
    assert result.record.status == 307
    assert redirector.requests == 1
    assert target.connections == 0


# --- connection closed mid-response ----------------------------------------------------------


@pytest.mark.parametrize(
    "behaviour", [close_before_answering, close_mid_headers], ids=["before-status", "mid-headers"]
)
async def test_connection_closed_before_the_headers_end_is_a_connect_error(
    start_receiver: StartReceiver, attempt: Attempt, behaviour: Behaviour
) -> None:
    receiver = await start_receiver(behaviour)

    result, took_s = await timed(attempt, receiver.url())

    assert result.outcome == "connect_error"
    assert result.record.status is None
    assert took_s < TIMEOUT_S
    assert (receiver.connections, receiver.requests) == (1, 1)


async def test_connection_closed_mid_body_keeps_the_status_and_partial_body(
    start_receiver: StartReceiver, attempt: Attempt
) -> None:
    receiver = await start_receiver(close_mid_body)

    result, took_s = await timed(attempt, receiver.url())

    assert result.outcome == "http_5xx"
    assert result.record.status == 500
    assert result.record.response_body == "partial"
    assert took_s < TIMEOUT_S
    assert (receiver.connections, receiver.requests) == (1, 1)
