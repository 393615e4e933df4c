"""The partition worker against the real broker: bounded work in flight, still making progress
while saturated, and a watermark commit of everything finished."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import NewTopic

from shared.kafka.clients import Record, create_consumer, ensure_topics
from shared.kafka.partition_worker import PartitionWorker
from shared.ops.settings import Settings
from tests.support.topics import produce

pytestmark = pytest.mark.kafka

RECORDS = 200
MAX_IN_FLIGHT = 10
POLL_RECORDS = 1  # so that saturation is exactly MAX_IN_FLIGHT records


async def test_saturated_worker_keeps_the_loop_free_and_commits_everything_it_finished(
    settings: Settings,
) -> None:
    topic = settings.topic_prefix + "work"
    await ensure_topics(settings, [NewTopic(topic, 3, 1)])
    await produce(settings.kafka_bootstrap, topic, [b"%d" % n for n in range(RECORDS)])
    consumer = create_consumer(
        settings, group_id=settings.topic_prefix + "workers", max_poll_records=POLL_RECORDS
    )
    waiting: asyncio.Queue[asyncio.Event] = asyncio.Queue()
    in_flight = 0
    peak = 0
    finished: list[bytes] = []

    async def handle(record: Record) -> None:
        # Each record finishes only when another task lets it: that task needs the event
        # loop, so a worker that spins while saturated would never let anything finish.
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        go = asyncio.Event()
        await waiting.put(go)
        await go.wait()
        in_flight -= 1
        finished.append(record.value)

    async def release_one_by_one() -> None:
        while in_flight < MAX_IN_FLIGHT:  # noqa: ASYNC110 - until the worker is saturated
            await asyncio.sleep(0.01)
        # Saturated for longer than its poll timeout, the worker pauses fetching; then two
        # finish, too few to resume, and nothing more for a while: below its bound and still
        # paused, it must wait for room, not poll in a loop that never yields.
        await asyncio.sleep(0.7)
        for _ in range(2):
            (await waiting.get()).set()
        await asyncio.sleep(1.0)
        while True:
            (await waiting.get()).set()
            await asyncio.sleep(0.001)

    worker = PartitionWorker(consumer, handle, max_in_flight=MAX_IN_FLIGHT, drain_grace_s=5)
    consumer.subscribe([topic], listener=worker.listener)
    stop = asyncio.Event()
    await consumer.start()
    releaser = asyncio.create_task(release_one_by_one())
    running = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(60):
            while len(finished) < RECORDS:  # noqa: ASYNC110 - the handlers append as they finish
                await asyncio.sleep(0.05)
        stop.set()
        await running
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        committed = {tp: await consumer.committed(tp) for tp in partitions}
        ends = await consumer.end_offsets(partitions)
    finally:
        stop.set()
        releaser.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await releaser
        await consumer.stop()

    assert sorted(finished, key=int) == [b"%d" % n for n in range(RECORDS)]
    # A poll takes a whole batch even when it fills the last free slot.
    assert peak <= MAX_IN_FLIGHT + POLL_RECORDS - 1
    assert committed == ends


async def test_the_next_owner_skips_what_finished_above_the_committed_offset(
    settings: Settings,
) -> None:
    topic = settings.topic_prefix + "resume"
    group = settings.topic_prefix + "resumers"
    await ensure_topics(settings, [NewTopic(topic, 1, 1)])
    await produce(settings.kafka_bootstrap, topic, [b"%d" % n for n in range(50)])
    finished: list[int] = []

    async def first_owner(record: Record) -> None:
        if record.offset == 0:
            await asyncio.Event().wait()  # stuck: it holds the committed offset at 0
        finished.append(record.offset)

    first = create_consumer(settings, group_id=group)
    worker = PartitionWorker(first, first_owner, max_in_flight=100, drain_grace_s=0.1)
    first.subscribe([topic], listener=worker.listener)
    await first.start()
    running = asyncio.create_task(worker.run(asyncio.Event()))
    try:
        async with asyncio.timeout(30):
            while len(finished) < 49:  # noqa: ASYNC110 - the handlers append as they finish
                await asyncio.sleep(0.05)
        await worker.commit()
    finally:
        running.cancel()  # a crash: no drain, the stuck record never finishes
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await first.stop()

    redone: list[int] = []

    async def next_owner(record: Record) -> None:
        redone.append(record.offset)

    second = create_consumer(settings, group_id=group)
    stop = asyncio.Event()
    next_worker = PartitionWorker(second, next_owner, max_in_flight=100, drain_grace_s=1)
    second.subscribe([topic], listener=next_worker.listener)
    await second.start()
    resumed = asyncio.create_task(next_worker.run(stop))
    try:
        async with asyncio.timeout(30):
            while not redone:  # noqa: ASYNC110 - the handler appends
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # anything else would be read by now
        stop.set()
        await resumed
        committed = await second.committed(TopicPartition(topic, 0))
    finally:
        stop.set()
        await second.stop()

    assert sorted(finished) == list(range(1, 50))
    assert redone == [0]
    assert committed == 50
