"""Reading HTTP/1.1 responses with llhttp: framing, keep-alive, limits, strictness, any split.

No sockets: the reader is fed bytes. The same cases against a real connection, with what
happens to the connection afterwards, are in tests/integration/test_http_conformance.py.
"""

from __future__ import annotations

import inspect
import itertools
from dataclasses import replace

import httptools
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.delivery.http_response import (
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    MAX_INTERIM_RESPONSES,
    STRICT,
    Response,
    ResponseReader,
)
from shared.model.errors import BadResponse, ConnectionClosed

KEEP = 16
DRAIN = 256
OK = b"HTTP/1.1 200 OK\r\n"


def reader() -> ResponseReader:
    return ResponseReader(keep_bytes=KEEP, drain_limit=DRAIN)


def read(*parts: bytes, eof: bool = False) -> Response:
    reading = reader()
    response = None
    for part in parts:
        response = reading.feed(part)
    if eof:
        response = reading.feed_eof()
    assert response is not None
    return response


def test_content_length_body_is_kept_and_the_connection_reusable() -> None:
    response = read(OK + b"Content-Length: 2\r\nRetry-After: 5\r\n\r\nok")

    assert response == Response(
        status=200, headers={"content-length": "2", "retry-after": "5"}, body=b"ok", reusable=True
    )


def test_response_is_not_ready_until_its_body_has_arrived() -> None:
    reading = reader()

    assert reading.feed(b"HTTP/1.1 500 Oops\r\ncontent-length: 5\r\n\r\nab") is None
    response = reading.feed(b"cde")

    assert response is not None
    assert response.body == b"abcde"


def test_header_values_lose_surrounding_whitespace_and_names_their_case() -> None:
    response = read(OK + b"X-Thing:   a b  \r\nContent-Length: 0\r\n\r\n")

    assert response.headers["x-thing"] == "a b"


def test_chunked_body_with_extensions_and_trailers_keeps_the_trailers_out_of_the_headers() -> None:
    response = read(
        b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'3;name=value;q="x"\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n'
    )

    assert (response.status, response.body, response.reusable) == (202, b"abcde", True)
    assert "x-trailer" not in response.headers


@pytest.mark.parametrize(
    "interim",
    [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"],
    ids=["100-continue", "103-early-hints"],
)
def test_interim_answers_are_skipped(interim: bytes) -> None:
    response = read(interim + b"HTTP/1.1 204 No Content\r\n\r\n")

    assert (response.status, response.headers, response.reusable) == (204, {}, True)


def test_too_many_interim_answers_are_a_bad_response() -> None:
    with pytest.raises(BadResponse, match="interim"):
        reader().feed(b"HTTP/1.1 100 Continue\r\n\r\n" * (MAX_INTERIM_RESPONSES + 1))


@pytest.mark.parametrize(
    "head",
    [
        OK + b"Connection: close\r\ncontent-length: 0\r\n\r\n",
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
    response = read(OK + b"\r\nuntil", b" close", eof=True)

    assert (response.body, response.reusable) == (b"until close", False)


def test_only_the_first_bytes_of_a_body_are_kept() -> None:
    response = read(OK + b"content-length: 100\r\n\r\n" + b"x" * 100)

    assert (response.body, response.reusable) == (b"x" * KEEP, True)


def test_body_past_the_drain_limit_ends_the_response_early_without_reuse() -> None:
    response = reader().feed(OK + b"content-length: 100000\r\n\r\n" + b"y" * 300)

    assert response is not None
    assert (response.body, response.reusable) == (b"y" * KEEP, False)


def test_endless_chunked_body_ends_at_the_drain_limit() -> None:
    reading = reader()
    reading.feed(OK + b"transfer-encoding: chunked\r\n\r\n")
    chunk = b"40\r\n" + b"z" * 64 + b"\r\n"

    feeds = 1
    while (response := reading.feed(chunk)) is None:
        feeds += 1

    assert feeds == DRAIN // 64 + 1
    assert response.reusable is False


def test_endless_framing_without_body_bytes_ends_the_response() -> None:
    """Chunk extensions carry no body, so the drain limit alone would never stop them."""
    reading = reader()
    reading.feed(OK + b"transfer-encoding: chunked\r\n\r\n1;" + b"e=x;" * 20)
    extension = b"e=x;" * 1024

    feeds = 0
    while (response := reading.feed(extension)) is None:
        feeds += 1

    assert feeds <= (MAX_HEAD_BYTES + 2 * DRAIN) // len(extension) + 1
    assert response.reusable is False


def test_endless_trailers_end_the_response() -> None:
    reading = reader()
    reading.feed(OK + b"transfer-encoding: chunked\r\n\r\n0\r\n")
    trailer = b"x-t: " + b"v" * 1000 + b"\r\n"

    feeds = 0
    while (response := reading.feed(trailer)) is None:
        feeds += 1

    assert feeds < MAX_HEAD_BYTES // len(trailer) + 1
    assert (response.status, response.reusable) == (200, False)


def test_closed_mid_body_keeps_what_arrived() -> None:
    response = read(b"HTTP/1.1 500 Oops\r\ncontent-length: 100\r\n\r\npartial", eof=True)

    assert (response.status, response.body, response.reusable) == (500, b"partial", False)


@pytest.mark.parametrize(
    ("parts", "answered"),
    [
        ((), False),
        ((b"HTTP/1.1 20",), True),
        ((OK + b"content-ty",), True),
        ((b"HTTP/1.1 100 Continue\r\n\r\n",), True),
    ],
    ids=["before-any-byte", "mid-status-line", "mid-head", "after-100-continue"],
)
def test_closed_before_the_final_head_ended_is_connection_closed(
    parts: tuple[bytes, ...], answered: bool
) -> None:
    reading = reader()
    for part in parts:
        reading.feed(part)

    with pytest.raises(ConnectionClosed) as closed:
        reading.feed_eof()

    assert closed.value.answered is answered


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"SMTP 220 hello\r\n\r\n", id="not-http"),
        pytest.param(b"HTTP/2.0 200 OK\r\ncontent-length: 0\r\n\r\n", id="http-2.0"),
        pytest.param(b"HTTP/0.9 200 OK\r\ncontent-length: 0\r\n\r\n", id="http-0.9"),
        pytest.param(b"HTTP/1.1 2000 OK\r\n\r\n", id="four-digit-status"),
        pytest.param(b"HTTP/1.1 099 Low\r\ncontent-length: 0\r\n\r\n", id="status-below-100"),
        pytest.param(b"HTTP/1.1 600 High\r\ncontent-length: 0\r\n\r\n", id="status-above-599"),
        pytest.param(b"HTTP/1.1 abc OK\r\n\r\n", id="letters-status"),
        pytest.param(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", id="switching-protocols"),
        pytest.param(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n",
            id="upgrade",
        ),
        pytest.param(OK + b"no colon here\r\n\r\n", id="header-without-colon"),
        pytest.param(OK + b"Bad Name: x\r\n\r\n", id="space-in-header-name"),
        pytest.param(OK + b"Name : x\r\n\r\n", id="space-before-colon"),
        pytest.param(OK + b"X: a\x00b\r\n\r\n", id="nul-in-header-value"),
        pytest.param(OK + b"x-a: one\r\n two\r\ncontent-length: 0\r\n\r\n", id="obs-fold"),
        pytest.param(OK + b"content-length: 2\r\ncontent-length: 3\r\n\r\nok", id="cl-conflict"),
        pytest.param(OK + b"content-length: 2\r\ncontent-length: 2\r\n\r\nok", id="cl-repeated"),
        pytest.param(OK + b"content-length: 2, 2\r\n\r\nok", id="cl-list"),
        pytest.param(OK + b"content-length: -1\r\n\r\n", id="cl-negative"),
        pytest.param(OK + b"content-length: +2\r\n\r\nok", id="cl-plus-sign"),
        pytest.param(OK + b"content-length: two\r\n\r\n", id="cl-not-a-number"),
        pytest.param(OK + b"content-length: 99999999999999999999\r\n\r\n", id="cl-overflow"),
        pytest.param(
            OK + b"transfer-encoding: chunked\r\ncontent-length: 2\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            id="te-then-cl",
        ),
        pytest.param(
            OK + b"content-length: 2\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            id="cl-then-te",
        ),
        pytest.param(OK + b"transfer-encoding: chunked\r\n\r\n0x2\r\nok\r\n", id="chunk-0x2"),
        pytest.param(OK + b"transfer-encoding: chunked\r\n\r\n+1_0\r\n", id="chunk-plus-1_0"),
        pytest.param(OK + b"transfer-encoding: chunked\r\n\r\nzz\r\n", id="chunk-not-hex"),
        pytest.param(
            OK + b"transfer-encoding: chunked\r\n\r\n" + b"f" * 17 + b"\r\n", id="chunk-huge"
        ),
        pytest.param(OK + b"transfer-encoding: chunked\r\n\r\n2\r\nabXX", id="chunk-without-crlf"),
        pytest.param(OK + b"transfer-encoding: chunked\r\n\r\n2;\r\nok\r\n", id="chunk-ext-empty"),
        pytest.param(b"HTTP/1.1 200 OK\ncontent-length: 0\n\n", id="bare-lf"),
        pytest.param(OK + b"content-length: 0\rx: y\r\n\r\n", id="bare-cr"),
        pytest.param(
            OK + b"".join(b"h%d: v\r\n" % n for n in range(MAX_HEADERS + 1)) + b"\r\n",
            id="too-many-headers",
        ),
        pytest.param(OK + b"x-big: " + b"a" * (MAX_HEAD_BYTES + 1), id="head-too-long-unended"),
        pytest.param(OK + b"x-big: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n", id="head-too-long"),
    ],
)
def test_malformed_or_oversized_responses_are_bad_responses(data: bytes) -> None:
    with pytest.raises(BadResponse):
        reader().feed(data)


@pytest.mark.parametrize(
    "extra",
    [
        OK + b"content-length: 0\r\n\r\n",
        b"garbage",
    ],
    ids=["second-response", "garbage"],
)
def test_bytes_after_the_response_leave_it_read_but_not_reusable(extra: bytes) -> None:
    response = read(OK + b"content-length: 2\r\n\r\nok" + extra)

    assert (response.status, response.body, response.reusable) == (200, b"ok", False)


@pytest.mark.parametrize("status", [204, 304])
def test_bodyless_status_with_a_body_is_read_without_it_and_not_reusable(status: int) -> None:
    response = read(b"HTTP/1.1 %d Nothing\r\ncontent-length: 2\r\n\r\nok" % status)

    assert (response.status, response.body, response.reusable) == (status, b"", False)


def test_next_response_on_the_same_connection_is_read_afresh() -> None:
    reading = reader()
    first = reading.feed(OK + b"content-length: 5\r\nx-first: 1\r\n\r\nfirst")
    reading.expect_response()
    second = reading.feed(b"HTTP/1.1 503 Busy\r\nretry-after: 3\r\ncontent-length: 6\r\n\r\nsecond")

    assert first == Response(200, {"content-length": "5", "x-first": "1"}, b"first", True)
    assert second == Response(503, {"retry-after": "3", "content-length": "6"}, b"second", True)


# --- llhttp's leniencies stay off ---------------------------------------------------------

# For each leniency, a response that it would let through (checked below against a lenient
# parser, so each case really exercises its flag). lenient_transfer_encoding only concerns
# requests (chunked not last in a request's Transfer-Encoding), so it has no case here.
LENIENT_CASES = {
    "lenient_headers": OK + b"X: a\x01b\r\ncontent-length: 2\r\n\r\nok",
    "lenient_chunked_length": (
        OK + b"transfer-encoding: chunked\r\ncontent-length: 2\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    ),
    "lenient_version": b"HTTP/1.2 200 OK\r\ncontent-length: 2\r\n\r\nok",
    "lenient_optional_lf_after_cr": b"HTTP/1.1 200 OK\rcontent-length: 2\r\n\r\nok",
    "lenient_optional_cr_before_lf": OK + b"content-length: 2\nx: y\r\n\r\nok",
    "lenient_optional_crlf_after_chunk": (
        OK + b"transfer-encoding: chunked\r\n\r\n2\r\nok0\r\n\r\n"
    ),
    "lenient_spaces_after_chunk_size": (
        OK + b"transfer-encoding: chunked\r\n\r\n2 \r\nok\r\n0\r\n\r\n"
    ),
}
# These two let a connection marked "close" carry more messages: refused as more bytes
# after the response.
AFTER_CLOSE_CASE = OK + b"connection: close\r\ncontent-length: 2\r\n\r\nok" + OK + b"\r\n"


def test_every_leniency_httptools_offers_is_named_and_off() -> None:
    offered = set(
        inspect.signature(httptools.HttpResponseParser.set_dangerous_leniencies).parameters
    )

    assert set(STRICT) == offered - {"self"}
    assert not any(STRICT.values())


@pytest.mark.parametrize("leniency", LENIENT_CASES)
def test_response_a_leniency_would_accept_is_a_bad_response(leniency: str) -> None:
    lenient = httptools.HttpResponseParser(object())
    lenient.set_dangerous_leniencies(**{leniency: True})
    lenient.feed_data(LENIENT_CASES[leniency])  # the oracle: llhttp accepts it when lenient

    with pytest.raises(BadResponse):
        reader().feed(LENIENT_CASES[leniency])


@pytest.mark.parametrize("leniency", ["lenient_keep_alive", "lenient_data_after_close"])
def test_data_after_connection_close_leaves_the_response_not_reusable(leniency: str) -> None:
    lenient = httptools.HttpResponseParser(object())
    lenient.set_dangerous_leniencies(**{leniency: True})
    lenient.feed_data(AFTER_CLOSE_CASE)

    response = reader().feed(AFTER_CLOSE_CASE)

    assert response is not None
    assert (response.body, response.reusable) == (b"ok", False)


# --- any split -------------------------------------------------------------------------------

RESPONSES = [
    OK + b"content-length: 11\r\n\r\nhello world",
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 503 Busy\r\nretry-after: 3\r\ncontent-length: 0\r\n\r\n",
    OK + b"transfer-encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nt: 1\r\n\r\n",
    OK + b"content-length: 2\r\n\r\nok" + OK + b"content-length: 0\r\n\r\n",
]


def read_as_a_connection_does(parts: list[bytes]) -> Response:
    """Feed until the response settles; bytes in later parts (the connection would see them
    arrive while idle) make it not reusable, as they do the connection."""
    reading = reader()
    for position, part in enumerate(parts):
        response = reading.feed(part)
        if response is not None:
            later = any(parts[position + 1 :])
            return replace(response, reusable=response.reusable and not later)
    raise AssertionError("the response never settled")


@given(index=st.sampled_from(range(len(RESPONSES))), cuts=st.lists(st.integers(0, 200)))
def test_how_the_bytes_are_split_does_not_change_the_response(index: int, cuts: list[int]) -> None:
    data = RESPONSES[index]
    points = sorted({min(cut, len(data)) for cut in cuts} | {0, len(data)})

    split = read_as_a_connection_does([data[a:b] for a, b in itertools.pairwise(points)])

    assert split == read(data)
