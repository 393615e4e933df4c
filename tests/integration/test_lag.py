"""Consumer lag measured against the real broker: commits, the log start, due and waiting."""

from __future__ import annotations

import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import REGISTRY

from shared.kafka.clients import ensure_topics
from shared.kafka.lag import LagMonitor, TopicLag, dispatcher_lag_scope, retry_lag_scope
from shared.ops.settings import Settings
from tests.integration.conftest import make_settings

pytestmark = pytest.mark.kafka


async def produce_at(
    bootstrap: str, tp: TopicPartition, count: int, timestamp_ms: int | None = None
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for n in range(count):
            await producer.send_and_wait(
                tp.topic, b"x%d" % n, partition=tp.partition, timestamp_ms=timestamp_ms
            )
    finally:
        await producer.stop()


async def commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
    finally:
        await consumer.stop()


async def sample(settings: Settings, monitor: LagMonitor) -> dict[str, TopicLag]:
    try:
        return await monitor.sample()
    finally:
        await monitor.close()


async def test_dispatcher_lag_is_end_minus_commit_and_counts_uncommitted_from_the_start(
    kafka_bootstrap: str, prefix: str
) -> None:
    settings = make_settings(kafka_bootstrap, prefix)
    await ensure_topics(settings)
    scope = dispatcher_lag_scope(settings)
    clicks = scope.topics[0]
    await produce_at(kafka_bootstrap, TopicPartition(clicks, 0), 5)
    await produce_at(kafka_bootstrap, TopicPartition(clicks, 1), 2)
    await commit(kafka_bootstrap, scope.group, {TopicPartition(clicks, 0): 2})

    totals = await sample(settings, LagMonitor(settings, scope))

    assert totals == {clicks: TopicLag(lag=3 + 2, due=0)}
    exported = REGISTRY.get_sample_value(
        "clickhook_kafka_consumer_lag", {"group": scope.group, "topic": clicks}
    )
    assert exported == 5


async def test_retry_lag_splits_due_from_waiting_in_every_tier_topic(
    kafka_bootstrap: str, prefix: str
) -> None:
    # One tier: the schedule's delay is also the breaker's only deferral wait.
    settings = make_settings(
        kafka_bootstrap,
        prefix,
        retry_schedule_s=(60.0,),
        breaker_cooldown_s=60.0,
        breaker_max_cooldown_s=60.0,
    )
    old_tier = f"{prefix}webhook.retry.5h"  # of an older schedule: found by the pattern
    await ensure_topics(settings, [NewTopic(old_tier, 1, 1)])
    await ensure_topics(settings)
    scope = retry_lag_scope(settings)
    (tier,) = scope.topics
    now_ms = int(time.time() * 1000)
    tp = TopicPartition(tier, 0)
    await produce_at(kafka_bootstrap, tp, 4, timestamp_ms=now_ms - 10 * 60_000)  # due
    await produce_at(kafka_bootstrap, tp, 2, timestamp_ms=now_ms)  # due in a minute
    await produce_at(kafka_bootstrap, TopicPartition(old_tier, 0), 1, timestamp_ms=now_ms)
    await commit(kafka_bootstrap, scope.group, {tp: 1})

    totals = await sample(settings, LagMonitor(settings, scope))

    assert totals == {tier: TopicLag(lag=5, due=3), old_tier: TopicLag(lag=1, due=0)}
    for state, value in (("due", 3), ("waiting", 2)):
        labels = {"topic": tier, "state": state}
        assert REGISTRY.get_sample_value("clickhook_retry_envelopes", labels) == value
