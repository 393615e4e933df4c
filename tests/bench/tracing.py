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

``make bench`` runs it too (scenario ``tracing``): ``tracing.off_share`` is tracing off as a share
of the dispatcher's CPU per delivery in the same run (target: under 1 %, nothing measurable).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from shared.model.envelopes import first_envelope
from shared.model.formats import build_request
from shared.model.messages import DeliveryEnvelope, validate_click
from shared.model.trace_context import from_record
from shared.ops import tracing
from tests.bench.scenarios import Bench
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


@dataclass(frozen=True, slots=True)
class Costs:
    """Microseconds per delivery, best of the runs."""

    signing_us: float  # rendering and signing the request: the reference
    off_us: float
    off_with_context_us: float
    on_us: float


def measure_costs(deliveries: int, repeat: int) -> Costs:
    """Each case best of ``repeat`` runs; tracing on (about 100 times the cost of off) runs a
    tenth as many deliveries."""
    click = validate_click(make_click("evt_bench"), now=datetime.now(UTC))
    endpoint = endpoint_to("https://hooks.example.com/x")
    envelope = first_envelope(endpoint, click)
    now = datetime.now(UTC)

    def signed(envelope: DeliveryEnvelope, headers: tuple[tuple[str, bytes], ...]) -> None:
        build_request(
            endpoint, envelope.event, webhook_id=envelope.webhook_id, timestamp_s=0, now=now
        )

    def measure(headers: tuple[tuple[str, bytes], ...], count: int) -> float:
        baseline = best_us(untraced, envelope, headers, count, repeat)
        return best_us(traced, envelope, headers, count, repeat) - baseline

    signing_us = best_us(signed, envelope, WITHOUT, deliveries // 10, repeat)
    off_us = measure(WITHOUT, deliveries)
    off_with_context_us = measure(WITH, deliveries)
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Sink(), schedule_delay_millis=100))
    tracing._tracer = provider.get_tracer("bench")
    try:
        on_us = measure(WITH, deliveries // 10)
    finally:
        tracing._tracer = None
        provider.shutdown()
    return Costs(signing_us, off_us, off_with_context_us, on_us)


async def tracing_cost(bench: Bench) -> None:
    """``make bench``'s scenario: what tracing costs a delivery, in ms (the unit of the
    dispatcher's CPU per delivery, against which ``tracing.off_share`` sets it)."""
    deliveries = 20_000 if bench.plan.name == "quick" else 200_000
    for _ in range(bench.plan.repeats):
        costs = measure_costs(deliveries, repeat=3)
        bench.record("tracing.off_ms", costs.off_us / 1000)
        bench.record("tracing.off_with_context_ms", costs.off_with_context_us / 1000)
        bench.record("tracing.on_ms", costs.on_us / 1000)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.tracing", description=__doc__)
    parser.add_argument("--deliveries", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    costs = measure_costs(args.deliveries, args.repeat)
    print(f"{'rendering and signing':28} {costs.signing_us:7.2f} µs per request (the reference)")
    rows = [
        ("off, no context", costs.off_us),
        ("off, a context", costs.off_with_context_us),
        ("on (SDK, batch processor)", costs.on_us),
    ]
    for name, cost_us in rows:
        share = cost_us / costs.signing_us
        print(f"{name:28} {cost_us:7.2f} µs per delivery ({share:.0%} of the reference)")


if __name__ == "__main__":
    main()
