"""Publishing operational webhooks (``shared.model.operational``): each event becomes a delivery
to the operational endpoint, written to the first retry tier and due at once, so the retry
service delivers it like any other: same signing, schedule, breaker, dead letters and delivery
log. Written where the fact happens, before the record that made it is committed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer

from shared.kafka.clients import produce_durably
from shared.model.messages import encode
from shared.model.operational import operational_envelope
from shared.model.topics import HEADER_DUE_AT_MS, Topics
from shared.ops import metrics
from shared.ops.settings import Settings

log = structlog.get_logger(__name__)


class OperationalWebhooks:
    """Hands operational events to delivery; does nothing when no URL is set."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        self._enabled = bool(settings.operational_webhook_url)
        self._producer = producer
        # Due at once: the first tier's delay plays no part, but it is a topic every
        # retry service reads (a record behind a later-due head waits at most that delay).
        self._topic = Topics(settings.topic_prefix).retry(settings.retry_schedule_s[0])

    async def publish(self, event: dict[str, Any] | None) -> None:
        """Hand ``event`` (None: nothing to report) to delivery, once the broker has it."""
        if event is None or not self._enabled:
            return
        envelope = operational_envelope(event, due_at_ms=int(time.time() * 1000))
        await produce_durably(
            self._producer,
            self._topic,
            key=envelope.endpoint_id.encode(),
            value=encode(envelope),
            headers=[(HEADER_DUE_AT_MS, str(envelope.due_at_ms).encode())],
        )
        metrics.OPERATIONAL_EVENTS.labels(type=event["type"], result="published").inc()
        log.info(
            "operational_event_published",
            type=event["type"],
            operational_event_id=event["id"],
            webhook_id=envelope.webhook_id,
        )

    async def publish_within(self, event: dict[str, Any] | None, timeout_s: float) -> None:
        """``publish`` for a caller that cannot wait on the broker for long (an HTTP request
        whose change is already written): past ``timeout_s`` the event is lost, logged and
        counted (``result="failed"``), never raised."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.publish(event)
        except TimeoutError:
            assert event is not None  # for mypy: publish returns at once for None
            metrics.OPERATIONAL_EVENTS.labels(type=event["type"], result="failed").inc()
            log.error(  # noqa: TRY400 - the timeout is the whole story
                "operational_event_lost",
                type=event["type"],
                operational_event_id=event["id"],
                timeout_s=timeout_s,
            )
