"""The producers' partitioner remembers each key's hash; it must place every key exactly
where aiokafka's default partitioner (and so the Java client) would."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from shared.kafka.clients import create_audit_producer, create_producer, partition_for_key
from shared.ops.settings import Settings

PARTITIONS = st.integers(min_value=1, max_value=64).map(lambda n: list(range(n)))


@given(key=st.binary(max_size=64), partitions=PARTITIONS)
def test_a_key_goes_where_the_default_partitioner_puts_it(
    key: bytes, partitions: list[int]
) -> None:
    expected = DefaultPartitioner()(key, partitions, partitions)
    assert partition_for_key(key, partitions, partitions) == expected
    assert partition_for_key(key, partitions, partitions) == expected  # remembered


def test_no_key_goes_to_an_available_partition() -> None:
    assert partition_for_key(None, [0, 1, 2], [2]) == 2


async def test_the_producers_use_it() -> None:
    settings = Settings()
    for producer in (create_producer(settings), create_audit_producer(settings)):
        assert producer._partitioner is partition_for_key
        await producer.stop()
