"""Reading a topic up to a point: the end offsets seen when the read began."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.kafka.clients import Record, create_consumer
from shared.kafka.metadata import partitions_when_ready
from shared.ops.process import close_quietly
from shared.ops.settings import Settings

POLL_MS = 500


async def read_to_ends(
    consumer: AIOKafkaConsumer, ends: Mapping[TopicPartition, int]
) -> AsyncGenerator[Record, None]:
    """Every record fetched from the assigned partitions, from their positions until each has
    reached its end offset. A batch may run past an end: the caller decides about those."""
    pending = {tp for tp, end in ends.items() if await consumer.position(tp) < end}
    while pending:
        batches = await consumer.getmany(*pending, timeout_ms=POLL_MS)
        for records in batches.values():
            for record in records:
                yield record
        for tp in list(pending):
            # Positions, not offsets seen: compaction and transaction markers leave gaps.
            if await consumer.position(tp) >= ends[tp]:
                pending.discard(tp)


async def read_window(
    settings: Settings, topic: str, since_ms: int
) -> AsyncGenerator[Record, None]:
    """Every record of ``topic`` with a timestamp at or after ``since_ms`` that existed when the
    read began; records written meanwhile are left out, so the read always ends."""
    assignment = await partitions_when_ready(settings, topic)
    if not assignment:
        return
    consumer = create_consumer(settings, group_id=None)
    await consumer.start()
    try:
        consumer.assign(assignment)
        ends = await consumer.end_offsets(assignment)
        starts = await consumer.offsets_for_times(dict.fromkeys(assignment, since_ms))
        for tp in assignment:
            found = starts.get(tp)
            consumer.seek(tp, found.offset if found is not None else ends[tp])
        async for record in read_to_ends(consumer, ends):
            tp = TopicPartition(record.topic, record.partition)
            if record.offset < ends[tp]:
                yield record
    finally:
        await close_quietly("window consumer", consumer.stop())
