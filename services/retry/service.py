"""The retry service: drains the delayed-retry tiers, never before a record is due."""

from __future__ import annotations

import time
from collections import Counter

import msgspec
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.retry.due import DueTimes, due_at_ms_from_headers
from shared.delivery.deliverer import Deliverer
from shared.delivery.endpoint_gate import gate_for
from shared.kafka.clients import Record, set_aside
from shared.kafka.endpoint_store import EndpointStore
from shared.model.messages import DeliveryEnvelope, decode_envelope
from shared.model.topics import Topics
from shared.ops import metrics
from shared.ops.logging import bind_delivery
from shared.ops.settings import Settings

SERVICE = "retry"
log = structlog.get_logger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


class RetryService:
    def __init__(
        self,
        settings: Settings,
        *,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        endpoints: EndpointStore,
        deliverer: Deliverer,
    ) -> None:
        self._settings = settings
        self._topics = Topics(settings.topic_prefix)
        self._consumer = consumer
        self._producer = producer
        self._endpoints = endpoints
        self._deliverer = deliverer
        self._held: DueTimes[TopicPartition] = DueTimes()
        self._gate = gate_for(settings)
        self._in_flight = metrics.DELIVERIES_IN_FLIGHT.labels(service=SERVICE)

    # --- hooks for the partition worker ---------------------------------------------------

    def admit(self, tp: TopicPartition, record: Record) -> bool:
        """Start a record only when due; else rewind and pause its partition until then."""
        due_ms = due_at_ms_from_headers(record.headers)
        if due_ms is None or due_ms <= _now_ms():
            return True
        self._consumer.seek(tp, record.offset)
        self._consumer.pause(tp)
        self._held.hold(tp, due_ms)
        return False

    def resume_due(self) -> None:
        assigned = self._consumer.assignment()
        self._held.forget([tp for tp in self._held.held() if tp not in assigned])
        ready = [tp for tp in self._held.release_due(_now_ms()) if tp in assigned]
        if ready:
            self._consumer.resume(*ready)
        waiting = Counter(tp.topic for tp in self._held.held())
        for topic in self._topics.retry_tiers(self._settings.retry_schedule_s):
            metrics.RETRY_WAITING.labels(topic=topic).set(waiting.get(topic, 0))

    def next_wakeup_s(self) -> float | None:
        return self._held.next_wakeup_s(_now_ms())

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
        await self._redeliver(envelope)

    async def _redeliver(self, envelope: DeliveryEnvelope) -> None:
        metrics.RETRY_LATENESS_SECONDS.observe(max(0, _now_ms() - envelope.due_at_ms) / 1000)
        endpoint = self._endpoints.table.get(envelope.endpoint_id)
        if endpoint is None:
            await self._deliverer.dead_letter(envelope, "endpoint_deleted")
            return
        if not endpoint.enabled:
            await self._deliverer.dead_letter(envelope, "endpoint_disabled")
            return
        if not await self._gate.enter(endpoint.id, endpoint.rate_limit_per_s):
            await self._deliverer.defer(envelope, "endpoint_busy")
            return
        try:
            self._in_flight.inc()
            await self._deliverer.deliver(endpoint, envelope)
        finally:
            self._in_flight.dec()
            self._gate.leave(endpoint.id)

    async def _set_aside(self, record: Record, reason: str) -> None:
        """An unreadable envelope is kept, as it was, in the dead-letter topic."""
        source = await set_aside(
            self._producer, self._topics.dlq, record, f"malformed_envelope: {reason}"
        )
        metrics.DEAD_LETTERS.labels(service=SERVICE, reason="malformed_envelope").inc()
        log.error("retry_record_unreadable", source=source, error=reason)
