"""Consumer lag arithmetic: positions, tier delays, due bounds, exported series."""

from __future__ import annotations

import re

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import REGISTRY

from shared.kafka.lag import (
    LagMonitor,
    PartitionOffsets,
    TopicLag,
    committed_offset,
    dispatcher_lag_scope,
    lag_by_topic,
    retry_lag_scope,
    surely_due_before_ms,
    tier_delay_s,
)
from shared.ops.settings import load_settings


@pytest.mark.parametrize(
    ("offsets", "lag"),
    [
        (PartitionOffsets(start=0, end=10, committed=4), 6),
        (PartitionOffsets(start=0, end=10), 10),  # never committed: from the earliest
        (PartitionOffsets(start=7, end=10, committed=3), 3),  # retention passed the commit
        (PartitionOffsets(start=0, end=10, committed=10), 0),
        (PartitionOffsets(start=5, end=5), 0),  # empty log
    ],
)
def test_lag_is_end_minus_where_the_group_resumes(offsets: PartitionOffsets, lag: int) -> None:
    assert offsets.lag == lag


@pytest.mark.parametrize(
    ("offsets", "due"),
    [
        (PartitionOffsets(start=0, end=10, committed=2, due_end=6), 4),
        (PartitionOffsets(start=0, end=10, committed=8, due_end=6), 0),  # consumed past it
        (PartitionOffsets(start=0, end=10, committed=2, due_end=12), 8),  # capped at the end
        (PartitionOffsets(start=0, end=10, committed=2), 0),  # not a retry tier
    ],
)
def test_due_counts_unconsumed_records_below_the_due_bound(
    offsets: PartitionOffsets, due: int
) -> None:
    assert offsets.due == due
    assert 0 <= offsets.due <= offsets.lag


def test_lag_is_summed_per_topic() -> None:
    offsets = {
        TopicPartition("a", 0): PartitionOffsets(0, 10, 5, due_end=8),
        TopicPartition("a", 1): PartitionOffsets(0, 4, None, due_end=1),
        TopicPartition("b", 0): PartitionOffsets(0, 3, 3),
    }

    totals = lag_by_topic(offsets)

    assert totals == {"a": TopicLag(lag=9, due=4), "b": TopicLag(lag=0, due=0)}
    assert totals["a"].waiting == 5


def test_a_missing_commit_reads_as_none() -> None:
    assert committed_offset(None) is None
    assert committed_offset(OffsetAndMetadata(-1, "")) is None
    assert committed_offset(OffsetAndMetadata(42, "")) == 42


@pytest.mark.parametrize(
    ("topic", "delay_s"),
    [
        ("p.webhook.retry.5s", 5.0),
        ("p.webhook.retry.30m", 1800.0),
        ("p.webhook.retry.250ms", 0.25),
        ("p.webhook.retry.soon", None),
        ("other.webhook.retry.5s", None),
        ("p.clicks", None),
    ],
)
def test_a_tier_topic_spells_its_delay(topic: str, delay_s: float | None) -> None:
    assert tier_delay_s(topic, "p.webhook.retry.") == delay_s


def test_records_older_than_delay_plus_full_jitter_are_surely_due() -> None:
    assert surely_due_before_ms(1_000_000, 100.0) == 1_000_000 - 110_000
    assert surely_due_before_ms(1_000, 100.0) == 0, "never a negative timestamp"


def test_scopes_are_the_services_groups_and_topics() -> None:
    settings = load_settings(
        {
            "CLICKHOOK_TOPIC_PREFIX": "acme.",
            "CLICKHOOK_RETRY_SCHEDULE": "5s,1m,1m",
            "CLICKHOOK_BREAKER_COOLDOWN": "1m",
            "CLICKHOOK_BREAKER_MAX_COOLDOWN": "2m",
        }
    )
    dispatcher = dispatcher_lag_scope(settings)
    retry = retry_lag_scope(settings)

    assert (dispatcher.group, dispatcher.topics) == ("acme.clickhook-dispatcher", ("acme.clicks",))
    assert dispatcher.wanted(["acme.webhook.retry.5s"]) == ["acme.clicks"]
    assert retry.group == "acme.clickhook-retry"
    assert retry.tier_prefix == "acme.webhook.retry."
    existing = ["acme.webhook.retry.2h", "acme.clicks", "other.webhook.retry.1m"]
    assert retry.wanted(existing) == [
        "acme.webhook.retry.1m",
        "acme.webhook.retry.2h",  # a tier of an older schedule still drains
        "acme.webhook.retry.2m",  # where deliveries wait while their endpoint is down
        "acme.webhook.retry.5s",
    ]
    assert retry.pattern is not None
    assert all(re.match(retry.pattern, topic) for topic in retry.topics)


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_export_sets_lag_and_the_tiers_split_and_forgets_vanished_topics() -> None:
    settings = load_settings({"CLICKHOOK_TOPIC_PREFIX": "unit-export."})
    scope = retry_lag_scope(settings)
    monitor = LagMonitor(settings, scope)
    old, current = "unit-export.webhook.retry.9h", "unit-export.webhook.retry.5s"

    monitor._export({old: TopicLag(lag=4, due=1), current: TopicLag(lag=7, due=7)})
    monitor._export({current: TopicLag(lag=2, due=0)})

    group = scope.group
    assert gauge("clickhook_kafka_consumer_lag", group=group, topic=current) == 2
    assert gauge("clickhook_retry_envelopes", topic=current, state="due") == 0
    assert gauge("clickhook_retry_envelopes", topic=current, state="waiting") == 2
    assert gauge("clickhook_kafka_consumer_lag", group=group, topic=old) is None
    assert gauge("clickhook_retry_envelopes", topic=old, state="waiting") is None


async def test_a_failed_sample_is_counted_and_never_raises() -> None:
    settings = load_settings({"CLICKHOOK_KAFKA_BOOTSTRAP": "127.0.0.1:9"})
    scope = dispatcher_lag_scope(settings)
    monitor = LagMonitor(settings, scope)
    before = gauge("clickhook_kafka_lag_sample_errors_total", group=scope.group) or 0

    # The unit tests' network is switched off: it must fail.
    assert await monitor._sample_safely() is False

    assert gauge("clickhook_kafka_lag_sample_errors_total", group=scope.group) == before + 1
