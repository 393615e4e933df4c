"""The delivery log's writer: every attempt and deferral to ``webhook.attempts``, never in the
way of a delivery.

The log is an audit trail, not part of the delivery guarantee: a delivery hands its record
over (``record``: no await, no exception) and goes on. A background task writes the records
with a producer of its own that batches widely. When the broker is slow or away, the producer's
buffer fills, its sends time out, and records wait here; past ``max_queued`` waiting records,
new ones are dropped and counted (``clickhook_attempt_log_dropped_total``) so memory stays
bounded. What was delivered is delivered either way: the log never causes a re-delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

import structlog
from aiokafka import AIOKafkaProducer
from prometheus_client import Counter

from shared.model.messages import AttemptRecord, encode
from shared.ops import metrics

log = structlog.get_logger(__name__)

# About 5 MB of records (a record is ~1-5 KB with its request excerpt): a broker outage of a few
# seconds at thousands of attempts a second loses nothing.
MAX_QUEUED = 2000
CLOSE_FLUSH_S = 5.0


class AttemptLog:
    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        *,
        service: str,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._max_queued = max_queued
        self._queue: deque[AttemptRecord] = deque()
        self._waiting = asyncio.Event()
        self._failing = False  # logged once per run of failures, not once per record
        self._dropped_full = self._dropped(service, "full")
        self._dropped_failed = self._dropped(service, "send_failed")
        # A record that did not reach the broker is a failed produce too: it counts towards
        # the ClickhookProduceErrors alert, which reads every topic's produce errors.
        self._produce_errors = metrics.PRODUCE_ERRORS.labels(topic=topic)

    @staticmethod
    def _dropped(service: str, reason: metrics.AttemptLogDropReason) -> Counter:
        return metrics.ATTEMPT_LOG_DROPPED.labels(service=service, reason=reason)

    def record(self, record: AttemptRecord) -> None:
        """Hand a record over; it is written later, or dropped and counted."""
        if len(self._queue) >= self._max_queued:
            self._dropped_full.inc()
            return
        self._queue.append(record)
        self._waiting.set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def run(self) -> None:
        """Write records as they come, until cancelled."""
        while True:
            await self._waiting.wait()
            self._waiting.clear()
            while self._queue:
                await self._send(self._queue.popleft())

    async def flush(self, timeout_s: float = CLOSE_FLUSH_S) -> None:
        """Write what waits, for at most ``timeout_s`` (at shutdown)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self._queue:
                    await self._send(self._queue.popleft())
                await self._producer.flush()

    async def _send(self, record: AttemptRecord) -> None:
        try:
            # Waits while the producer's buffer is full, up to its request timeout.
            sent = await self._producer.send(
                self._topic, key=record.endpoint_id.encode(), value=encode(record)
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - an audit record never fails anything else
            self._count_send_failed()
            if not self._failing:
                self._failing = True
                log.warning("attempt_log_failing", error=repr(exc), queued=len(self._queue))
            return
        if self._failing:
            self._failing = False
            log.info("attempt_log_recovered")
        sent.add_done_callback(self._count_failure)

    def _count_failure(self, sent: asyncio.Future[object]) -> None:
        if not sent.cancelled() and sent.exception() is not None:
            self._count_send_failed()

    def _count_send_failed(self) -> None:
        self._dropped_failed.inc()
        self._produce_errors.inc()
