"""The OpenTelemetry SDK's side of ``shared.ops.tracing``: imported only once tracing is on, so
that a service that does not trace never loads the SDK and its exporter."""

from __future__ import annotations

from types import TracebackType
from typing import Literal

from opentelemetry import trace as otel
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_NAMESPACE, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from shared.model.trace_context import TRACEPARENT, TRACESTATE, TraceContext, trace_context
from shared.ops.tracing import Span

_PROPAGATOR = TraceContextTextMapPropagator()
SpanKind = Literal["PRODUCER", "CONSUMER", "CLIENT"]


def exporting_provider(service_name: str, traces_url: str) -> TracerProvider:
    """A provider whose spans go to ``traces_url`` over OTLP/HTTP, in batches."""
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: service_name, SERVICE_NAMESPACE: "clickhook"})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url)))
    return provider


def start(
    tracer: otel.Tracer,
    name: str,
    parent: TraceContext | None,
    kind: SpanKind,
    attributes: dict[str, AttributeValue],
) -> Span:
    """A span of ``tracer``, child of ``parent`` (none: a new trace)."""
    span = tracer.start_span(name, _parent(parent), kind=otel.SpanKind[kind], attributes=attributes)
    return _Exported(span)


class _Exported(Span):
    """A span of the SDK's, ended (and so queued for export) when the block ends."""

    __slots__ = ("_span",)

    def __init__(self, span: otel.Span) -> None:
        super().__init__(_context_of(span))
        self._span = span

    def attempted(self, status: int | None, outcome: str) -> None:
        if status is not None:
            self._span.set_attribute("http.response.status_code", status)
        self._span.set_attribute("clickhook.outcome", outcome)
        if outcome != "success":
            self._span.set_status(otel.Status(otel.StatusCode.ERROR, outcome))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self._span.record_exception(exc)
            self._span.set_status(otel.Status(otel.StatusCode.ERROR, type(exc).__name__))
        self._span.end()


def _context_of(span: otel.Span) -> TraceContext | None:
    """The context a span passes on, as the W3C headers carry it."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=otel.set_span_in_context(span))
    return trace_context(carrier.get(TRACEPARENT), carrier.get(TRACESTATE))


def _parent(context: TraceContext | None) -> Context:
    """The parent of a new span: the context that came in, or none (a new trace). Never the
    SDK's implicit current span: each step names its parent."""
    if context is None:
        return Context()
    carrier = {TRACEPARENT: context.traceparent}
    if context.tracestate:
        carrier[TRACESTATE] = context.tracestate
    return _PROPAGATOR.extract(carrier, context=Context())
