"""The delivery log's writer never makes a delivery wait or fail, and says what it dropped.

The producer here is a stand-in for aiokafka's batch interface whose partitions take, stall or
fail batches on demand; the broker outage itself is tested end to end in
tests/e2e/test_attempt_log.py, and the records' way to a real broker in
tests/integration/test_attempt_log_order.py.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, RequestTimedOutError
from prometheus_client import REGISTRY

from shared.delivery.attempt_log import AttemptLog
from shared.kafka.clients import partition_for_key
from shared.model.messages import AttemptRecord, decode_attempt, encode

PARTITIONS = [0, 1, 2]


class StandInBatch:
    """aiokafka's BatchBuilder as the log uses it: the first record always fits, then records
    fit up to ``size``; closed once full or taken by the producer."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.values: list[bytes] = []
        self.used = 0
        self.is_closed = False

    def append(self, *, timestamp: int | None, key: bytes, value: bytes) -> object | None:
        if self.is_closed or (self.values and self.used + len(value) > self.size):
            self.is_closed = True
            return None
        self.values.append(value)
        self.used += len(value)
        return object()

    def close(self) -> None:
        self.is_closed = True

    def record_count(self) -> int:
        return len(self.values)


class StandInProducer:
    """Like aiokafka, a partition holds one batch handed over until it takes it, and a batch
    handed over behind it waits; a partition in ``stalled`` takes none, ``fail`` makes every
    hand-over time out and ``answer_with`` every batch's answer an error."""

    def __init__(self, batch_size: int = 65536) -> None:
        self.batch_size = batch_size
        self.sent: dict[int, list[bytes]] = defaultdict(list)
        self.stalled: set[int] = set()
        self.fail = False
        self.answer_with: Exception | None = None
        self._held: dict[int, tuple[StandInBatch, asyncio.Future[Any]]] = {}
        self._taken: dict[int, asyncio.Event] = defaultdict(asyncio.Event)

    def create_batch(self) -> StandInBatch:
        return StandInBatch(self.batch_size)

    async def partitions_for(self, topic: str) -> set[int]:
        return set(PARTITIONS)

    async def send_batch(self, batch: StandInBatch, topic: str, *, partition: int) -> Any:
        if self.fail:
            raise KafkaTimeoutError()
        while partition in self._held:
            self._taken[partition].clear()
            await self._taken[partition].wait()
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._held[partition] = (batch, answer)
        asyncio.get_running_loop().call_later(0.001, self.take, partition)
        return answer

    def take(self, partition: int) -> None:
        """Send the partition's batch, unless it is stalled (then ``release`` does)."""
        if partition in self.stalled or partition not in self._held:
            return
        batch, answer = self._held.pop(partition)
        batch.close()
        self._taken[partition].set()
        if self.answer_with is not None:
            answer.set_exception(self.answer_with)
            return
        self.sent[partition].extend(batch.values)
        answer.set_result(None)

    def release(self, partition: int) -> None:
        self.stalled.discard(partition)
        self.take(partition)

    def values(self) -> list[bytes]:
        return [value for partition in PARTITIONS for value in self.sent[partition]]

    async def flush(self) -> None:
        await asyncio.gather(*(answer for _, answer in self._held.values()))


def record(n: int, endpoint_id: str = "ep_1") -> AttemptRecord:
    return AttemptRecord(
        webhook_id=f"msg_{n}",
        event_id=f"evt_{n}",
        endpoint_id=endpoint_id,
        account_id="acc_1",
        attempt=1,
        at_ms=n,
        duration_ms=1.0,
        outcome="success",
    )


def size_of(n: int, endpoint_id: str = "ep_1") -> int:
    """The bytes the log holds for a record."""
    return len(endpoint_id) + len(encode(record(n, endpoint_id)))


def partition_of(endpoint_id: str) -> int:
    return partition_for_key(endpoint_id.encode(), PARTITIONS, PARTITIONS)


def endpoints_by_partition() -> dict[int, list[str]]:
    """Four endpoint ids for each partition."""
    found: dict[int, list[str]] = defaultdict(list)
    n = 0
    while any(len(found[p]) < 4 for p in PARTITIONS):
        endpoint_id = f"ep_{n}"
        if len(found[partition_of(endpoint_id)]) < 4:
            found[partition_of(endpoint_id)].append(endpoint_id)
        n += 1
    return found


def dropped(service: str, reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "clickhook_attempt_log_dropped_total", {"service": service, "reason": reason}
    )
    return value or 0.0


def ids(values: list[bytes]) -> list[str]:
    return [decode_attempt(v).webhook_id for v in values]


@pytest.fixture(name="producer")
def fixture_producer() -> StandInProducer:
    return StandInProducer()


async def test_records_are_written_in_the_background(producer: StandInProducer) -> None:
    log = AttemptLog(producer, "webhook.attempts", service="unit-ok")
    writer = asyncio.create_task(log.run())
    for n in range(5):
        log.record(record(n))
    await asyncio.sleep(0.01)
    writer.cancel()

    assert ids(producer.values()) == [f"msg_{n}" for n in range(5)]
    assert log.held_bytes == 0


async def test_a_stalled_broker_never_blocks_a_delivery_and_bounds_memory(
    producer: StandInProducer,
) -> None:
    """10,000 records while no batch is taken: handing each over returns at once, at most
    ``max_bytes`` are held, and the rest are counted as dropped."""
    producer.stalled.update(PARTITIONS)
    bound = 100 * size_of(0)
    log = AttemptLog(producer, "webhook.attempts", service="unit-stalled", max_bytes=bound)
    writer = asyncio.create_task(log.run())
    await asyncio.sleep(0)
    before = dropped("unit-stalled", "full")
    for n in range(10_000):
        log.record(record(n))  # no await: a delivery never waits for the log
        if n % 1000 == 0:
            await asyncio.sleep(0.002)  # the writer fills batches meanwhile

    assert log.held_bytes <= bound
    assert dropped("unit-stalled", "full") - before >= 10_000 - 100
    for partition in PARTITIONS:
        producer.release(partition)
    await asyncio.sleep(0.05)
    writer.cancel()
    assert len(producer.values()) >= 90
    assert ids(producer.values()) == sorted(ids(producer.values()), key=lambda i: int(i[4:]))


async def test_one_stalled_partition_holds_up_only_its_own_records(
    producer: StandInProducer,
) -> None:
    """What a customer looks up in the portal: while one partition's batches wait, the other
    endpoints' records go on arriving; the stalled one's are held up to the bound, the rest
    counted as dropped, and those held arrive in order once the partition takes them."""
    endpoints = endpoints_by_partition()
    producer.stalled.add(0)
    bound = 300 * size_of(0, "ep_0")
    log = AttemptLog(producer, "webhook.attempts", service="unit-one-stalled", max_bytes=bound)
    writer = asyncio.create_task(log.run())
    before = dropped("unit-one-stalled", "full")
    for n in range(3000):
        for partition in PARTITIONS:
            log.record(record(n, endpoints[partition][n % 4]))
        if n % 50 == 0:
            await asyncio.sleep(0.005)  # deliveries go on; the other partitions take batches
    await asyncio.sleep(0.05)

    assert len(producer.sent[1]) == len(producer.sent[2]) == 3000
    assert producer.sent[0] == []
    assert log.held_bytes <= bound
    full = dropped("unit-one-stalled", "full") - before
    assert full >= 3000 - 300
    producer.release(0)
    await asyncio.sleep(0.05)
    writer.cancel()
    assert len(producer.sent[0]) == 3000 - full
    assert ids(producer.sent[0]) == sorted(ids(producer.sent[0]), key=lambda i: int(i[4:]))
    assert log.held_bytes == 0


async def test_all_partitions_together_hold_at_most_the_total_bound(
    producer: StandInProducer,
) -> None:
    """However many partitions the topic has, a broker that takes nothing makes the log hold
    at most ``max_total_bytes`` of them all, each partition within its own bound."""
    endpoints = endpoints_by_partition()
    producer.stalled.update(PARTITIONS)
    per_partition = 100 * size_of(0, "ep_0")
    total = 150 * size_of(0, "ep_0")
    log = AttemptLog(
        producer,
        "webhook.attempts",
        service="unit-total",
        max_bytes=per_partition,
        max_total_bytes=total,
    )
    writer = asyncio.create_task(log.run())
    await asyncio.sleep(0)
    before = dropped("unit-total", "full")
    for n in range(1000):
        for partition in PARTITIONS:
            log.record(record(n, endpoints[partition][n % 4]))

    assert total - 3 * size_of(999, "ep_0") <= log.held_bytes <= total
    assert dropped("unit-total", "full") - before >= 3000 - 150
    for partition in PARTITIONS:
        producer.release(partition)
    await asyncio.sleep(0.05)
    writer.cancel()
    assert log.held_bytes == 0


async def test_failed_sends_are_counted_and_the_writer_goes_on(producer: StandInProducer) -> None:
    producer.fail = True
    log = AttemptLog(producer, "webhook.attempts", service="unit-failed")
    writer = asyncio.create_task(log.run())
    before = dropped("unit-failed", "send_failed")
    for n in range(3):
        log.record(record(n))
    await asyncio.sleep(0.01)
    producer.fail = False
    log.record(record(99))
    await asyncio.sleep(0.01)
    writer.cancel()

    assert dropped("unit-failed", "send_failed") - before == 3
    assert ids(producer.values()) == ["msg_99"]
    assert log.held_bytes == 0


async def test_each_record_of_a_batch_the_broker_refused_is_counted(
    producer: StandInProducer,
) -> None:
    producer.answer_with = RequestTimedOutError()
    log = AttemptLog(producer, "webhook.attempts", service="unit-refused")
    writer = asyncio.create_task(log.run())
    before = dropped("unit-refused", "send_failed")
    for n in range(40):
        log.record(record(n, f"ep_{n}"))
    await asyncio.sleep(0.01)
    writer.cancel()

    assert dropped("unit-refused", "send_failed") - before == 40
    assert log.held_bytes == 0


async def test_flush_writes_what_waits_once_the_writer_is_stopped(
    producer: StandInProducer,
) -> None:
    log = AttemptLog(producer, "webhook.attempts", service="unit-flush")
    writer = asyncio.create_task(log.run())
    await asyncio.sleep(0)
    writer.cancel()
    for n in range(200):
        log.record(record(n, f"ep_{n % 7}"))
    await log.flush(timeout_s=1.0)

    assert sorted(ids(producer.values())) == sorted(f"msg_{n}" for n in range(200))
