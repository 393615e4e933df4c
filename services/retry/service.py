"""The retry service: drains the delayed-retry tiers, never before a record is due."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Collection

import msgspec
import structlog
from aiokafka import AIOKafkaProducer, TopicPartition

from services.retry.due import due_at_ms_from_headers
from shared.delivery.deliverer import Deliverer
from shared.delivery.endpoint_gate import EndpointGate
from shared.kafka.clients import Record, set_aside
from shared.kafka.endpoint_store import EndpointStore
from shared.model.messages import DeliveryEnvelope, Endpoint, decode_envelope
from shared.model.operational import OPERATIONAL_ENDPOINT_ID, operational_endpoint
from shared.model.topics import Topics
from shared.model.trace_context import TraceContext, from_record
from shared.ops import metrics, tracing
from shared.ops.logging import bind_delivery
from shared.ops.metrics import Service
from shared.ops.settings import Settings

SERVICE: Service = "retry"
log = structlog.get_logger(__name__)

WAITING_GAUGE_INTERVAL_S = 1.0
# Fetched bytes per partition: a partition paused until its head is due drops what the client
# fetched beyond the records handed over; small fetches keep that small.
PARTITION_FETCH_BYTES = 1024 * 1024


def _now_ms() -> int:
    return int(time.time() * 1000)


class RetryService:
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
        self._waiting_counted_s = 0.0
        self._gate = gate
        self._in_flight = metrics.DELIVERIES_IN_FLIGHT.labels(service=SERVICE)
        self._operational = operational_endpoint(
            settings.operational_webhook_url, settings.operational_webhook_secret
        )

    # --- hooks for the partition worker ---------------------------------------------------

    @staticmethod
    def due_at_ms(record: Record) -> int | None:
        """When a record may be redelivered: never before its due time."""
        return due_at_ms_from_headers(record.headers)

    def count_waiting(self, held: Collection[TopicPartition]) -> None:
        """The partitions paused until their head is due, per tier (at most once a second)."""
        now_s = time.monotonic()
        if now_s - self._waiting_counted_s < WAITING_GAUGE_INTERVAL_S:
            return
        self._waiting_counted_s = now_s
        waiting = Counter(tp.topic for tp in held)
        for topic in self._topics.retry_tiers(self._settings.tier_delays_s):
            metrics.RETRY_WAITING.labels(topic=topic).set(waiting.get(topic, 0))

    # --- one record -----------------------------------------------------------------------

    async def handle(self, record: Record) -> None:
        if record.value is None:
            log.error("retry_record_without_value", topic=record.topic, offset=record.offset)
            return
        try:
            envelope = decode_envelope(record.value)
        except msgspec.DecodeError as exc:
            await self._set_aside(record, str(exc))
            return
        # The partition worker handles each record in a task of its own.
        bind_delivery(envelope)
        with tracing.deliver_span(from_record(record.headers), envelope, service=SERVICE) as span:
            await self._redeliver(envelope, span.context)

    async def _redeliver(self, envelope: DeliveryEnvelope, trace: TraceContext | None) -> None:
        metrics.RETRY_LATENESS_SECONDS.observe(max(0, _now_ms() - envelope.due_at_ms) / 1000)
        endpoint = self._endpoint(envelope.endpoint_id)
        if endpoint is None:
            await self._deliverer.dead_letter(envelope, "endpoint_deleted", trace=trace)
            return
        if not endpoint.enabled:
            await self._deliverer.dead_letter(envelope, "endpoint_disabled", trace=trace)
            return
        if not await self._gate.enter(endpoint.id, endpoint.rate_limit_per_s):
            await self._deliverer.defer(
                envelope, "endpoint_busy", rate_limit_per_s=endpoint.rate_limit_per_s, trace=trace
            )
            return
        try:
            self._in_flight.inc()
            await self._deliverer.deliver(endpoint, envelope, trace)
        finally:
            self._in_flight.dec()
            self._gate.leave(endpoint.id)

    def _endpoint(self, endpoint_id: str) -> Endpoint | None:
        """The endpoint as it stands; the operational one from the settings (None once its URL
        is unset: its deliveries are then dead-lettered ``endpoint_deleted``)."""
        if endpoint_id == OPERATIONAL_ENDPOINT_ID:
            return self._operational
        return self._endpoints.table.get(endpoint_id)

    async def _set_aside(self, record: Record, reason: str) -> None:
        """An unreadable envelope is kept, as it was, in the dead-letter topic."""
        source = await set_aside(
            self._producer, self._topics.dlq, record, f"{metrics.MALFORMED_ENVELOPE}: {reason}"
        )
        metrics.DEAD_LETTERS.labels(service=SERVICE, reason=metrics.MALFORMED_ENVELOPE).inc()
        log.error("retry_record_unreadable", source=source, error=reason)
