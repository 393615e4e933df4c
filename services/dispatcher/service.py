"""The dispatcher: consumes ``clicks``, fans each out to matching endpoints, delivers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer

from shared.delivery.deliverer import Deliverer
from shared.delivery.endpoint_gate import EndpointGate
from shared.kafka.clients import Record, set_aside, set_aside_batch
from shared.kafka.endpoint_store import EndpointStore
from shared.kafka.undecodable import UndecodableBatch
from shared.model.envelopes import first_envelope
from shared.model.errors import InvalidClick, InvalidClickReason
from shared.model.filters import endpoint_wants
from shared.model.messages import ClickEvent, DeliveryEnvelope, Endpoint, decode_stored_click
from shared.model.topics import HEADER_ENDPOINT, Topics, endpoints_at, header_value
from shared.model.trace_context import TraceContext, from_record
from shared.ops import metrics, tracing
from shared.ops.logging import bind_delivery
from shared.ops.metrics import EndpointTableWaitOutcome, Service
from shared.ops.settings import Settings

SERVICE: Service = "dispatcher"
UNDECODABLE_BATCH: InvalidClickReason = "undecodable_batch"
# The longest a click waits for the endpoint table to read as far as ingest's had when it
# accepted the click (``clickhook-endpoints-at``). The follower is a few milliseconds behind at
# most when it is well; one that is not (its partition's leader unreachable from here alone)
# costs each click this much, and the click then goes to the endpoints the table holds.
ENDPOINT_TABLE_WAIT_S = 2.0
log = structlog.get_logger(__name__)


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        *,
        producer: AIOKafkaProducer,
        endpoints: EndpointStore,
        deliverer: Deliverer,
        gate: EndpointGate,
    ) -> None:
        self._settings = settings
        self._topics = Topics(settings.topic_prefix)
        self._producer = producer
        self._endpoints = endpoints
        self._deliverer = deliverer
        self._gate = gate
        self._deliveries = asyncio.Semaphore(settings.max_in_flight)
        # Read when scraped: a gauge's inc and dec (a lock each) on every delivery showed up
        # in profiles.
        self._in_flight = 0
        metrics.DELIVERIES_IN_FLIGHT.labels(service=SERVICE).set_function(lambda: self._in_flight)
        # The tasks in an attempt, and those of them ``defer_running`` interrupted.
        self._attempting: set[asyncio.Task[Any]] = set()
        self._interrupted: set[asyncio.Task[Any]] = set()

    async def handle(self, record: Record) -> None:
        """Finish one ``clicks`` record: every delivery done or durably handed off."""
        try:
            event = decode_stored_click(record, now=datetime.now(UTC))
        except InvalidClick as exc:
            await self._set_aside(record, exc)
            return
        stamp = endpoints_at(record.headers)
        if stamp is not None and not self._endpoints.has_reached(stamp):
            await self._wait_for_table(stamp)
        targets = self._targets(record, event)
        trace = from_record(record.headers)
        if len(targets) == 1:
            # No task to spawn for the common case: the record's own task carries it.
            await self._deliver(targets[0], event, trace)
        elif targets:
            # gather wraps each in a task of its own, as bind_delivery requires.
            await asyncio.gather(*(self._deliver(endpoint, event, trace) for endpoint in targets))

    async def _wait_for_table(self, stamp: int) -> None:
        """Until the endpoint table has read what ingest's had read when it accepted the click:
        an endpoint created just before is then one of the click's targets."""
        reached = await self._endpoints.reached(stamp, ENDPOINT_TABLE_WAIT_S)
        outcome: EndpointTableWaitOutcome = "reached" if reached else "timed_out"
        metrics.ENDPOINT_TABLE_WAITS.labels(outcome=outcome).inc()

    def _targets(self, record: Record, event: ClickEvent) -> list[Endpoint]:
        """The account's endpoints that want the click; only the named one for a click
        addressed to one endpoint (a test event), which then skips the filters."""
        addressed = header_value(record.headers, HEADER_ENDPOINT)
        if addressed is None:
            return [
                endpoint
                for endpoint in self._endpoints.table.for_account(event.account_id)
                if endpoint_wants(endpoint, event)
            ]
        endpoint = self._endpoints.table.get(addressed)
        if endpoint is None or not endpoint.enabled or endpoint.account_id != event.account_id:
            log.info("addressed_endpoint_unavailable", endpoint_id=addressed, event_id=event.id)
            return []
        return [endpoint]

    async def _deliver(
        self, endpoint: Endpoint, event: ClickEvent, trace: TraceContext | None
    ) -> None:
        envelope = first_envelope(endpoint, event)
        bind_delivery(envelope)
        with tracing.deliver_span(trace, envelope, service=SERVICE) as span:
            await self._attempt_or_defer(endpoint, envelope, span.context)

    async def _attempt_or_defer(
        self, endpoint: Endpoint, envelope: DeliveryEnvelope, trace: TraceContext | None
    ) -> None:
        if not await self._gate.enter(endpoint.id, endpoint.rate_limit_per_s):
            await self._deliverer.defer(
                envelope, "endpoint_busy", rate_limit_per_s=endpoint.rate_limit_per_s, trace=trace
            )
            return
        try:
            async with self._deliveries:
                self._in_flight += 1
                try:
                    await self._attempt(endpoint, envelope, trace)
                finally:
                    self._in_flight -= 1
        finally:
            self._gate.leave(endpoint.id)

    async def _attempt(
        self, endpoint: Endpoint, envelope: DeliveryEnvelope, trace: TraceContext | None
    ) -> None:
        """One attempt, which a drain can interrupt and still finish the record: deferred to
        the first tier (see ``defer_running``). It runs in the task that carries the delivery,
        registered while it does: a task of its own for every attempt cost a task and a loop
        turn per delivery."""
        task = asyncio.current_task()
        assert task is not None  # always awaited inside a task
        self._attempting.add(task)
        try:
            await self._deliverer.deliver(endpoint, envelope, trace)
        except asyncio.CancelledError:
            # Interrupted by ``defer_running`` alone (a second cancel, the drain's last resort
            # or a caller's, goes on as a cancel).
            if task not in self._interrupted or task.cancelling() > 1:
                raise
            task.uncancel()
            await self._deliverer.defer(envelope, "draining", trace=trace)
            log.info("delivery_deferred_at_drain")
        finally:
            self._attempting.discard(task)
            self._interrupted.discard(task)

    def defer_running(self) -> None:
        """At the end of the drain grace: interrupt the attempts still running; each delivery
        is then deferred to the first retry tier, and its record can be committed."""
        for task in self._attempting - self._interrupted:
            self._interrupted.add(task)
            task.cancel()

    async def _set_aside(self, record: Record, exc: InvalidClick) -> None:
        """Bad input is never dropped: the original bytes go to ``clicks.invalid``."""
        reason = "; ".join(f"{p.field}: {p.problem}" for p in exc.problems)[:1000]
        source = await set_aside(
            self._producer, self._topics.clicks_invalid, record, f"{exc.message}: {reason}"
        )
        metrics.INVALID_RECORDS.labels(reason=exc.reason).inc()
        log.warning("click_set_aside", source=source, reason=reason)

    async def set_aside_undecodable(self, batch: UndecodableBatch) -> None:
        """A batch of ``clicks`` nobody can decode is skipped (shared.kafka.undecodable) but
        kept, as stored, in ``clicks.invalid``, like any click that does not validate."""
        source = await set_aside_batch(self._producer, self._topics.clicks_invalid, batch)
        metrics.INVALID_RECORDS.labels(reason=UNDECODABLE_BATCH).inc()
        log.warning("click_batch_set_aside", source=source, reason=batch.reason)
