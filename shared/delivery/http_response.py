"""Reading a receiver's HTTP/1.1 response with llhttp (through httptools), strictly. No I/O.

llhttp is the parser of Node.js and uvicorn: maintained, fuzzed, and strict by default, which
matters here because one pooled connection carries the deliveries of every account that posts
to the same origin (hooks.slack.com and the like): a response we frame differently from the
receiver could hand one account's answer to another's request. So every leniency llhttp offers
stays off (``STRICT``), and what llhttp accepts but a webhook sender should not is refused here:

- framing llhttp refuses (conflicting or repeated ``Content-Length``, ``Transfer-Encoding``
  with ``Content-Length``, chunk sizes such as ``0x2`` or ``+1_0``, header names with spaces,
  bare LF or CR line ends, obs-fold, control characters) is a ``BadResponse``. RFC 9112 would
  have a user agent unfold obs-fold; llhttp only accepts it with ``lenient_headers``, which
  would also let control characters through, so it stays refused;
- so are HTTP versions other than 1.0 and 1.1, statuses outside 100-599, ``101 Switching
  Protocols``, more than ``MAX_INTERIM_RESPONSES`` interim answers, and a head (interim
  answers included) over ``MAX_HEAD_BYTES`` or ``MAX_HEADERS``;
- a body is kept up to ``keep_bytes`` and read up to ``drain_limit``; a longer body, or a
  response that keeps sending past ``MAX_HEAD_BYTES + 2 * drain_limit`` bytes (tiny chunks,
  chunk extensions, trailers), ends the response there, not reusable;
- bytes after the response (a second response nobody asked for, the body of a 204) leave the
  response as it was read but not reusable: the connection is closed.

1xx answers other than 101 are skipped; trailers are read and ignored. A connection closed
before the head ended is ``ConnectionClosed``; one closed after it ends the response there,
not reusable (a body without a length ends this way, and so does one cut short).
"""

from __future__ import annotations

from dataclasses import dataclass

import httptools

from shared.model.errors import BadResponse, ConnectionClosed

MAX_HEAD_BYTES = 32 * 1024
MAX_HEADERS = 128
MAX_INTERIM_RESPONSES = 8
# Per header line beyond its name and value: ": " and CRLF.
HEADER_LINE_OVERHEAD_BYTES = 4
SUPPORTED_VERSIONS = frozenset({"1.0", "1.1"})

# Every llhttp leniency, off. They are off after llhttp_init too; naming them here makes the
# choice visible and keeps a future httptools default from changing it silently.
STRICT = {
    "lenient_headers": False,
    "lenient_chunked_length": False,
    "lenient_keep_alive": False,
    "lenient_transfer_encoding": False,
    "lenient_version": False,
    "lenient_data_after_close": False,
    "lenient_optional_lf_after_cr": False,
    "lenient_optional_cr_before_lf": False,
    "lenient_optional_crlf_after_chunk": False,
    "lenient_spaces_after_chunk_size": False,
}


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its last value
    body: bytes  # the first keep_bytes of the body
    reusable: bool  # read to its end, nothing after it, and the receiver keeps the connection


class _StopReading(Exception):
    """Raised from a parser callback to make llhttp stop; the reader's state says why."""


class ResponseReader:
    """Reads the responses of one connection, one request at a time.

    ``expect_response`` before each request; then ``feed`` returns the response once it is
    complete (or ends early, see the module doc) and None while more bytes are needed, and
    ``feed_eof`` settles it when the connection closes. One llhttp parser serves the whole
    connection: it is only ever reused after a response that left the connection reusable,
    that is at a clean boundary between messages.
    """

    __slots__ = (
        "_body_bytes",
        "_drain_limit",
        "_failure",
        "_head_bytes",
        "_header_count",
        "_headers",
        "_in_body",
        "_interim_responses",
        "_keep_bytes",
        "_kept",
        "_parser",
        "_response",
        "_status",
        "_wire_bytes",
    )

    def __init__(self, *, keep_bytes: int, drain_limit: int) -> None:
        self._keep_bytes = keep_bytes
        self._drain_limit = drain_limit
        self._parser = httptools.HttpResponseParser(self)
        self._parser.set_dangerous_leniencies(**STRICT)
        self.expect_response()

    def expect_response(self) -> None:
        """A request is about to go out: what arrives from now on answers it."""
        self._wire_bytes = 0
        self._head_bytes = 0
        self._header_count = 0
        self._interim_responses = 0
        self._headers: dict[str, str] = {}
        self._status = 0
        self._in_body = False  # the final response's head has ended
        self._kept = b""
        self._body_bytes = 0
        self._response: Response | None = None
        self._failure: BadResponse | None = None

    def feed(self, data: bytes) -> Response | None:
        """Take the bytes that arrived; the response once it is settled. Raises BadResponse."""
        self._wire_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise BadResponse("the receiver switched protocols") from None
        except httptools.HttpParserError as exc:
            if self._response is not None:
                return self._response  # settled by a callback that stopped llhttp
            if self._failure is not None:
                raise self._failure from None
            raise BadResponse(f"malformed response: {exc}") from None
        if self._response is None:
            self._check_wire_bytes()
        return self._response

    def feed_eof(self) -> Response:
        """The connection closed: the response as read so far, or ConnectionClosed."""
        if self._response is not None:
            return self._response
        if not self._in_body:
            raise ConnectionClosed(answered=self._wire_bytes > 0)
        return self._settle(reusable=False)

    def _check_wire_bytes(self) -> None:
        if not self._in_body:
            if self._wire_bytes > MAX_HEAD_BYTES:
                raise BadResponse(f"response head longer than {MAX_HEAD_BYTES} bytes")
        elif self._wire_bytes > MAX_HEAD_BYTES + 2 * self._drain_limit:
            # Framing or trailers that go on and on: stop here and close the connection.
            self._settle(reusable=False)

    def _settle(self, *, reusable: bool) -> Response:
        self._response = Response(self._status, self._headers, self._kept, reusable)
        return self._response

    def _fail(self, problem: str) -> _StopReading:
        self._failure = BadResponse(problem)
        return _StopReading()

    # --- llhttp callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._response is not None:
            # A message after the response: nobody asked for it, and the connection that
            # carried it cannot be trusted with the next request.
            self._settle(reusable=False)
            raise _StopReading
        self._headers = {}
        self._head_bytes = 0
        self._header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_body:
            self._on_trailer(name, value)
            return
        self._header_count += 1
        if self._header_count > MAX_HEADERS:
            raise self._fail(f"more than {MAX_HEADERS} response headers")
        self._head_bytes += len(name) + len(value)
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1").strip()

    def on_headers_complete(self) -> None:
        if self._head_bytes + HEADER_LINE_OVERHEAD_BYTES * self._header_count > MAX_HEAD_BYTES:
            raise self._fail(f"response head longer than {MAX_HEAD_BYTES} bytes")
        parser = self._parser
        version = parser.get_http_version()
        if version not in SUPPORTED_VERSIONS:
            raise self._fail(f"unsupported HTTP version {version}")
        status = parser.get_status_code()
        if not 100 <= status <= 599:
            raise self._fail(f"status {status} out of range")
        if status == 101:
            raise self._fail("the receiver switched protocols (101)")
        if status < 200:
            self._interim_responses += 1
            if self._interim_responses > MAX_INTERIM_RESPONSES:
                raise self._fail(f"more than {MAX_INTERIM_RESPONSES} interim responses")
            return
        self._status = status
        self._in_body = True

    def on_body(self, body: bytes) -> None:
        room = self._keep_bytes - len(self._kept)
        if room > 0:
            self._kept += body[:room]
        self._body_bytes += len(body)
        if self._body_bytes > self._drain_limit:
            # Reading on would cost more than a new connection: stop and close this one.
            self._settle(reusable=False)
            raise _StopReading

    def on_message_complete(self) -> None:
        if self._in_body and self._response is None:
            self._settle(reusable=self._parser.should_keep_alive())

    def _on_trailer(self, name: bytes, value: bytes) -> None:
        """Trailers are read past, never merged into the headers; only their size counts."""
        self._head_bytes += len(name) + len(value) + HEADER_LINE_OVERHEAD_BYTES
        if self._head_bytes > MAX_HEAD_BYTES:
            self._settle(reusable=False)
            raise _StopReading
