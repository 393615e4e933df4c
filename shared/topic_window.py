"""Reading a bounded window of a topic: from a time to the end offsets seen at the start."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from aiokafka import TopicPartition

from shared.kafka import create_consumer, topic_partitions
from shared.lifecycle import close_quietly
from shared.settings import Settings
from shared.worker import Record

POLL_MS = 500


async def read_window(
    settings: Settings, topic: str, since_ms: int
) -> AsyncGenerator[Record, None]:
    """Every record of ``topic`` with a timestamp at or after ``since_ms`` that existed when the
    read began; records written meanwhile are left out, so the read always ends."""
    assignment = await topic_partitions(settings, topic)
    if not assignment:
        return
    consumer = create_consumer(settings, group_id=None)
    await consumer.start()
    try:
        consumer.assign(assignment)
        ends = await consumer.end_offsets(assignment)
        starts = await consumer.offsets_for_times(dict.fromkeys(assignment, since_ms))
        pending: set[TopicPartition] = set()
        for tp in assignment:
            found = starts.get(tp)
            start = found.offset if found is not None else ends[tp]
            if start < ends[tp]:
                consumer.seek(tp, start)
                pending.add(tp)
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=POLL_MS)
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    yield record
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        await close_quietly("window consumer", consumer.stop())
