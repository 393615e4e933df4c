"""Reads one HTTP/1.1 response from the bytes a connection receives. Pure; no I/O.

A webhook sender needs little of a response: the status, a header or two (Retry-After) and
the first bytes of the body for the attempt log. So the parser keeps the first ``keep_bytes``
of the body and reads on, discarding, only up to ``drain_limit``: a body that ends by then
leaves the connection reusable; one that does not (or has no length) ends the exchange early
and the connection is closed rather than drained.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto

from shared.model.errors import BadResponse, ConnectionClosed

MAX_HEAD_BYTES = 32 * 1024
MAX_HEADERS = 128
MAX_CHUNK_LINE_BYTES = 1024
HEAD_END = b"\r\n\r\n"
CRLF = b"\r\n"
BODYLESS_STATUSES = frozenset({204, 304})


class _State(Enum):
    HEAD = auto()
    LENGTH = auto()
    CHUNK_SIZE = auto()
    CHUNK_DATA = auto()
    CHUNK_END = auto()
    TRAILERS = auto()
    UNTIL_CLOSE = auto()
    DONE = auto()


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its last value
    body: bytes  # the first keep_bytes of the body
    reusable: bool  # read to its end on a keep-alive connection


class ResponseParser:
    __slots__ = (
        "_body_bytes",
        "_buffer",
        "_drain_limit",
        "_finished_message",
        "_headers",
        "_keep_alive",
        "_keep_bytes",
        "_kept",
        "_received_any",
        "_remaining",
        "_state",
        "_status",
    )

    def __init__(self, *, keep_bytes: int, drain_limit: int) -> None:
        self._keep_bytes = keep_bytes
        self._drain_limit = drain_limit
        self._state = _State.HEAD
        self._buffer = bytearray()
        self._received_any = False
        self._status = 0
        self._headers: dict[str, str] = {}
        self._keep_alive = False
        self._kept = bytearray()
        self._body_bytes = 0
        self._remaining = 0  # of the body (content-length) or of the current chunk
        self._finished_message = False

    def feed(self, data: bytes) -> bool:
        """Take bytes as they arrive; True once the response is ready (see ``response``)."""
        self._received_any = self._received_any or bool(data)
        self._buffer += data
        position = 0
        while self._state is not _State.DONE:
            advanced = self._step(position)
            if advanced == position:
                break
            position = advanced
        del self._buffer[:position]
        return self._state is _State.DONE

    def feed_eof(self) -> None:
        """The connection closed. Before the head ended that is a failed exchange; after it,
        the response ends here with what arrived (a body without a length ends this way)."""
        if self._state is _State.DONE:
            return
        if self._state is _State.HEAD:
            raise ConnectionClosed(answered=self._received_any)
        self._finish(message_complete=False)

    def response(self) -> Response:
        if self._state is not _State.DONE:
            raise RuntimeError("the response is not complete yet")
        return Response(
            status=self._status,
            headers=self._headers,
            body=bytes(self._kept),
            reusable=self._finished_message and self._keep_alive,
        )

    # --- states ----------------------------------------------------------------------------

    def _step(self, at: int) -> int:
        """Advance from buffer position ``at``; returns the new position (same: need more)."""
        match self._state:
            case _State.HEAD:
                return self._read_head(at)
            case _State.LENGTH | _State.UNTIL_CLOSE:
                return self._read_body(at)
            case _State.CHUNK_SIZE:
                return self._read_chunk_size(at)
            case _State.CHUNK_DATA:
                return self._read_chunk_data(at)
            case _State.CHUNK_END:
                return self._read_chunk_end(at)
            case _State.TRAILERS:
                return self._read_trailer(at)
        return at

    def _read_head(self, at: int) -> int:
        end = self._buffer.find(HEAD_END, at)
        if end < 0:
            if len(self._buffer) - at > MAX_HEAD_BYTES:
                raise BadResponse(f"response head longer than {MAX_HEAD_BYTES} bytes")
            return at
        if end - at > MAX_HEAD_BYTES:
            raise BadResponse(f"response head longer than {MAX_HEAD_BYTES} bytes")
        version, self._status = _status_line(bytes(self._buffer[at : self._buffer.find(CRLF, at)]))
        self._headers = _header_fields(bytes(self._buffer[at:end]))
        after = end + len(HEAD_END)
        if 100 <= self._status < 200:
            if self._status == 101:
                raise BadResponse("unexpected 101 Switching Protocols")
            return after  # an interim answer (100 Continue): the real one follows
        self._keep_alive = _keeps_alive(version, self._headers.get("connection", ""))
        self._state = self._body_state()
        if self._state is _State.LENGTH and self._remaining == 0:
            self._finish(message_complete=True)
        return after

    def _body_state(self) -> _State:
        if self._status in BODYLESS_STATUSES:
            self._finish(message_complete=True)
            return _State.DONE
        coding = self._headers.get("transfer-encoding")
        if coding is not None:
            if coding.rsplit(",", 1)[-1].strip().lower() == "chunked":
                return _State.CHUNK_SIZE
            return _State.UNTIL_CLOSE
        length = self._headers.get("content-length")
        if length is None:
            return _State.UNTIL_CLOSE
        self._remaining = _content_length(length)
        return _State.LENGTH

    def _read_body(self, at: int) -> int:
        available = len(self._buffer) - at
        if self._state is _State.LENGTH:
            available = min(available, self._remaining)
            self._remaining -= available
        self._take_body(at, available)
        if self._state is _State.LENGTH and self._remaining == 0:
            self._finish(message_complete=True)
        return at + available

    def _read_chunk_size(self, at: int) -> int:
        end = self._buffer.find(CRLF, at)
        if end < 0:
            if len(self._buffer) - at > MAX_CHUNK_LINE_BYTES:
                raise BadResponse("chunk size line too long")
            return at
        size_text = bytes(self._buffer[at:end]).split(b";", 1)[0].strip()
        try:
            self._remaining = int(size_text, 16)
        except ValueError:
            raise BadResponse(f"bad chunk size {size_text[:20]!r}") from None
        if self._remaining < 0:
            raise BadResponse(f"bad chunk size {size_text[:20]!r}")
        self._state = _State.TRAILERS if self._remaining == 0 else _State.CHUNK_DATA
        return end + len(CRLF)

    def _read_chunk_data(self, at: int) -> int:
        available = min(len(self._buffer) - at, self._remaining)
        self._remaining -= available
        self._take_body(at, available)
        if self._remaining == 0 and self._state is _State.CHUNK_DATA:
            self._state = _State.CHUNK_END
        return at + available

    def _read_chunk_end(self, at: int) -> int:
        if len(self._buffer) - at < len(CRLF):
            return at
        if self._buffer[at : at + len(CRLF)] != CRLF:
            raise BadResponse("chunk not followed by CRLF")
        self._state = _State.CHUNK_SIZE
        return at + len(CRLF)

    def _read_trailer(self, at: int) -> int:
        end = self._buffer.find(CRLF, at)
        if end < 0:
            if len(self._buffer) - at > MAX_HEAD_BYTES:
                raise BadResponse(f"trailer longer than {MAX_HEAD_BYTES} bytes")
            return at
        if end == at:
            self._finish(message_complete=True)
        return end + len(CRLF)

    def _take_body(self, at: int, count: int) -> None:
        room = self._keep_bytes - len(self._kept)
        if room > 0:
            self._kept += self._buffer[at : at + min(room, count)]
        self._body_bytes += count
        if self._body_bytes > self._drain_limit:
            # Reading on would cost more than a new connection: stop here and close this one.
            self._finish(message_complete=False)

    def _finish(self, *, message_complete: bool) -> None:
        self._finished_message = message_complete
        self._state = _State.DONE


def _status_line(line: bytes) -> tuple[bytes, int]:
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3:
        raise BadResponse(f"bad status line {line[:40]!r}")
    if not parts[1].isdigit():
        raise BadResponse(f"bad status line {line[:40]!r}")
    return parts[0], int(parts[1])


def _header_fields(head: bytes) -> dict[str, str]:
    lines = head.split(b"\r\n")[1:]
    if len(lines) > MAX_HEADERS:
        raise BadResponse(f"more than {MAX_HEADERS} response headers")
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise BadResponse(f"bad header line {line[:40]!r}")
        headers[name.decode("latin-1").lower()] = value.strip().decode("latin-1")
    return headers


def _keeps_alive(version: bytes, connection: str) -> bool:
    if not connection:
        return version != b"HTTP/1.0"
    tokens = {token.strip().lower() for token in connection.split(",")}
    if version == b"HTTP/1.0":
        return "keep-alive" in tokens
    return "close" not in tokens


def _content_length(value: str) -> int:
    # "5, 5" is allowed (a repeated header folded by a proxy); "5, 6" is not.
    values = {part.strip() for part in value.split(",")}
    if len(values) != 1:
        raise BadResponse(f"conflicting content-length {value[:40]!r}")
    text = values.pop()
    if not (text.isascii() and text.isdigit()):
        raise BadResponse(f"bad content-length {value[:40]!r}")
    return int(text)
