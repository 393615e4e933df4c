"""W3C trace context from untrusted headers: kept when valid, dropped whole when not."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from standardwebhooks.webhooks import Webhook

from shared.delivery.http_response import Response
from shared.delivery.sender import Sender
from shared.model.trace_context import (
    MAX_TRACESTATE_CHARS,
    TraceContext,
    from_http,
    from_record,
    trace_context,
)
from tests.support.endpoints import endpoint_to

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"


def test_a_valid_traceparent_and_tracestate_are_kept_with_their_ids() -> None:
    context = trace_context(f" {TRACEPARENT} ", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")

    assert context == TraceContext(TRACEPARENT, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
    assert (context.trace_id, context.span_id) == (TRACE_ID, SPAN_ID)


@pytest.mark.parametrize(
    "traceparent",
    [
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",  # upper case
        f"00-{'0' * 32}-{SPAN_ID}-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id
        f"ff-{TRACE_ID}-{SPAN_ID}-01",  # the invalid version
        f"00-{TRACE_ID}-{SPAN_ID}-01-extra",  # version 00 has exactly four fields
        f"01-{TRACE_ID}-{SPAN_ID}-01x",  # a later version's extra fields follow a dash
        f"00-{TRACE_ID}-{SPAN_ID}-01\r\nx-injected: 1",  # would smuggle a header
    ],
)
def test_an_invalid_traceparent_is_dropped_with_its_tracestate(traceparent: str) -> None:
    assert trace_context(traceparent, "rojo=1") is None


def test_a_later_versions_extra_fields_are_not_passed_on() -> None:
    context = trace_context(f"cc-{TRACE_ID}-{SPAN_ID}-01-what-the-future-holds", None)

    assert context == TraceContext(f"cc-{TRACE_ID}-{SPAN_ID}-01")


def test_a_tracestate_at_its_limit_is_kept_and_one_past_it_is_dropped_alone() -> None:
    at_limit = "k=" + "v" * (MAX_TRACESTATE_CHARS - 2)

    assert trace_context(TRACEPARENT, at_limit) == TraceContext(TRACEPARENT, at_limit)
    assert trace_context(TRACEPARENT, at_limit + "v") == TraceContext(TRACEPARENT)


@pytest.mark.parametrize("tracestate", ["k=v\r\nx-injected: 1", "k=vé", "k=\x00", "  "])
def test_a_tracestate_that_is_not_printable_ascii_is_dropped_alone(tracestate: str) -> None:
    assert trace_context(TRACEPARENT, tracestate) == TraceContext(TRACEPARENT)


# Mostly valid shapes with anything after them, and anything at all.
UNTRUSTED = st.one_of(st.text(max_size=60), st.text(max_size=20).map(lambda t: TRACEPARENT + t))


@settings(max_examples=50)
@given(UNTRUSTED, st.one_of(st.none(), st.text(max_size=60)))
def test_whatever_comes_in_what_goes_out_is_printable_ascii(
    traceparent: str, tracestate: str | None
) -> None:
    context = trace_context(traceparent, tracestate)
    if context is not None:
        headers: dict[str, str] = {}
        context.add_to(headers)
        assert all(" " <= c <= "~" for value in headers.values() for c in value)


def test_http_header_names_are_case_insensitive() -> None:
    headers = CIMultiDict({"TraceParent": TRACEPARENT, "TRACESTATE": "k=v"})

    assert from_http(headers) == TraceContext(TRACEPARENT, "k=v")
    assert from_http(CIMultiDict()) is None


def test_record_headers_round_trip_and_a_value_not_ascii_is_none() -> None:
    context = TraceContext(TRACEPARENT, "k=v")

    assert from_record(context.record_headers()) == context
    assert from_record([("traceparent", "é".encode()), ("other", None)]) is None
    assert from_record([("traceparent", TRACEPARENT.encode()), ("tracestate", None)]) == (
        TraceContext(TRACEPARENT)
    )


class RecordingClient:
    """Answers 200 and keeps the headers of each request."""

    def __init__(self) -> None:
        self.requests: list[tuple[Mapping[str, str], bytes]] = []

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> Response:
        self.requests.append((dict(headers), body))
        return Response(200, {}, b"", reusable=True)


async def test_the_webhook_request_carries_the_context_and_still_verifies() -> None:
    client = RecordingClient()
    endpoint = endpoint_to("https://hooks.example.com/x")

    result = await Sender(client).attempt(  # type: ignore[arg-type]
        endpoint,
        {"id": "evt_1"},
        webhook_id="msg_1",
        event_id="evt_1",
        attempt=1,
        trace=TraceContext(TRACEPARENT, "k=v"),
    )

    [(headers, body)] = client.requests
    assert (headers["traceparent"], headers["tracestate"]) == (TRACEPARENT, "k=v")
    Webhook(endpoint.secrets[0].secret).verify(body, dict(headers))
    assert result.record.request_headers is not None
    assert result.record.request_headers["traceparent"] == TRACEPARENT


def test_the_context_replaces_no_header_a_request_already_has() -> None:
    headers = {"traceparent": "set by the endpoint", "webhook-id": "msg_1"}

    TraceContext(TRACEPARENT, "k=v").add_to(headers)

    assert headers == {
        "traceparent": "set by the endpoint",
        "webhook-id": "msg_1",
        "tracestate": "k=v",
    }
