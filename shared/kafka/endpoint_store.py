"""The endpoint registry: the compacted topic, materialised and followed, and its writes."""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.kafka.clients import create_consumer, topic_partitions
from shared.kafka.window import read_to_ends
from shared.model.endpoint_table import EndpointTable
from shared.model.messages import Endpoint, decode_endpoint, encode
from shared.model.topics import Topics
from shared.ops import metrics
from shared.ops.process import close_quietly
from shared.ops.settings import Settings

log = structlog.get_logger(__name__)


class EndpointStore:
    """Reads ``webhook.endpoints`` from the beginning, then follows it; writes go through it."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        self._settings = settings
        self._topic = Topics(settings.topic_prefix).endpoints
        self._producer = producer
        self._consumer: AIOKafkaConsumer = create_consumer(settings, group_id=None)
        self.table = EndpointTable()
        self.loaded = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        assignment = await topic_partitions(self._settings, self._topic)
        await self._consumer.start()
        self._consumer.assign(assignment)
        await self._consumer.seek_to_beginning(*assignment)
        end_offsets = await self._consumer.end_offsets(assignment)
        self._task = asyncio.create_task(self._follow(end_offsets), name="endpoint-follower")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await close_quietly("endpoint consumer", self._consumer.stop())

    async def put(self, endpoint: Endpoint) -> None:
        """Write an endpoint and see it here at once (read-your-writes)."""
        meta = await self._producer.send_and_wait(
            self._topic, key=endpoint.id.encode(), value=encode(endpoint)
        )
        self.table.apply(endpoint.id, endpoint, meta.offset)
        self._update_gauge()

    async def delete(self, endpoint_id: str) -> None:
        meta = await self._producer.send_and_wait(self._topic, key=endpoint_id.encode(), value=None)
        self.table.apply(endpoint_id, None, meta.offset)
        self._update_gauge()

    async def _follow(self, end_offsets: dict[TopicPartition, int]) -> None:
        await self._catch_up(end_offsets)
        self.loaded.set()
        log.info("endpoints_loaded", endpoints=len(self.table.all()))
        while True:
            batches = await self._consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    self._apply_record(record.key, record.value, record.offset)
            if batches:
                self._update_gauge()

    async def _catch_up(self, end_offsets: dict[TopicPartition, int]) -> None:
        async for record in read_to_ends(self._consumer, end_offsets):
            self._apply_record(record.key, record.value, record.offset)
        self._update_gauge()

    def _apply_record(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        if key is None:
            log.warning("endpoint_record_without_key", offset=offset)
            return
        endpoint_id = key.decode(errors="replace")
        if value is None:
            self.table.apply(endpoint_id, None, offset)
            return
        try:
            endpoint = decode_endpoint(value)
        except msgspec.DecodeError as exc:
            log.error(  # noqa: TRY400 - the decode error is the whole story
                "endpoint_record_unreadable", endpoint_id=endpoint_id, error=str(exc)
            )
            return
        self.table.apply(endpoint_id, endpoint, offset)

    def _update_gauge(self) -> None:
        enabled, disabled = self.table.counts()
        metrics.ENDPOINTS.labels(state="enabled").set(enabled)
        metrics.ENDPOINTS.labels(state="disabled").set(disabled)
