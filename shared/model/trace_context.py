"""W3C Trace Context as a click carries it: ``traceparent`` and ``tracestate``, read from an
HTTP request or a Kafka record, passed on in record headers and on each webhook request.

Both come from outside (the shortener's request, any producer's record) and go out verbatim on
requests to customers' endpoints when tracing is off, so they are checked here, once, as they
come in: a ``traceparent`` that is not the W3C shape, or whose ids are all zeros, is dropped with
its ``tracestate`` (as the W3C spec says a receiver does); a ``tracestate`` longer than
``MAX_TRACESTATE_CHARS`` or with a character outside printable ASCII is dropped alone. Nothing
that could end a header line or smuggle another one gets through.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import NamedTuple

# The same names in HTTP headers and Kafka record headers (as OpenTelemetry's Kafka
# instrumentations use them).
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# The W3C spec lets a vendor cut a longer tracestate; dropping it whole keeps the rest valid.
MAX_TRACESTATE_CHARS = 512

# version-trace_id-parent_id-flags; version ff is invalid. A later version may append fields
# after a dash: they are not ours to forward, so only the four known fields are kept.
_TRACEPARENT = re.compile(r"(?!ff)[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_TRACEPARENT_LENGTH = 55
_TRACESTATE = re.compile(r"[\x20-\x7e]*")
_ZERO_TRACE_ID = "0" * 32
_ZERO_SPAN_ID = "0" * 16


class TraceContext(NamedTuple):
    """A valid ``traceparent`` and, when one came with it, a valid ``tracestate`` (a named
    tuple: built for every traced record, at a third of a frozen dataclass's cost)."""

    traceparent: str
    tracestate: str | None = None

    @property
    def trace_id(self) -> str:
        return self.traceparent[3:35]

    @property
    def span_id(self) -> str:
        return self.traceparent[36:52]

    def record_headers(self) -> list[tuple[str, bytes]]:
        headers = [(TRACEPARENT, self.traceparent.encode())]
        if self.tracestate:
            headers.append((TRACESTATE, self.tracestate.encode()))
        return headers

    def add_to(self, headers: dict[str, str]) -> None:
        """Add to a request's headers, replacing none it already has (signatures, content
        type, the endpoint's own headers)."""
        headers.setdefault(TRACEPARENT, self.traceparent)
        if self.tracestate:
            headers.setdefault(TRACESTATE, self.tracestate)


def trace_context(traceparent: str | None, tracestate: str | None) -> TraceContext | None:
    """The context the two headers give, or None when ``traceparent`` is missing or invalid."""
    if traceparent is None:
        return None
    text = traceparent.strip()
    match = _TRACEPARENT.match(text)
    if match is None:
        return None
    known = match.group()
    rest = text[_TRACEPARENT_LENGTH:]
    if rest and (known.startswith("00") or not rest.startswith("-")):
        return None
    context = TraceContext(known, _valid_tracestate(tracestate))
    if context.trace_id == _ZERO_TRACE_ID or context.span_id == _ZERO_SPAN_ID:
        return None
    return context


def _valid_tracestate(tracestate: str | None) -> str | None:
    if tracestate is None:
        return None
    stripped = tracestate.strip()
    if not stripped or len(stripped) > MAX_TRACESTATE_CHARS:
        return None
    return stripped if _TRACESTATE.fullmatch(stripped) else None


def from_http(headers: Mapping[str, str]) -> TraceContext | None:
    """The trace context of an HTTP request (header names case-insensitive, as aiohttp's)."""
    traceparent = headers.get(TRACEPARENT)
    if traceparent is None:  # the common case: one lookup, nothing else
        return None
    return trace_context(traceparent, headers.get(TRACESTATE))


def from_record(headers: Iterable[tuple[str, bytes | None]]) -> TraceContext | None:
    """The trace context of a Kafka record's headers (a value that is not ASCII is none)."""
    traceparent: str | None = None
    tracestate: str | None = None
    for key, value in headers:
        if value is None or key not in (TRACEPARENT, TRACESTATE):
            continue
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            continue
        if key == TRACEPARENT:
            traceparent = text
        else:
            tracestate = text
    return trace_context(traceparent, tracestate)
