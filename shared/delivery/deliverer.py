"""Carries one delivery from its attempt to a durable result; shared by dispatcher and retry.

A delivery is finished only when it was delivered, or when the broker acknowledged its
hand-off: the envelope written to a retry tier (``retry`` after a failed attempt, ``defer``
without one) or to the dead-letter topic. Callers commit offsets only after that.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec
import structlog
from aiokafka import AIOKafkaProducer

from shared.delivery.breaker import CircuitBreaker
from shared.delivery.sender import AttemptResult, Sender
from shared.kafka.clients import produce_durably, until_done
from shared.kafka.endpoint_store import EndpointStore
from shared.model.messages import (
    AttemptRecord,
    DeadLetter,
    DeadLetterReason,
    DeliveryEnvelope,
    Endpoint,
    encode,
)
from shared.model.routing import DeadLettered, Delivered, RetryLater, Route, route_after_attempt
from shared.model.schedule import jittered_delay_s, nearest_tier
from shared.model.topics import HEADER_DUE_AT_MS, HEADER_REASON, Topics
from shared.ops import metrics
from shared.ops.settings import Settings

log = structlog.get_logger(__name__)

BREAKER_GAUGE_INTERVAL_S = 1.0


class Deliverer:
    def __init__(
        self,
        settings: Settings,
        *,
        service: str,
        producer: AIOKafkaProducer,
        attempt_log: AIOKafkaProducer | None,
        sender: Sender,
        endpoints: EndpointStore,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._service = service
        self._topics = Topics(settings.topic_prefix)
        self._producer = producer
        self._attempt_log = attempt_log
        self._sender = sender
        self._endpoints = endpoints
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._breaker = CircuitBreaker(settings.breaker_threshold, settings.breaker_cooldown_s)
        self._breaker_gauge_at_s = 0.0
        self._clock = clock
        # Children looked up once: .labels() on every attempt showed up in profiles.
        self._attempt_seconds = metrics.DELIVERY_ATTEMPT_SECONDS.labels(service=service)
        self._latency_seconds = metrics.DELIVERY_LATENCY_SECONDS.labels(service=service)

    async def deliver(self, endpoint: Endpoint, envelope: DeliveryEnvelope) -> Route:
        """Make one attempt and hand the delivery off durably according to its outcome.

        While the endpoint's breaker is open the delivery moves to its next tier without an
        attempt.
        """
        now_s = self._clock()
        current_tier = self._current_tier(envelope)
        if not self._breaker.allow(endpoint.id, now_s):
            route = route_after_attempt(
                "error", current_tier=current_tier, schedule_s=self._settings.retry_schedule_s
            )
            metrics.BREAKER_SKIPS.labels(service=self._service).inc()
            await self.forward(endpoint, envelope, route)
            return route
        attempt_no = envelope.attempts_made + 1
        result = await self._sender.attempt(
            endpoint,
            envelope.event,
            webhook_id=envelope.webhook_id,
            event_id=envelope.event_id,
            attempt=attempt_no,
        )
        self._observe(result, envelope)
        if self._attempt_log is not None:
            await self._log_attempt(self._attempt_log, result.record)
        route = route_after_attempt(
            result.outcome,
            current_tier=current_tier,
            schedule_s=self._settings.retry_schedule_s,
            retry_after_s=result.retry_after_s,
        )
        updated = msgspec.structs.replace(
            envelope, attempts_made=attempt_no, attempts=[*envelope.attempts, result.record]
        )
        log.info(
            "delivery_attempted",
            event_id=envelope.event_id,
            endpoint_id=envelope.endpoint_id,
            webhook_id=envelope.webhook_id,
            attempt=attempt_no,
            outcome=result.outcome,
            status=result.record.status,
            duration_ms=result.record.duration_ms,
            route=route.kind,
        )
        await self._track_health(endpoint, updated, result.outcome == "success")
        await self.forward(endpoint, updated, route)
        return route

    def _current_tier(self, envelope: DeliveryEnvelope) -> int:
        """The schedule position the envelope waited in; -1 before the first attempt. A tier
        of an older, longer schedule maps to the nearest one that still exists."""
        if envelope.tier < 0:
            return -1
        return nearest_tier(self._settings.retry_schedule_s, envelope.tier)

    async def _track_health(
        self, endpoint: Endpoint, envelope: DeliveryEnvelope, success: bool
    ) -> None:
        now_s = self._clock()
        history_start_s = (
            envelope.attempts[0].at_ms / 1000
            if all(a.outcome != "success" for a in envelope.attempts)
            else None
        )
        self._breaker.record(endpoint.id, success, now_s, history_start_s)
        if now_s - self._breaker_gauge_at_s >= BREAKER_GAUGE_INTERVAL_S:
            # Counting walks every unhealthy endpoint: not on every attempt.
            self._breaker_gauge_at_s = now_s
            counts = self._breaker.open_counts(now_s)
            for state in ("open", "half_open"):
                metrics.BREAKERS.labels(service=self._service, state=state).set(counts[state])
        failing_for_s = self._breaker.failing_for_s(endpoint.id, now_s)
        if not success and failing_for_s >= self._settings.disable_after_s:
            days = failing_for_s / 86400
            await self.disable_endpoint(
                endpoint, f"every attempt failed for {days:.1f} days (CLICKHOOK_DISABLE_AFTER)"
            )
            self._breaker.forget(endpoint.id)

    async def forward(
        self, endpoint: Endpoint | None, envelope: DeliveryEnvelope, route: Route
    ) -> None:
        """Where the route says: nowhere (delivered), the next tier, or the dead letters."""
        match route:
            case Delivered():
                return
            case RetryLater(tier=tier):
                await self.schedule_retry(envelope, tier=tier)
            case DeadLettered(reason=reason):
                if reason == "endpoint_gone" and endpoint is not None:
                    await self.disable_endpoint(endpoint, "endpoint answered 410 Gone")
                await self.dead_letter(envelope, reason)

    async def schedule_retry(self, envelope: DeliveryEnvelope, *, tier: int) -> None:
        """After a failed attempt: wait in ``tier``, due after its delay plus jitter."""
        await self._wait_in(envelope, tier=tier, wait_tier=tier)

    async def defer(self, envelope: DeliveryEnvelope) -> None:
        """Without an attempt (the endpoint at its caps, or a drain that ran out of time): the
        delivery waits in the first tier's topic and keeps its place in the schedule."""
        await self._wait_in(envelope, tier=envelope.tier, wait_tier=0)

    async def _wait_in(self, envelope: DeliveryEnvelope, *, tier: int, wait_tier: int) -> None:
        schedule = self._settings.retry_schedule_s
        delay_s = jittered_delay_s(schedule[wait_tier], self._rng)
        due_at_ms = int((self._clock() + delay_s) * 1000)
        queued = msgspec.structs.replace(envelope, tier=tier, due_at_ms=due_at_ms)
        topic = self._topics.retry(schedule[wait_tier])
        await self._send(topic, queued, [(HEADER_DUE_AT_MS, str(due_at_ms).encode())])
        metrics.RETRY_SCHEDULED.labels(service=self._service, tier=str(wait_tier)).inc()

    async def dead_letter(self, envelope: DeliveryEnvelope, reason: DeadLetterReason) -> None:
        letter = DeadLetter(reason=reason, dead_at_ms=int(self._clock() * 1000), envelope=envelope)
        await self._send(self._topics.dlq, letter, [(HEADER_REASON, reason.encode())])
        metrics.DEAD_LETTERS.labels(service=self._service, reason=reason).inc()
        log.warning(
            "delivery_dead_lettered",
            reason=reason,
            event_id=envelope.event_id,
            endpoint_id=envelope.endpoint_id,
            webhook_id=envelope.webhook_id,
            attempts=envelope.attempts_made,
        )

    async def disable_endpoint(self, endpoint: Endpoint, reason: str) -> None:
        current = self._endpoints.table.get(endpoint.id) or endpoint
        if not current.enabled:
            return
        disabled = msgspec.structs.replace(
            current, enabled=False, disabled_reason=reason, updated_at=datetime.now(UTC)
        )
        await until_done(lambda: self._endpoints.put(disabled), "disable endpoint")
        log.warning("endpoint_disabled", endpoint_id=endpoint.id, reason=reason)

    async def _send(
        self, topic: str, message: msgspec.Struct, headers: list[tuple[str, bytes]]
    ) -> None:
        envelope = message.envelope if isinstance(message, DeadLetter) else message
        assert isinstance(envelope, DeliveryEnvelope)
        await produce_durably(
            self._producer,
            topic,
            key=envelope.endpoint_id.encode(),
            value=encode(message),
            headers=headers,
        )

    def _observe(self, result: AttemptResult, envelope: DeliveryEnvelope) -> None:
        record = result.record
        metrics.DELIVERY_ATTEMPTS.labels(service=self._service, outcome=record.outcome).inc()
        self._attempt_seconds.observe(record.duration_ms / 1000)
        if record.outcome == "success":
            occurred = envelope.event.get("occurred_at")
            if isinstance(occurred, str):
                try:
                    occurred_s = datetime.fromisoformat(occurred).timestamp()
                except ValueError:
                    occurred_s = None
                if occurred_s is not None:
                    self._latency_seconds.observe(
                        max(0.0, record.at_ms / 1000 + record.duration_ms / 1000 - occurred_s)
                    )

    async def _log_attempt(self, producer: AIOKafkaProducer, record: AttemptRecord) -> None:
        # The attempt log is an audit trail, not part of the delivery guarantee: the delivery
        # does not wait for its acknowledgement, but a failure is counted.
        topic = self._topics.attempts
        future = await producer.send(topic, key=record.endpoint_id.encode(), value=encode(record))
        future.add_done_callback(lambda done: _count_produce_error(done, topic))


def _count_produce_error(future: asyncio.Future[object], topic: str) -> None:
    if not future.cancelled() and future.exception() is not None:
        metrics.PRODUCE_ERRORS.labels(topic=topic).inc()
