"""Waiting for a topic's metadata: a topic created a moment ago (by this service or by another
one starting at the same time) is not described by the broker until its partitions have leaders.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from shared.model.errors import ClickhookError
from shared.ops.settings import Settings

log = structlog.get_logger(__name__)

# Long enough for a broker that is creating many topics at once (every service of a fresh
# install starts together); short enough that a topic that never appears fails the start.
TOPIC_READY_TIMEOUT_S = 60.0
TOPIC_READY_POLL_S = 0.2


class TopicNotReady(ClickhookError):
    """A topic still had no partition with a leader when the wait ran out."""

    def __init__(self, topic: str, waited_s: float, last_error: int | None) -> None:
        seen = f"last error code {last_error}" if last_error else "no partitions described"
        super().__init__(
            f"topic {topic} has no partitions with a leader after {waited_s}s ({seen})"
        )
        self.topic = topic
        self.waited_s = waited_s
        self.last_error = last_error


def ready_partitions(described: list[dict[str, Any]], topic: str) -> list[TopicPartition]:
    """The partitions of ``topic`` in a DescribeTopics answer, once all of them have a leader;
    empty while the topic is unknown or any partition is still without one."""
    for entry in described:
        if entry["topic"] != topic or entry["error_code"] != 0 or not entry["partitions"]:
            continue
        if all(partition["leader"] >= 0 for partition in entry["partitions"]):
            return sorted(TopicPartition(topic, p["partition"]) for p in entry["partitions"])
    return []


UNKNOWN_TOPIC_OR_PARTITION = 3  # Kafka's error code for a topic the cluster does not have


async def topic_exists(settings: Settings, topic: str) -> bool:
    """Whether the cluster has ``topic`` at all (one DescribeTopics; never creates it)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    errors = [entry["error_code"] for entry in described if entry["topic"] == topic]
    return bool(errors) and errors[0] != UNKNOWN_TOPIC_OR_PARTITION


async def partitions_when_ready(
    settings: Settings,
    topic: str,
    *,
    timeout_s: float = TOPIC_READY_TIMEOUT_S,
    poll_s: float = TOPIC_READY_POLL_S,
) -> list[TopicPartition]:
    """The partitions of ``topic``, once the broker describes every one of them with a leader.

    Assigning a consumer an empty list (what a topic created a moment ago describes as) made
    ``seek_to_beginning`` fail with "No partitions are currently assigned".
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    last_error: int | None = None
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    described = await admin.describe_topics([topic])
                except (KafkaError, OSError) as exc:  # a broker busy creating many topics
                    log.warning("topic_describe_failed", topic=topic, error=repr(exc))
                    described = []
                partitions = ready_partitions(described, topic)
                if partitions:
                    return partitions
                error = next((d["error_code"] for d in described if d["topic"] == topic), None)
                if error != last_error:  # once per state, not once per poll
                    log.info("topic_not_ready", topic=topic, error_code=error)
                last_error = error
                await asyncio.sleep(poll_s)
    except TimeoutError:
        raise TopicNotReady(topic, timeout_s, last_error) from None
    finally:
        await admin.close()
