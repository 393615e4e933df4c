"""While the writer thread indexes a batch, the next one grows with what is fetched meanwhile
(no broker: the consumer is a stand-in): each partition's records stay in their order, and the
batch stops growing once the write has ended or a bound is reached."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from services.ingest.delivery_log import log as log_module
from services.ingest.delivery_log.log import DeliveryLog
from shared.kafka.clients import Record
from shared.ops.settings import load_settings

UNREACHABLE = {"CLICKHOOK_KAFKA_BOOTSTRAP": "127.0.0.1:9"}
A = TopicPartition("webhook.dlq", 0)
B = TopicPartition("webhook.dlq", 1)


def _record(tp: TopicPartition, offset: int, size: int = 10) -> Record:
    return ConsumerRecord(
        tp.topic, tp.partition, offset, 0, 0, None, b"x" * size, None, 0, size, ()
    )


class _Fetches:
    """Hands out the scripted fetches in turn (then nothing), and how many were asked for."""

    def __init__(self, fetches: list[dict[TopicPartition, list[Record]]]) -> None:
        self._fetches = fetches
        self.asked: list[int] = []

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[Any, list[Record]]:
        self.asked.append(max_records)
        await asyncio.sleep(0)
        return self._fetches.pop(0) if self._fetches else {}


async def _gathered(
    first: dict[TopicPartition, list[Record]],
    fetches: list[dict[TopicPartition, list[Record]]],
    writing: asyncio.Future[None],
) -> tuple[dict[TopicPartition, list[Record]], _Fetches]:
    delivery_log = DeliveryLog(load_settings(UNREACHABLE))
    consumer, real = _Fetches(fetches), delivery_log._consumer
    delivery_log._consumer = consumer
    try:
        await delivery_log._gather(first, writing)
    finally:
        delivery_log._consumer = real  # closed by stop(), though never started
        await delivery_log.stop()
    return first, consumer


async def test_the_next_batch_grows_while_the_write_runs_in_each_partitions_order() -> None:
    writing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    fetches = [{A: [_record(A, 2)], B: [_record(B, 7)]}, {A: [_record(A, 3), _record(A, 4)]}]
    asyncio.get_running_loop().call_later(0.05, writing.set_result, None)
    batches, _ = await _gathered({A: [_record(A, 0), _record(A, 1)]}, fetches, writing)
    assert [r.offset for r in batches[A]] == [0, 1, 2, 3, 4]
    assert [r.offset for r in batches[B]] == [7]


async def test_nothing_is_added_once_the_write_has_ended() -> None:
    writing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    writing.set_result(None)
    batches, consumer = await _gathered({A: [_record(A, 0)]}, [{A: [_record(A, 1)]}], writing)
    assert [r.offset for r in batches[A]] == [0]
    assert consumer.asked == []


async def test_the_batch_stops_at_its_record_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_module, "BATCH_RECORDS", 4)
    writing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    fetches = [{A: [_record(A, 1)]}, {A: [_record(A, 2), _record(A, 3)]}, {A: [_record(A, 4)]}]
    batches, consumer = await _gathered({A: [_record(A, 0)]}, fetches, writing)
    assert [r.offset for r in batches[A]] == [0, 1, 2, 3]
    assert consumer.asked == [3, 2]  # never more than the bound leaves room for
    writing.cancel()


async def test_the_batch_stops_at_its_byte_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_module, "BATCH_BYTES", 250)
    writing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    fetches = [{A: [_record(A, n, 100)]} for n in range(1, 5)]
    batches, _ = await _gathered({A: [_record(A, 0, 100)]}, fetches, writing)
    assert [r.offset for r in batches[A]] == [0, 1, 2]
    writing.cancel()
