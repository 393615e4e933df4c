"""An idempotent producer whose sequence the broker lost sends again (shared.kafka.idempotence).

The lost batch is made the way a broker restart makes it: the producer's next sequence number
for the partition is moved past what the broker has, so the broker answers
``OUT_OF_ORDER_SEQUENCE_NUMBER`` to every later batch, as it did in the ledger test.
"""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import OutOfOrderSequenceNumber

from shared.kafka.clients import create_producer, ensure_topics
from shared.ops.settings import Settings

pytestmark = pytest.mark.kafka

LOST_BATCHES = 3


async def lose_a_batch(producer: AIOKafkaProducer, tp: TopicPartition) -> None:
    """Send one record, then skip sequence numbers as if batches had gone missing."""
    await producer.send_and_wait(tp.topic, b"before", partition=tp.partition)
    producer._txn_manager.increment_sequence_number(tp, LOST_BATCHES)


async def test_the_services_producer_sends_again_under_a_new_producer_id(
    settings: Settings,
) -> None:
    tp = TopicPartition(settings.topic_prefix + "sequence", 0)
    await ensure_topics(settings, [NewTopic(tp.topic, 1, 1)])
    producer = create_producer(settings)
    await producer.start()
    try:
        await lose_a_batch(producer, tp)
        first_id = producer._txn_manager.producer_id
        with pytest.raises(OutOfOrderSequenceNumber):
            await producer.send_and_wait(tp.topic, b"lost", partition=tp.partition)
        await producer.send_and_wait(tp.topic, b"after", partition=tp.partition)
        await producer.send_and_wait(tp.topic, b"and on", partition=tp.partition)
        assert producer._txn_manager.producer_id != first_id
    finally:
        await producer.stop()


async def test_aiokafka_alone_never_sends_again(settings: Settings) -> None:
    """The oracle for the state above: without the recovery every later send fails."""
    tp = TopicPartition(settings.topic_prefix + "sequence-plain", 0)
    await ensure_topics(settings, [NewTopic(tp.topic, 1, 1)])
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        await lose_a_batch(producer, tp)
        for _ in range(3):
            with pytest.raises(OutOfOrderSequenceNumber):
                await producer.send_and_wait(tp.topic, b"lost", partition=tp.partition)
    finally:
        await producer.stop()
