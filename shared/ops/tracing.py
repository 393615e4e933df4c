"""Spans of a click's way through clickhook, exported over OTLP when asked for.

A click's W3C trace context (``shared.model.trace_context``) travels with it: from ingest's
request (or the ``clicks`` record a shortener produced) in the record's headers, from there on
each retry and dead-letter record, and out on each webhook request as ``traceparent``. With
``OTEL_EXPORTER_OTLP_ENDPOINT`` set, each step is a span, child of the one before, and the
context carried on is the new span's:

- ``publish`` (ingest, producer): one POST /v1/clicks, child of the request's ``traceparent``;
- ``deliver`` (dispatcher or retry, consumer): one delivery to one endpoint from one record,
  child of the record's context (the click's, or the ``deliver`` span that handed it to a tier);
- ``attempt`` (client): one webhook request, child of its ``deliver``; its context is the
  ``traceparent`` the receiver gets.

Off (the default) there are no spans at all: the context read in is passed on unchanged, and
each step costs what building a ``Span(parent)`` costs. What tracing adds per delivery in the
dispatcher (``python -m tests.bench.tracing``: best of 5 runs of 100,000, on the 2-core machine
while it was busy, load 5; rendering and signing the same request took 11 µs in that run):

- off, a record without ``traceparent``: 2.0 µs, under 1 % of the dispatcher's 0.22 ms of CPU
  per delivery (docs/performance.md);
- off, a record with ``traceparent`` and ``tracestate`` (checked, passed on): 6.9 µs;
- on (two spans, the SDK's batch processor): 246 µs, most of it the SDK's own (62 µs a span
  started and ended with the processor, 14 µs without it): about twice the dispatcher's CPU.
  A sampler (``OTEL_TRACES_SAMPLER=parentbased_traceidratio``) keeps unsampled spans away from
  the processor, the larger part of that cost.

The SDK is imported only when tracing is on (``tracing_sdk``): off, a service never loads it
(some 3 MB of memory and 0.4 s of start in each service).

Spans are handed to a ``BatchSpanProcessor`` (a thread of its own, a bounded queue: a collector
that is down costs dropped spans, never memory or the event loop). The SDK reads its own
variables (``OTEL_BSP_*``, ``OTEL_EXPORTER_OTLP_HEADERS``, ``_TIMEOUT``, ``_COMPRESSION``,
``OTEL_TRACES_SAMPLER``, ``OTEL_RESOURCE_ATTRIBUTES``); the switch and the collector's address
are in the settings.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Self

import structlog

from shared.model.messages import DeliveryEnvelope
from shared.model.trace_context import TraceContext
from shared.ops.settings import Settings

if TYPE_CHECKING:
    from opentelemetry import trace as otel
    from opentelemetry.util.types import AttributeValue

log = structlog.get_logger(__name__)

TRACES_PATH = "/v1/traces"
# Set for the life of ``tracing()`` when an OTLP endpoint is configured; None: tracing is off.
_tracer: otel.Tracer | None = None


class Span:
    """A step of a click's trace. This base class is what tracing off gives: no span, only the
    parent's context carried on (``context``)."""

    __slots__ = ("context",)

    def __init__(self, context: TraceContext | None) -> None:
        self.context = context

    def attempted(self, status: int | None, outcome: str) -> None:
        """An attempt's result (tracing off: nothing to record)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


def publish_span(parent: TraceContext | None, *, topic: str, events: int) -> Span:
    """ingest: one request's clicks published to ``topic``."""
    if _tracer is None:
        return Span(parent)
    attributes: dict[str, AttributeValue] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.destination.name": topic,
        "messaging.batch.message_count": events,
    }
    from shared.ops import tracing_sdk  # noqa: PLC0415 - loaded once tracing is on

    return tracing_sdk.start(_tracer, "publish", parent, "PRODUCER", attributes)


def deliver_span(parent: TraceContext | None, envelope: DeliveryEnvelope, *, service: str) -> Span:
    """dispatcher or retry: one delivery of a click to an endpoint, from one record."""
    if _tracer is None:
        return Span(parent)
    attributes: dict[str, AttributeValue] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "clickhook.service": service,
        "clickhook.event_id": envelope.event_id,
        "clickhook.endpoint_id": envelope.endpoint_id,
        "clickhook.webhook_id": envelope.webhook_id,
        "clickhook.attempts_made": envelope.attempts_made,
    }
    from shared.ops import tracing_sdk  # noqa: PLC0415 - loaded once tracing is on

    return tracing_sdk.start(_tracer, "deliver", parent, "CONSUMER", attributes)


def attempt_span(parent: TraceContext | None, *, attempt: int) -> Span:
    """One webhook request; its context is the ``traceparent`` the receiver gets."""
    if _tracer is None:
        return Span(parent)
    attributes: dict[str, AttributeValue] = {
        "http.request.method": "POST",
        "clickhook.attempt": attempt,
    }
    from shared.ops import tracing_sdk  # noqa: PLC0415 - loaded once tracing is on

    return tracing_sdk.start(_tracer, "attempt", parent, "CLIENT", attributes)


def traces_url(endpoint: str) -> str:
    """Where spans are POSTed: the OTLP base URL with the traces path, as the OTel spec says
    for ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
    return endpoint.rstrip("/") + TRACES_PATH


@contextlib.asynccontextmanager
async def tracing(settings: Settings, service: str) -> AsyncIterator[None]:
    """Spans of ``service`` exported for the block's duration, when an OTLP endpoint is set;
    on the way out the spans still queued are sent (off the event loop)."""
    global _tracer  # noqa: PLW0603 - configured once per process, like logging
    if not settings.otlp_endpoint:
        yield
        return
    from shared.ops import tracing_sdk  # noqa: PLC0415 - only when tracing is on (see above)

    url = traces_url(settings.otlp_endpoint)
    provider = tracing_sdk.exporting_provider(f"clickhook-{service}", url)
    _tracer = provider.get_tracer("clickhook")
    log.info("tracing_enabled", otlp_traces_url=url)
    try:
        yield
    finally:
        _tracer = None
        await asyncio.to_thread(provider.shutdown)
