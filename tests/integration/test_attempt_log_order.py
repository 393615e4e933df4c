"""The delivery log's records reach a real broker whole and in order per endpoint: each
endpoint's records in the order they were handed over, across many full batches of its
partition (shared.delivery.attempt_log)."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
from prometheus_client import REGISTRY

from shared.delivery.attempt_log import AttemptLog
from shared.kafka.clients import create_audit_producer, ensure_topics, topic_specs
from shared.kafka.metadata import partitions_when_ready
from shared.kafka.window import read_window
from shared.model.messages import AttemptRecord, decode_attempt
from shared.model.topics import Topics
from shared.ops.settings import Settings

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

ENDPOINTS = 12
RECORDS = 6000
# A request excerpt as large as the deliverer keeps: 6,000 records make some 14 MB, many
# batches of 1 MB for each of the topic's 3 partitions.
EXCERPT = "x" * 2000


def attempt(n: int) -> AttemptRecord:
    return AttemptRecord(
        webhook_id=f"msg_{n}",
        event_id=f"evt_{n}",
        endpoint_id=f"ep_{n % ENDPOINTS}",
        account_id="acc_a",
        attempt=1,
        at_ms=n,
        duration_ms=1.0,
        outcome="success",
        request_body=EXCERPT,
    )


def dropped(service: str) -> float:
    return sum(
        REGISTRY.get_sample_value(
            "clickhook_attempt_log_dropped_total", {"service": service, "reason": reason}
        )
        or 0.0
        for reason in ("full", "send_failed")
    )


async def test_every_record_arrives_in_order_per_endpoint(settings: Settings) -> None:
    topic = Topics(settings.topic_prefix).attempts
    await ensure_topics(settings, [s for s in topic_specs(settings) if s.name == topic])
    await partitions_when_ready(settings, topic)
    producer = create_audit_producer(settings)
    await producer.start()
    try:
        log = AttemptLog(producer, topic, service="it-order")
        writer = asyncio.create_task(log.run())
        for n in range(RECORDS):
            log.record(attempt(n))
            if n % 250 == 0:
                await asyncio.sleep(0.01)  # a drain's pace: deliveries between the records
        writer.cancel()
        await log.flush()
    finally:
        await producer.stop()

    written: dict[str, list[int]] = defaultdict(list)
    async for record in read_window(settings, topic, since_ms=0):
        attempt_record = decode_attempt(record.value)
        written[attempt_record.endpoint_id].append(attempt_record.at_ms)
    assert dropped("it-order") == 0
    for e in range(ENDPOINTS):
        assert written[f"ep_{e}"] == list(range(e, RECORDS, ENDPOINTS)), f"ep_{e}"
