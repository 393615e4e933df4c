"""Following a small, usually compacted topic into memory: read it to the end, then keep up."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.kafka.clients import Record, create_consumer
from shared.kafka.metadata import partitions_when_ready
from shared.kafka.window import read_to_ends
from shared.ops.process import close_quietly
from shared.ops.settings import Settings

log = structlog.get_logger(__name__)

FOLLOW_POLL_MS = 1000


class TopicFollower:
    """Hands every record of ``topic`` to ``apply``, from the beginning: ``loaded`` is set once
    the end offsets seen at start are reached; later records follow as they are written.

    ``start`` readies the consumer; ``follow`` is the work, run as a (supervised) task."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        apply: Callable[[Record], None],
        *,
        name: str,
        fetch_max_wait_ms: int = 500,
    ) -> None:
        self._settings = settings
        self._topic = topic
        self._apply = apply
        self._name = name
        self._consumer: AIOKafkaConsumer = create_consumer(
            settings, group_id=None, fetch_max_wait_ms=fetch_max_wait_ms
        )
        self.loaded = asyncio.Event()
        self._ends: dict[TopicPartition, int] = {}

    @property
    def consumer(self) -> AIOKafkaConsumer:
        """The consumer whose position says how far ``apply`` has been given the topic."""
        return self._consumer

    async def start(self) -> None:
        assignment = await partitions_when_ready(self._settings, self._topic)
        await self._consumer.start()
        self._consumer.assign(assignment)
        await self._consumer.seek_to_beginning(*assignment)
        self._ends = await self._consumer.end_offsets(assignment)

    async def stop(self) -> None:
        await close_quietly(self._name, self._consumer.stop())

    async def follow(self) -> None:
        async for record in read_to_ends(self._consumer, self._ends):
            self._apply(record)
        self.loaded.set()
        while True:
            batches = await self._consumer.getmany(timeout_ms=FOLLOW_POLL_MS)
            for records in batches.values():
                for record in records:
                    self._apply(record)
