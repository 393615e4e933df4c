"""Spans: none at all when tracing is off; when on, each step a child of the one before."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from shared.model.envelopes import first_envelope
from shared.model.messages import DeliveryEnvelope, validate_click
from shared.model.trace_context import TraceContext
from shared.ops import tracing
from shared.ops.settings import Settings
from tests.support.clicks import make_click
from tests.support.endpoints import endpoint_to

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = TraceContext(f"00-{TRACE_ID}-00f067aa0ba902b7-01", "k=v")


@pytest.fixture(name="envelope")
def fixture_envelope() -> DeliveryEnvelope:
    click = validate_click(make_click("evt_1"), now=datetime.now(UTC))
    return first_envelope(endpoint_to("https://hooks.example.com/x"), click)


@pytest.fixture(name="exported")
def fixture_exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on, each span exported as it ends, into memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    yield exporter
    provider.shutdown()


def test_off_each_step_carries_the_context_it_came_with(envelope: DeliveryEnvelope) -> None:
    with tracing.publish_span(CALLER, topic="clicks", events=1) as published:
        assert published.context is CALLER
    with tracing.deliver_span(None, envelope, service="dispatcher") as delivering:
        assert delivering.context is None
    with tracing.attempt_span(CALLER, attempt=1) as attempting:
        attempting.attempted(503, "failed")
        assert attempting.context is CALLER
    assert type(attempting) is tracing.Span


def test_on_each_step_is_a_child_of_the_one_before_in_the_callers_trace(
    envelope: DeliveryEnvelope, exported: InMemorySpanExporter
) -> None:
    with tracing.publish_span(CALLER, topic="clicks", events=1) as published:
        pass
    with (
        tracing.deliver_span(published.context, envelope, service="dispatcher") as delivering,
        tracing.attempt_span(delivering.context, attempt=1) as attempting,
    ):
        attempting.attempted(503, "failed")

    spans = {span.name: span for span in exported.get_finished_spans()}
    assert [span.context.trace_id for span in spans.values()] == [int(TRACE_ID, 16)] * 3
    assert spans["publish"].parent.span_id == int("00f067aa0ba902b7", 16)  # type: ignore[union-attr]
    assert spans["deliver"].parent.span_id == spans["publish"].context.span_id  # type: ignore[union-attr]
    assert spans["attempt"].parent.span_id == spans["deliver"].context.span_id  # type: ignore[union-attr]
    assert attempting.context is not None
    assert attempting.context.span_id == f"{spans['attempt'].context.span_id:016x}"
    assert attempting.context.tracestate == "k=v"
    assert spans["attempt"].attributes == {
        "http.request.method": "POST",
        "clickhook.attempt": 1,
        "http.response.status_code": 503,
        "clickhook.outcome": "failed",
    }
    assert spans["attempt"].status.status_code is StatusCode.ERROR
    assert spans["deliver"].attributes is not None
    assert spans["deliver"].attributes["clickhook.webhook_id"] == envelope.webhook_id


def test_on_a_click_without_a_context_starts_a_trace_and_an_exception_marks_the_span(
    envelope: DeliveryEnvelope, exported: InMemorySpanExporter
) -> None:
    with (
        pytest.raises(TimeoutError),
        tracing.deliver_span(None, envelope, service="retry") as delivering,
    ):
        raise TimeoutError

    [span] = exported.get_finished_spans()
    assert span.parent is None
    assert delivering.context is not None
    assert delivering.context.trace_id == f"{span.context.trace_id:032x}"
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]


async def test_tracing_is_on_only_inside_the_block_and_only_with_an_endpoint() -> None:
    async with tracing.tracing(Settings(), "ingest"):
        assert tracing._tracer is None
    async with tracing.tracing(Settings(otlp_endpoint="http://127.0.0.1:4318/"), "ingest"):
        assert tracing._tracer is not None
    assert tracing._tracer is None


def test_spans_go_to_the_traces_path_of_the_base_url() -> None:
    assert tracing.traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert tracing.traces_url("https://otel.example/base") == "https://otel.example/base/v1/traces"
