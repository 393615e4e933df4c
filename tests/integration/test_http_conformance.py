"""The webhook client against a hostile receiver, one table row per response.

A raw asyncio server on 127.0.0.1 writes exactly the bytes of each case on the first
connection, then answers every later request normally, with the number of the connection
in the body. Each case asserts the outcome of the first delivery (an exception type, or a
status and body), then sends a second delivery to the same origin: after an anomaly it must
get its own answer on a fresh connection (``conn-2``); after a clean keep-alive answer it
must reuse the first (``conn-1``). The bytes-level reading rules are unit-tested in
tests/unit/test_http_response.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

import pytest

from shared.delivery.http_client import RESPONSE_BODY_CAP_BYTES, WebhookClient
from shared.delivery.http_response import MAX_HEAD_BYTES, MAX_HEADERS, MAX_INTERIM_RESPONSES
from shared.model.errors import BadResponse, ConnectionClosed
from tests.support.loopback import read_http_request
from tests.support.raw_server import RawServer

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
TIMEOUT_S = 2.0
OK = b"HTTP/1.1 200 OK\r\n"
CHUNKED = OK + b"transfer-encoding: chunked\r\n\r\n"
# Big enough that the kernel's socket buffers cannot take it all while the receiver reads none.
UNREAD_BODY_BYTES = 48 * 1024 * 1024

# After the case's bytes: go on answering requests on that connection, close it, keep it
# open without reading, or send more bytes once the client holds the answer.
Then = Literal["serve", "close", "hold", "stray"]


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


@dataclass(frozen=True)
class Case:
    parts: tuple[bytes, ...]
    expect: Answer | type[Exception]
    fresh: bool  # the next delivery must come on a new connection
    then: Then = "serve"
    stray: bytes = b""  # for then="stray"
    read_body: bool = True
    request_body: bytes = b'{"type": "link.clicked"}'
    pause_s: float = 0.0  # between parts


def error(data: bytes, expect: type[Exception] = BadResponse) -> Case:
    return Case((data,), expect, fresh=True)


def answer(data: bytes, status: int, body: bytes, *, fresh: bool, then: Then = "serve") -> Case:
    return Case((data,), Answer(status, body), fresh=fresh, then=then)


def closed_after(data: bytes, expect: Answer | type[Exception]) -> Case:
    return Case((data,), expect, fresh=True, then="close")


ENDLESS_BODY = CHUNKED + b"ffffffffffff\r\n" + b"x" * 128 * 1024
HEADS_UP = b"HTTP/1.1 100 Continue\r\n\r\n"

CASES: dict[str, Case] = {
    # --- framing refused ---------------------------------------------------------------------
    "content-length-conflict": error(OK + b"content-length: 2\r\ncontent-length: 3\r\n\r\nok"),
    "content-length-repeated": error(OK + b"content-length: 2\r\ncontent-length: 2\r\n\r\nok"),
    "content-length-list": error(OK + b"content-length: 2, 2\r\n\r\nok"),
    "content-length-negative": error(OK + b"content-length: -1\r\n\r\n"),
    "content-length-not-a-number": error(OK + b"content-length: two\r\n\r\n"),
    "content-length-overflow": error(OK + b"content-length: 99999999999999999999\r\n\r\n"),
    "transfer-encoding-with-content-length": error(
        OK + b"transfer-encoding: chunked\r\ncontent-length: 2\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    ),
    "content-length-with-transfer-encoding": error(
        OK + b"content-length: 2\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    ),
    "chunk-size-0x2": error(CHUNKED + b"0x2\r\nok\r\n0\r\n\r\n"),
    "chunk-size-plus-1_0": error(CHUNKED + b"+1_0\r\n0123456789abcdef\r\n0\r\n\r\n"),
    "chunk-size-trailing-space": error(CHUNKED + b"2 \r\nok\r\n0\r\n\r\n"),
    "chunk-size-huge": error(CHUNKED + b"f" * 17 + b"\r\n"),
    "chunk-data-without-crlf": error(CHUNKED + b"2\r\nokXX0\r\n\r\n"),
    "header-name-with-space": error(OK + b"Bad Name: x\r\ncontent-length: 0\r\n\r\n"),
    "header-space-before-colon": error(OK + b"Name : x\r\ncontent-length: 0\r\n\r\n"),
    "header-value-with-nul": error(OK + b"x: a\x00b\r\ncontent-length: 0\r\n\r\n"),
    "obs-fold": error(OK + b"x-a: one\r\n two\r\ncontent-length: 0\r\n\r\n"),
    "bare-lf-line-ends": error(b"HTTP/1.1 200 OK\ncontent-length: 2\n\nok"),
    "bare-lf-in-one-header": error(OK + b"content-length: 2\nx: y\r\n\r\nok"),
    "bare-cr": error(OK + b"content-length: 2\rx: y\r\n\r\nok"),
    "not-http": error(b"SSH-2.0-OpenSSH_9.6\r\n"),
    "http-2.0-status-line": error(b"HTTP/2.0 200 OK\r\ncontent-length: 0\r\n\r\n"),
    "http-1.2-status-line": error(b"HTTP/1.2 200 OK\r\ncontent-length: 0\r\n\r\n"),
    "status-below-100": error(b"HTTP/1.1 099 Low\r\ncontent-length: 0\r\n\r\n"),
    "status-four-digits": error(b"HTTP/1.1 2000 OK\r\ncontent-length: 0\r\n\r\n"),
    "switching-protocols": error(
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
    ),
    "interim-answers-without-end": error(HEADS_UP * (MAX_INTERIM_RESPONSES + 1)),
    "head-over-32-KiB": error(OK + b"x-big: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n"),
    "more-than-128-headers": error(
        OK + b"".join(b"x-h%d: v\r\n" % n for n in range(MAX_HEADERS + 1)) + b"\r\n"
    ),
    # --- read, then the connection closed ----------------------------------------------------
    "no-content-with-a-body": answer(
        b"HTTP/1.1 204 No Content\r\ncontent-length: 2\r\n\r\nok", 204, b"", fresh=True
    ),
    "not-modified-with-a-body": answer(
        b"HTTP/1.1 304 Not Modified\r\ncontent-length: 2\r\n\r\nok", 304, b"", fresh=True
    ),
    "second-response-in-the-same-write": answer(
        OK + b"content-length: 5\r\n\r\nfirst" + OK + b"content-length: 6\r\n\r\nsecond",
        200,
        b"first",
        fresh=True,
    ),
    "garbage-after-the-response": answer(
        OK + b"content-length: 2\r\n\r\nok" + b"\x00\x01garbage", 200, b"ok", fresh=True
    ),
    "second-response-while-idle": Case(
        (OK + b"content-length: 5\r\n\r\nfirst",),
        Answer(200, b"first"),
        fresh=True,
        then="stray",
        stray=OK + b"content-length: 6\r\n\r\nsecond",
    ),
    "bytes-while-idle": Case(
        (OK + b"content-length: 2\r\n\r\nok",),
        Answer(200, b"ok"),
        fresh=True,
        then="stray",
        stray=b"\x16",
    ),
    "answer-before-the-request-was-read": Case(
        (b"HTTP/1.1 413 Too Large\r\ncontent-length: 3\r\n\r\nbig",),
        Answer(413, b"big"),
        fresh=True,
        then="hold",
        read_body=False,
        request_body=b"x" * UNREAD_BODY_BYTES,
    ),
    "body-over-the-drain-limit": answer(
        OK + b"content-length: 100000\r\n\r\n" + b"y" * 100_000,
        200,
        b"y" * RESPONSE_BODY_CAP_BYTES,
        fresh=True,
    ),
    "endless-chunk": answer(ENDLESS_BODY, 200, b"x" * RESPONSE_BODY_CAP_BYTES, fresh=True),
    "connection-close": answer(
        OK + b"connection: close\r\ncontent-length: 2\r\n\r\nok", 200, b"ok", fresh=True
    ),
    "http-1.0-without-keep-alive": answer(
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok", 200, b"ok", fresh=True
    ),
    "transfer-encoding-not-chunked": closed_after(
        OK + b"transfer-encoding: gzip\r\n\r\nzipped", Answer(200, b"zipped")
    ),
    "body-until-close": closed_after(OK + b"\r\nuntil close", Answer(200, b"until close")),
    # --- early close at every stage ----------------------------------------------------------
    "close-before-any-byte": closed_after(b"", ConnectionClosed),
    "close-mid-status-line": closed_after(b"HTTP/1.1 20", ConnectionClosed),
    "close-mid-head": closed_after(OK + b"content-ty", ConnectionClosed),
    "close-after-100-continue": closed_after(HEADS_UP, ConnectionClosed),
    "close-mid-body": closed_after(
        b"HTTP/1.1 500 Oops\r\ncontent-length: 100\r\n\r\npartial", Answer(500, b"partial")
    ),
    "close-mid-chunk": closed_after(CHUNKED + b"a\r\nhalf", Answer(200, b"half")),
    "close-before-the-last-chunk": closed_after(CHUNKED + b"2\r\nok\r\n", Answer(200, b"ok")),
    "close-before-the-final-crlf": closed_after(CHUNKED + b"2\r\nok\r\n0\r\n", Answer(200, b"ok")),
    # --- clean answers: the connection is kept -----------------------------------------------
    "keep-alive": answer(OK + b"content-length: 2\r\n\r\nok", 200, b"ok", fresh=False),
    "http-1.0-keep-alive": answer(
        b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok",
        200,
        b"ok",
        fresh=False,
    ),
    "100-continue-then-final": answer(
        HEADS_UP + OK + b"content-length: 2\r\n\r\nok", 200, b"ok", fresh=False
    ),
    "103-early-hints-then-final": answer(
        b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n"
        + b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n",
        202,
        b"",
        fresh=False,
    ),
    "chunk-extensions": answer(
        CHUNKED + b'2;name=value;q="a b"\r\nok\r\n0;last\r\n\r\n', 200, b"ok", fresh=False
    ),
    "trailers": answer(
        CHUNKED + b"2\r\nok\r\n0\r\nx-checksum: abc\r\nx-more: 1\r\n\r\n", 200, b"ok", fresh=False
    ),
    "no-content": answer(b"HTTP/1.1 204 No Content\r\n\r\n", 204, b"", fresh=False),
    "retry-after-on-503": answer(
        b"HTTP/1.1 503 Busy\r\nretry-after: 30\r\ncontent-length: 4\r\n\r\nbusy",
        503,
        b"busy",
        fresh=False,
    ),
    "split-into-one-byte-writes": Case(
        tuple(bytes([byte]) for byte in CHUNKED + b"5;e=1\r\nhello\r\n0\r\nt: 1\r\n\r\n"),
        Answer(200, b"hello"),
        fresh=False,
        pause_s=0.001,
    ),
}


@dataclass(kw_only=True)
class HostileReceiver(RawServer):
    """Writes the case's bytes on the first connection; answers normally after that."""

    case: Case
    _answered: asyncio.Event = field(default_factory=asyncio.Event)

    def client_holds_the_answer(self) -> None:
        """For then="stray": the stray bytes go out once the client has its answer."""
        self._answered.set()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int
    ) -> None:
        if number == 1 and not await self._misbehave(reader, writer):
            return
        await self._serve(reader, writer, number)

    async def _misbehave(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """The case's bytes; True to go on answering on this connection."""
        case = self.case
        if case.read_body:
            await read_http_request(reader)
        else:
            await reader.readuntil(b"\r\n\r\n")
        for part in case.parts:
            writer.write(part)
            await writer.drain()
            if case.pause_s:
                await asyncio.sleep(case.pause_s)
        if case.then == "close":
            return False
        if case.then == "hold":
            await self.stopping.wait()
            return False
        if case.then == "stray":
            await self._answered.wait()
            writer.write(case.stray)
            await writer.drain()
        return True

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int
    ) -> None:
        while True:
            await read_http_request(reader)
            body = b"conn-%d" % number
            writer.write(OK + b"content-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()


@pytest.fixture(name="client")
async def fixture_client() -> AsyncIterator[WebhookClient]:
    client = WebhookClient(LOOPBACK, timeout_s=TIMEOUT_S)
    yield client
    await client.close()


async def first_delivery(
    client: WebhookClient, receiver: HostileReceiver, case: Case
) -> Answer | type[Exception]:
    try:
        response = await client.post(
            receiver.url(), {"content-type": "application/json"}, case.request_body
        )
    except (BadResponse, ConnectionClosed) as exc:
        return type(exc)
    return Answer(response.status, response.body)


def test_the_table_holds_at_least_30_malformed_or_tricky_responses() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_hostile_response_has_its_outcome_and_the_next_delivery_its_own_answer(
    case: Case, client: WebhookClient
) -> None:
    receiver = HostileReceiver(case=case)
    await receiver.start()
    try:
        outcome = await first_delivery(client, receiver, case)
        if case.then == "stray":
            receiver.client_holds_the_answer()
            async with asyncio.timeout(TIMEOUT_S):
                await receiver.closed[1].wait()  # the stray bytes made the client hang up
        second = await client.post(receiver.url(), {}, b"{}")
    finally:
        await receiver.stop()

    assert outcome == case.expect
    expected_connection = 2 if case.fresh else 1
    assert (second.status, second.body) == (200, b"conn-%d" % expected_connection)
    assert receiver.connections == expected_connection
