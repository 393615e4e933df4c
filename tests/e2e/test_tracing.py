"""A click's trace context across Kafka: to the receiver, through a retry, and as OTLP spans."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from standardwebhooks.webhooks import Webhook

from tests.e2e.conftest import ACCOUNT_ID, PUBLISH_TOKEN, StartPipeline
from tests.support.clicks import make_click
from tests.support.otlp import ExportedSpan, OtlpReceiver
from tests.support.receiver import Receiver

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"
TRACESTATE = "shortener=lnk9,congo=t61rcWkgMzE"


@pytest.fixture(name="otlp")
async def fixture_otlp() -> AsyncIterator[OtlpReceiver]:
    collector = OtlpReceiver()
    await collector.start()
    yield collector
    await collector.stop()


@pytest.fixture(name="failing_once")
async def fixture_failing_once() -> AsyncIterator[Receiver]:
    """Its first request fails: the click also goes through a retry tier and the retry service."""
    receiver = Receiver(respond=lambda _request, n: 503 if n == 0 else 200)
    await receiver.start()
    yield receiver
    await receiver.stop()


def one(spans: list[ExportedSpan], name: str, service: str) -> ExportedSpan:
    [span] = [s for s in spans if s.name == name and s.service == f"clickhook-{service}"]
    return span


async def test_one_clicks_spans_chain_from_the_request_to_each_attempt_and_its_receiver(
    start_pipeline: StartPipeline, otlp: OtlpReceiver, failing_once: Receiver
) -> None:
    pipeline = await start_pipeline(
        CLICKHOOK_RETRY_SCHEDULE="1s",
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp.base_url,
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    endpoint = await pipeline.create_endpoint(failing_once.url("/traced"))
    async with pipeline.session.post(
        f"{pipeline.ingest_url}/v1/clicks",
        json=make_click("evt_traced", account_id=ACCOUNT_ID),
        headers={
            "authorization": f"Bearer {PUBLISH_TOKEN}",
            "traceparent": TRACEPARENT,
            "tracestate": TRACESTATE,
        },
    ) as response:
        assert response.status == 202, await response.text()

    first, second = await failing_once.wait_for(2, timeout_s=20)
    spans = await otlp.wait_for_spans(TRACE_ID, 5, timeout_s=10)

    publish = one(spans, "publish", "ingest")
    dispatched = one(spans, "deliver", "dispatcher")
    retried = one(spans, "deliver", "retry")
    attempts = {
        span.attributes["clickhook.attempt"]: span for span in spans if span.name == "attempt"
    }
    assert publish.parent_span_id == CALLER_SPAN_ID
    assert dispatched.parent_span_id == publish.span_id
    assert retried.parent_span_id == dispatched.span_id
    assert attempts[1].parent_span_id == dispatched.span_id
    assert attempts[2].parent_span_id == retried.span_id
    assert attempts[1].attributes["http.response.status_code"] == 503
    assert attempts[2].attributes["clickhook.outcome"] == "success"
    assert dispatched.attributes["clickhook.endpoint_id"] == endpoint["id"]
    # Each request carries its own attempt's context, beside intact signature headers.
    for arrival, attempt in ((first, attempts[1]), (second, attempts[2])):
        assert arrival.headers["traceparent"] == f"00-{TRACE_ID}-{attempt.span_id}-01"
        assert arrival.headers["tracestate"] == TRACESTATE
        Webhook(endpoint["secret"]).verify(arrival.body, arrival.headers)
