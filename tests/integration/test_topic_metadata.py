"""Waiting for a topic's metadata, on the real broker: a topic that appears a moment later is
waited for, one that never does fails the start with a clear error."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from structlog.testing import capture_logs

from shared.kafka.metadata import TopicNotReady, partitions_when_ready
from shared.ops.settings import Settings

pytestmark = pytest.mark.kafka

PARTITIONS = 3
CREATED_AFTER_S = 0.5


async def create_topic_later(settings: Settings, topic: str) -> None:
    await asyncio.sleep(CREATED_AFTER_S)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()


async def test_a_topic_created_while_waiting_is_found_with_all_its_partitions(
    settings: Settings,
) -> None:
    topic = f"{settings.topic_prefix}late"

    with capture_logs() as logs:
        found, _ = await asyncio.gather(
            partitions_when_ready(settings, topic), create_topic_later(settings, topic)
        )

    assert [tp.partition for tp in found] == list(range(PARTITIONS))
    assert {tp.topic for tp in found} == {topic}
    assert "topic_not_ready" in [line["event"] for line in logs]  # it did wait


async def test_a_topic_that_never_appears_fails_with_its_name(settings: Settings) -> None:
    topic = f"{settings.topic_prefix}never"

    with pytest.raises(TopicNotReady, match=f"topic {topic} has no partitions with a leader"):
        await partitions_when_ready(settings, topic, timeout_s=1.0)
