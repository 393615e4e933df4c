"""Reading HTTP/1.1 responses: framing, keep-alive, limits, and bytes arriving in any split."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.delivery.http_response import MAX_HEAD_BYTES, MAX_HEADERS, Response, ResponseParser
from shared.model.errors import BadResponse, ConnectionClosed

KEEP = 16
DRAIN = 256


def parser() -> ResponseParser:
    return ResponseParser(keep_bytes=KEEP, drain_limit=DRAIN)


def read(*parts: bytes, eof: bool = False) -> Response:
    reading = parser()
    ready = False
    for part in parts:
        ready = reading.feed(part)
    if eof:
        reading.feed_eof()
    else:
        assert ready
    return reading.response()


def test_content_length_body_is_kept_and_the_connection_reusable() -> None:
    response = read(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nRetry-After: 5\r\n\r\nok")

    assert response == Response(
        status=200, headers={"content-length": "2", "retry-after": "5"}, body=b"ok", reusable=True
    )


def test_response_is_not_ready_until_its_body_has_arrived() -> None:
    reading = parser()

    assert reading.feed(b"HTTP/1.1 500 Oops\r\ncontent-length: 5\r\n\r\nab") is False
    assert reading.feed(b"cde") is True
    assert reading.response().body == b"abcde"


def test_chunked_body_with_extensions_and_trailers() -> None:
    response = read(
        b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;name=value\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n"
    )

    assert (response.status, response.body, response.reusable) == (202, b"abcde", True)


def test_interim_100_continue_is_skipped() -> None:
    response = read(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")

    assert (response.status, response.body, response.reusable) == (204, b"", True)


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n",
    ],
    ids=["connection-close", "http-1.0"],
)
def test_connection_the_receiver_will_close_is_not_reusable(head: bytes) -> None:
    assert read(head).reusable is False


def test_http_1_0_keep_alive_is_reusable() -> None:
    head = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\ncontent-length: 0\r\n\r\n"

    assert read(head).reusable is True


def test_body_without_length_ends_at_close_and_is_not_reusable() -> None:
    response = read(b"HTTP/1.1 200 OK\r\n\r\nuntil", b" close", eof=True)

    assert (response.body, response.reusable) == (b"until close", False)


def test_only_the_first_bytes_of_a_body_are_kept() -> None:
    body = b"x" * 100

    response = read(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + body)

    assert (response.body, response.reusable) == (b"x" * KEEP, True)


def test_body_past_the_drain_limit_ends_the_response_early_without_reuse() -> None:
    reading = parser()

    ready = reading.feed(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n" + b"y" * 300)

    assert ready is True
    assert (reading.response().body, reading.response().reusable) == (b"y" * KEEP, False)


def test_endless_chunked_body_ends_at_the_drain_limit() -> None:
    reading = parser()
    reading.feed(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    chunk = b"40\r\n" + b"z" * 64 + b"\r\n"

    feeds = 0
    while not reading.feed(chunk):
        feeds += 1

    assert feeds < DRAIN // 64 + 1
    assert reading.response().reusable is False


def test_closed_mid_body_keeps_what_arrived() -> None:
    response = read(b"HTTP/1.1 500 Oops\r\ncontent-length: 100\r\n\r\npartial", eof=True)

    assert (response.status, response.body, response.reusable) == (500, b"partial", False)


@pytest.mark.parametrize(
    ("parts", "answered"),
    [((), False), ((b"HTTP/1.1 200 OK\r\ncontent-ty",), True)],
    ids=["before-any-byte", "mid-head"],
)
def test_closed_before_the_head_ended_is_connection_closed(
    parts: tuple[bytes, ...], answered: bool
) -> None:
    reading = parser()
    for part in parts:
        reading.feed(part)

    with pytest.raises(ConnectionClosed) as closed:
        reading.feed_eof()

    assert closed.value.answered is answered


@pytest.mark.parametrize(
    "data",
    [
        b"SMTP 220 hello\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabXX",
        b"HTTP/1.1 200 OK\r\n"
        + b"".join(b"h%d: v\r\n" % n for n in range(MAX_HEADERS + 1))
        + b"\r\n",
        b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * (MAX_HEAD_BYTES + 1),
    ],
    ids=[
        "not-http",
        "four-digit-status",
        "letters-status",
        "upgrade",
        "header-without-colon",
        "obsolete-folding",
        "conflicting-lengths",
        "negative-length",
        "bad-chunk-size",
        "chunk-without-crlf",
        "too-many-headers",
        "head-too-long",
    ],
)
def test_malformed_or_oversized_responses_are_bad_responses(data: bytes) -> None:
    with pytest.raises(BadResponse):
        parser().feed(data)


def test_repeated_equal_content_lengths_are_accepted() -> None:
    assert read(b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\n\r\nok").body == b"ok"


RESPONSES = [
    b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello world",
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 503 Busy\r\nretry-after: 3\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
]


@given(index=st.sampled_from(range(len(RESPONSES))), cuts=st.lists(st.integers(0, 200)))
def test_how_the_bytes_are_split_does_not_change_the_response(index: int, cuts: list[int]) -> None:
    data = RESPONSES[index]
    whole = read(data)
    points = sorted({min(cut, len(data)) for cut in cuts} | {0, len(data)})

    split = read(*(data[a:b] for a, b in itertools.pairwise(points)))

    assert split == whole
