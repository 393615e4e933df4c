"""The partition worker against the real broker: bounded work in flight, still making progress
while saturated, a watermark commit of everything finished, and records held until due."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.structs import OffsetAndMetadata

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


REBALANCE_RECORDS = 400  # 8 s of work for one worker: the second joins early on


# --- records that must wait: held until due, each fetched and started once -------------------


def _due_ms(record: Record) -> int | None:
    """These tests' records carry their due time (unix ms) as their value."""
    return int(record.value) if record.value else None


async def _run_until(
    worker: PartitionWorker, consumer: AIOKafkaConsumer, done: Callable[[], bool]
) -> None:
    stop = asyncio.Event()
    await consumer.start()
    running = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(60):
            while not done():  # noqa: ASYNC110 - the handlers report as they start
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await running


async def test_held_records_start_once_each_and_never_before_they_are_due(
    settings: Settings,
) -> None:
    topic = settings.topic_prefix + "due"
    await ensure_topics(settings, [NewTopic(topic, 1, 1)])
    now_ms = int(time.time() * 1000)
    # Due soon, 10 ms apart (held behind the head, started as they fall due); then one due
    # after the park threshold (not held: fetched again shortly before it is due); then more
    # behind it.
    due = [now_ms + 500 + 10 * n for n in range(100)]
    due += [due[-1] + 2500 + 10 * n for n in range(100)]
    await produce(settings.kafka_bootstrap, topic, [b"%d" % at for at in due])
    started: list[tuple[int, int]] = []

    async def handle(record: Record) -> None:
        started.append((record.offset, int(time.time() * 1000)))

    consumer = create_consumer(settings, group_id=settings.topic_prefix + "holders")
    worker = PartitionWorker(
        consumer, handle, max_in_flight=1000, drain_grace_s=1, not_before_ms=_due_ms
    )
    consumer.subscribe([topic], listener=worker.listener)
    try:
        await _run_until(worker, consumer, lambda: len(started) >= len(due))
        committed = await consumer.committed(TopicPartition(topic, 0))
    finally:
        await consumer.stop()

    assert [offset for offset, _ in started] == list(range(len(due)))
    assert [offset for offset, at_ms in started if at_ms < due[offset]] == []
    assert committed == len(due)


async def test_held_records_due_while_the_bound_is_full_wait_their_turn_in_order(
    settings: Settings,
) -> None:
    topic = settings.topic_prefix + "due_full"
    await ensure_topics(settings, [NewTopic(topic, 2, 1)])
    now_ms = int(time.time() * 1000)
    # One partition's records fall due 5 ms apart over 2 s and are held a batch at a time; the
    # other's are due now and keep the bound full (ten at a time, 50 ms each, for about 5 s): held
    # records fall due while there is no room, and must start later, in order, once each, never
    # more than the bound at once.
    held = [now_ms + 1500 + 5 * n for n in range(400)]
    await produce(settings.kafka_bootstrap, topic, [b"%d" % at for at in held], key=b"waits")
    await produce(settings.kafka_bootstrap, topic, [b"0"] * 1000, key=b"ready")
    started: dict[int, list[tuple[int, int, int]]] = {0: [], 1: []}
    in_flight = 0
    most_in_flight = 0

    async def handle(record: Record) -> None:
        nonlocal in_flight, most_in_flight
        due_ms = _due_ms(record) or 0
        started[record.partition].append((record.offset, due_ms, int(time.time() * 1000)))
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1

    consumer = create_consumer(settings, group_id=settings.topic_prefix + "full")
    worker = PartitionWorker(
        consumer, handle, max_in_flight=MAX_IN_FLIGHT, drain_grace_s=1, not_before_ms=_due_ms
    )
    consumer.subscribe([topic], listener=worker.listener)
    try:
        await _run_until(worker, consumer, lambda: sum(map(len, started.values())) >= 1400)
    finally:
        await consumer.stop()

    for partition_started in started.values():
        offsets = [offset for offset, _, _ in partition_started]
        assert offsets == list(range(len(offsets)))
        assert [o for o, due_ms, at_ms in partition_started if at_ms < due_ms] == []
    assert sorted(map(len, started.values())) == [400, 1000]
    assert most_in_flight <= MAX_IN_FLIGHT


async def test_a_partition_waiting_for_its_head_holds_no_other_back(settings: Settings) -> None:
    topic = settings.topic_prefix + "apart"
    await ensure_topics(settings, [NewTopic(topic, 2, 1)])
    later_ms = int(time.time() * 1000) + 60_000
    waiting, ready = b"%d" % later_ms, b"0"
    # The two keys fall in different partitions (murmur2, as Kafka's Java client).
    await produce(settings.kafka_bootstrap, topic, [waiting] * 10, key=b"waits")
    await produce(settings.kafka_bootstrap, topic, [ready] * 200, key=b"ready")
    started: list[bytes] = []

    async def handle(record: Record) -> None:
        started.append(record.value)

    consumer = create_consumer(settings, group_id=settings.topic_prefix + "apart")
    worker = PartitionWorker(
        consumer, handle, max_in_flight=1000, drain_grace_s=1, not_before_ms=_due_ms
    )
    consumer.subscribe([topic], listener=worker.listener)
    try:
        await _run_until(worker, consumer, lambda: len(started) >= 200)
    finally:
        await consumer.stop()

    assert started == [ready] * 200


TIERS = 3
TIER_PARTITIONS = 4
BEHIND_HEAD = 20
READY = 200
WAIT_S = 6.0


async def _produce_to_partitions(bootstrap: str, records: list[tuple[str, int, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        sent = [await producer.send(t, value=v, partition=p) for t, p, v in records]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def test_waiting_partitions_hold_no_more_than_the_bound_and_starve_no_due_work(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # More tier-like partitions wait than the bound has room for, each for a head a few
    # seconds off with records behind it, beside a partition whose records are due now. Held
    # and running records together never exceed the bound; the due records are not kept
    # waiting behind the held ones; each record starts once, in order, never early.
    tiers = [settings.topic_prefix + f"tier{n}" for n in range(TIERS)]
    ready_topic = settings.topic_prefix + "ready"
    await ensure_topics(
        settings, [NewTopic(t, TIER_PARTITIONS, 1) for t in tiers] + [NewTopic(ready_topic, 1, 1)]
    )
    head_due_ms = int(time.time() * 1000 + WAIT_S * 1000)
    waiting = [
        (topic, partition, b"%d" % (head_due_ms + 10 * n))
        for topic in tiers
        for partition in range(TIER_PARTITIONS)
        for n in range(1 + BEHIND_HEAD)
    ]
    await _produce_to_partitions(
        settings.kafka_bootstrap, waiting + [(ready_topic, 0, b"0")] * READY
    )
    consumer = create_consumer(settings, group_id=settings.topic_prefix + "tiers")
    started: dict[TopicPartition, list[tuple[int, int, int]]] = {}
    ready_order: list[str] = []
    over_bound: list[int] = []

    async def handle(record: Record) -> None:
        over_bound.extend([worker.occupancy] if worker.occupancy > MAX_IN_FLIGHT else [])
        tp = TopicPartition(record.topic, record.partition)
        at_ms = int(time.time() * 1000)
        started.setdefault(tp, []).append((record.offset, _due_ms(record) or 0, at_ms))
        ready_order.append(record.topic)
        await asyncio.sleep(0.02)

    _note_fetches_over_the_bound(monkeypatch, consumer, lambda: worker.occupancy, over_bound)
    worker = PartitionWorker(
        consumer, handle, max_in_flight=MAX_IN_FLIGHT, drain_grace_s=1, not_before_ms=_due_ms
    )
    consumer.subscribe([*tiers, ready_topic], listener=worker.listener)
    total = len(waiting) + READY
    try:
        await _run_until(worker, consumer, lambda: sum(map(len, started.values())) >= total)
    finally:
        await consumer.stop()

    assert over_bound == []
    # Nothing of a tier started before every due record had (the tiers' heads were seconds off).
    assert ready_order[:READY] == [ready_topic] * READY
    for tp, partition_started in started.items():
        offsets = [offset for offset, _, _ in partition_started]
        assert offsets == list(range(READY if tp.topic == ready_topic else 1 + BEHIND_HEAD))
        assert [o for o, due_ms, at_ms in partition_started if at_ms < due_ms] == []
    assert len(started) == TIERS * TIER_PARTITIONS + 1


# Two tiers: the first's records fall due over 6 s, far more of them than the bound; the
# second's head falls due just after the first's.
FIRST_TIER = 24
FIRST_TIER_APART_MS = 250
SECOND_TIER = 10
SECOND_TIER_APART_MS = 50
SECOND_AFTER_FIRST_MS = 100
# A held record starts at most HELD_STEP_MS after its due time; the rest is the loop's turn.
LATE_AT_MOST_MS = 150


async def test_a_tier_with_more_records_due_than_the_bound_starves_no_other_tiers_head(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bench's 3 s tier (issue 26 follow-up): a first tier's records, more than the bound,
    due over seconds; a second tier's head due 0.1 s after the first's. Were everything fetched
    behind the first tier's head held, it would fill the bound (the worker fetches only what
    fits) and the second tier's head, fetched only once the first's had started down to the
    resume share (three of them, 0.5 s), would start some 0.4 s late. Held behind a head is
    only what falls due within ``PARK_AFTER_S``: the second tier's records start within
    ``LATE_AT_MOST_MS`` of due, every record once, in order, never early, and held + running
    never exceed the bound."""
    first, second = (settings.topic_prefix + name for name in ("first", "second"))
    await ensure_topics(settings, [NewTopic(first, 1, 1), NewTopic(second, 1, 1)])
    # Far enough off that both heads are first parked, then fetched a second before due.
    first_due_ms = int(time.time() * 1000) + 3500
    second_due_ms = first_due_ms + SECOND_AFTER_FIRST_MS
    records = [
        (first, 0, b"%d" % (first_due_ms + FIRST_TIER_APART_MS * n)) for n in range(FIRST_TIER)
    ]
    records += [
        (second, 0, b"%d" % (second_due_ms + SECOND_TIER_APART_MS * n)) for n in range(SECOND_TIER)
    ]
    await _produce_to_partitions(settings.kafka_bootstrap, records)
    consumer = create_consumer(settings, group_id=settings.topic_prefix + "two_tiers")
    started: dict[str, list[tuple[int, int, int]]] = {first: [], second: []}
    over_bound: list[int] = []

    async def handle(record: Record) -> None:
        over_bound.extend([worker.occupancy] if worker.occupancy > MAX_IN_FLIGHT else [])
        at_ms = int(time.time() * 1000)
        started[record.topic].append((record.offset, _due_ms(record) or 0, at_ms))

    _note_fetches_over_the_bound(monkeypatch, consumer, lambda: worker.occupancy, over_bound)
    worker = PartitionWorker(
        consumer, handle, max_in_flight=MAX_IN_FLIGHT, drain_grace_s=1, not_before_ms=_due_ms
    )
    consumer.subscribe([first, second], listener=worker.listener)
    try:
        await _run_until(worker, consumer, lambda: sum(map(len, started.values())) >= len(records))
    finally:
        await consumer.stop()

    assert over_bound == []
    for topic, count in ((first, FIRST_TIER), (second, SECOND_TIER)):
        assert [offset for offset, _, _ in started[topic]] == list(range(count))
        assert [o for o, due_ms, at_ms in started[topic] if at_ms < due_ms] == []
    lateness_ms = [at_ms - due_ms for _, due_ms, at_ms in started[second]]
    assert max(lateness_ms) <= LATE_AT_MOST_MS, lateness_ms


# --- a rebalance without a crash: nothing done twice ------------------------------------------


async def test_a_rebalance_without_a_crash_does_no_record_twice(settings: Settings) -> None:
    """While a revoke waits for the lost partitions' work to finish, the loop runs on: a record
    it held and started then would run past the revoke's commit, and the next owner would do
    it again. Records fall due 20 ms apart, each takes 0.2 s: the first worker is saturated,
    holding records, when the second joins."""
    topic = settings.topic_prefix + "handover"
    group = settings.topic_prefix + "handovers"
    await ensure_topics(settings, [NewTopic(topic, 4, 1)])
    first_due_ms = int(time.time() * 1000) + 2000
    await produce(
        settings.kafka_bootstrap,
        topic,
        [b"%d" % (first_due_ms + 20 * n) for n in range(REBALANCE_RECORDS)],
    )
    done: list[tuple[int, int]] = []

    async def handle(record: Record) -> None:
        await asyncio.sleep(0.2)
        done.append((record.partition, record.offset))

    stop = asyncio.Event()
    consumers: list[AIOKafkaConsumer] = []
    running: list[asyncio.Task[None]] = []

    async def join() -> None:
        consumer = create_consumer(settings, group_id=group)
        worker = PartitionWorker(
            consumer, handle, max_in_flight=10, drain_grace_s=5, not_before_ms=_due_ms
        )
        consumer.subscribe([topic], listener=worker.listener)
        await consumer.start()
        consumers.append(consumer)
        running.append(asyncio.create_task(worker.run(stop)))

    try:
        await join()
        async with asyncio.timeout(60):
            while len(done) < 50:  # noqa: ASYNC110 - the handlers append as they finish
                await asyncio.sleep(0.05)
            await join()  # the group rebalances while the first worker is busy
            while len(set(done)) < REBALANCE_RECORDS:  # noqa: ASYNC110 - as above
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*running)
        for consumer in consumers:
            await consumer.stop()

    twice = [key for key, count in Counter(done).items() if count > 1]
    assert twice == [], f"{len(twice)} records done twice, e.g. {twice[:5]}"


async def test_a_slow_commit_stops_no_delivery_and_commits_never_overlap(
    settings: Settings,
) -> None:
    """A broker that takes 0.3 s per commit, three times the commit interval: the records
    produced meanwhile are handled without waiting for it, the commits run one at a time with
    offsets that never go back, and the stop commits everything handled."""
    topic = settings.topic_prefix + "slow-commit"
    await ensure_topics(settings, [NewTopic(topic, 1, 1)])
    consumer = create_consumer(settings, group_id=settings.topic_prefix + "slow-commit")
    handled_at: dict[bytes, float] = {}
    commits: list[tuple[float, float, int]] = []  # start, end, offset
    committing = 0
    real_commit = consumer.commit

    async def slow_commit(offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        nonlocal committing
        committing += 1
        assert committing == 1, "commits overlap"
        started = time.monotonic()
        await asyncio.sleep(0.3)
        await real_commit(offsets)
        committing -= 1
        (meta,) = offsets.values()
        commits.append((started, time.monotonic(), meta.offset))

    consumer.commit = slow_commit

    async def handle(record: Record) -> None:
        handled_at[record.value] = time.monotonic()

    worker = PartitionWorker(consumer, handle, max_in_flight=MAX_IN_FLIGHT, drain_grace_s=5)
    consumer.subscribe([topic], listener=worker.listener)
    stop = asyncio.Event()
    await consumer.start()
    running = asyncio.create_task(worker.run(stop))
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    produced_at: dict[bytes, float] = {}
    try:
        async with asyncio.timeout(60):
            while not consumer.assignment():  # noqa: ASYNC110 - until the group has formed
                await asyncio.sleep(0.05)
            for n in range(RECORDS):
                value = b"%d" % n
                await producer.send_and_wait(topic, value)
                produced_at[value] = time.monotonic()
                await asyncio.sleep(0.01)
            while len(handled_at) < RECORDS:  # noqa: ASYNC110 - the handler records as it runs
                await asyncio.sleep(0.05)
        stop.set()
        await running
        tp = TopicPartition(topic, 0)
        committed = await consumer.committed(tp)
        (end,) = (await consumer.end_offsets([tp])).values()
    finally:
        stop.set()
        await producer.stop()
        await consumer.stop()

    waits = sorted(handled_at[value] - produced_at[value] for value in produced_at)
    during_commits = [
        value
        for value, at in handled_at.items()
        if any(start < at < end for start, end, _ in commits)
    ]
    assert len(commits) >= 5
    assert len(during_commits) >= RECORDS // 2  # commits take most of the time
    assert waits[int(0.99 * len(waits))] < 0.2  # none waited out a 0.3 s commit
    offsets = [offset for _, _, offset in commits]
    assert offsets == sorted(offsets)
    assert committed == end


def _note_fetches_over_the_bound(
    monkeypatch: pytest.MonkeyPatch,
    consumer: AIOKafkaConsumer,
    occupancy: Callable[[], int],
    over_bound: list[int],
) -> None:
    """Wraps the consumer's ``getmany`` to note each fetch that would not fit the bound: what
    is fetched is about to be held or started, so it must fit beside what already is."""
    real_getmany = consumer.getmany

    async def getmany_within_the_bound(
        *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Record]]:
        batches: dict[TopicPartition, list[Record]] = await real_getmany(
            *partitions, timeout_ms=timeout_ms, max_records=max_records
        )
        fetched = sum(map(len, batches.values()))
        if occupancy() + fetched > MAX_IN_FLIGHT:
            over_bound.append(occupancy() + fetched)
        return batches

    monkeypatch.setattr(consumer, "getmany", getmany_within_the_bound)
