"""What tracing adds to one delivery (issue 25): the dispatcher's trace work for one click to one
endpoint (read the record's context, a ``deliver`` and an ``attempt`` span, the context on the
request), against the same loop without it. No broker, no network: the spans' share alone.

- off, no context: tracing off, a record without ``traceparent`` (the common case);
- off, a context: tracing off, a record with ``traceparent`` and ``tracestate``, passed on;
- on: the OpenTelemetry SDK with the batch processor (its thread exporting to a sink that
  drops the spans), the same record.

Prints microseconds per delivery, best of ``--repeat`` runs of ``--deliveries`` each, and each
as a share of what rendering and signing the same delivery's request costs in the same run (a
fraction of a delivery's CPU: the dispatcher spends 0.22 ms per delivery on a sustained
backlog, docs/performance.md), since a busy machine moves both alike.

    python -m tests.bench.tracing [--deliveries 200000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from shared.model.envelopes import first_envelope
from shared.model.formats import build_request
from shared.model.messages import DeliveryEnvelope, validate_click
from shared.model.trace_context import from_record
from shared.ops import tracing
from tests.support.clicks import make_click
from tests.support.endpoints import endpoint_to

WITHOUT: tuple[tuple[str, bytes], ...] = ()
WITH = (
    ("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    ("tracestate", b"shortener=lnk9"),
)


class Sink(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def traced(envelope: DeliveryEnvelope, headers: tuple[tuple[str, bytes], ...]) -> None:
    """The dispatcher's tracing steps for one delivery, in its order."""
    request: dict[str, str] = {}
    with (
        tracing.deliver_span(from_record(headers), envelope, service="dispatcher") as delivering,
        tracing.attempt_span(delivering.context, attempt=1) as attempting,
    ):
        if attempting.context is not None:
            attempting.context.add_to(request)
        attempting.attempted(200, "success")


def untraced(envelope: DeliveryEnvelope, headers: tuple[tuple[str, bytes], ...]) -> None:
    """The same loop without tracing: the baseline subtracted."""
    request: dict[str, str] = {}
    del envelope, headers, request


def best_us(
    step: Callable[[DeliveryEnvelope, tuple[tuple[str, bytes], ...]], None],
    envelope: DeliveryEnvelope,
    headers: tuple[tuple[str, bytes], ...],
    deliveries: int,
    repeat: int,
) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(deliveries):
            step(envelope, headers)
        best = min(best, time.perf_counter() - started)
    return best / deliveries * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.tracing", description=__doc__)
    parser.add_argument("--deliveries", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    click = validate_click(make_click("evt_bench"), now=datetime.now(UTC))
    envelope = first_envelope(endpoint_to("https://hooks.example.com/x"), click)

    endpoint = endpoint_to("https://hooks.example.com/x")

    def signed(envelope: DeliveryEnvelope, headers: tuple[tuple[str, bytes], ...]) -> None:
        build_request(
            endpoint, envelope.event, webhook_id=envelope.webhook_id, timestamp_s=0, now=now
        )

    now = datetime.now(UTC)
    signing_us = best_us(signed, envelope, WITHOUT, args.deliveries // 10, args.repeat)

    def measure(headers: tuple[tuple[str, bytes], ...]) -> float:
        baseline = best_us(untraced, envelope, headers, args.deliveries, args.repeat)
        return best_us(traced, envelope, headers, args.deliveries, args.repeat) - baseline

    rows = [("off, no context", measure(WITHOUT)), ("off, a context", measure(WITH))]
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Sink(), schedule_delay_millis=100))
    tracing._tracer = provider.get_tracer("bench")
    try:
        rows.append(("on (SDK, batch processor)", measure(WITH)))
    finally:
        tracing._tracer = None
        provider.shutdown()
    print(f"{'rendering and signing':28} {signing_us:7.2f} µs per request (the reference)")
    for name, cost_us in rows:
        share = cost_us / signing_us
        print(f"{name:28} {cost_us:7.2f} µs per delivery ({share:.0%} of the reference)")


if __name__ == "__main__":
    main()
