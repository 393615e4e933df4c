"""Reading back what the services wrote: whole topics as they stand, and their sizes."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiokafka.admin import AIOKafkaAdminClient

from shared.kafka.clients import Record, create_consumer
from shared.kafka.metadata import partitions_when_ready
from shared.kafka.window import read_window
from shared.ops.process import close_quietly
from shared.ops.settings import Settings


async def read_topic(bootstrap: str, topic: str) -> AsyncIterator[Record]:
    """Every record of ``topic`` that existed when the read began."""
    async for record in read_window(Settings(kafka_bootstrap=bootstrap), topic, since_ms=0):
        yield record


async def topics_with_prefix(bootstrap: str, prefix: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return sorted(name for name in await admin.list_topics() if name.startswith(prefix))
    finally:
        await admin.close()


async def record_count(bootstrap: str, topic: str) -> int:
    """Records written to ``topic`` so far (end offsets; the bench never deletes any)."""
    settings = Settings(kafka_bootstrap=bootstrap)
    partitions = await partitions_when_ready(settings, topic)
    consumer = create_consumer(settings, group_id=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
    finally:
        await close_quietly("bench consumer", consumer.stop())
    return sum(ends.values())
