"""When a topic counts as ready: described, and every partition with a leader."""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition

from shared.kafka.metadata import ready_partitions

UNKNOWN_TOPIC = 3
LEADER_NOT_AVAILABLE = 5


def _described(error_code: int, leaders: list[int]) -> list[dict[str, Any]]:
    partitions = [{"partition": p, "leader": leader} for p, leader in enumerate(leaders)]
    return [{"topic": "t", "error_code": error_code, "partitions": partitions}]


def test_a_topic_the_broker_does_not_know_yet_has_no_ready_partitions() -> None:
    assert ready_partitions(_described(UNKNOWN_TOPIC, []), "t") == []


def test_a_topic_with_a_partition_still_without_a_leader_is_not_ready() -> None:
    assert ready_partitions(_described(0, [1, -1]), "t") == []


def test_a_topic_described_with_an_error_is_not_ready() -> None:
    assert ready_partitions(_described(LEADER_NOT_AVAILABLE, [1]), "t") == []


def test_a_topic_whose_partitions_all_have_leaders_is_ready_in_partition_order() -> None:
    described = _described(0, [1, 1, 1])
    described[0]["partitions"].reverse()

    assert ready_partitions(described, "t") == [TopicPartition("t", p) for p in range(3)]


def test_another_topic_in_the_answer_is_not_taken_for_this_one() -> None:
    described = _described(0, [1])
    described[0]["topic"] = "other"

    assert ready_partitions(described, "t") == []
