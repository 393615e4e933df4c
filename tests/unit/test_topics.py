"""Topic and group names, with a deployment prefix."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.model.schedule import parse_duration_s, parse_schedule
from shared.model.topics import (
    DISPATCHER_GROUP,
    HEADER_ENDPOINTS_AT,
    RETRY_GROUP,
    Topics,
    endpoints_at,
    endpoints_at_headers,
)

KAFKA_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
_prefixes = st.text(alphabet=KAFKA_NAME_CHARS, max_size=12)
_delays_ms = st.integers(min_value=1, max_value=30 * 86_400_000)


def test_topic_names_without_prefix() -> None:
    topics = Topics()
    assert (topics.clicks, topics.clicks_invalid, topics.endpoints) == (
        "clicks",
        "clicks.invalid",
        "webhook.endpoints",
    )
    assert (topics.dlq, topics.attempts) == ("webhook.dlq", "webhook.attempts")


def test_topic_names_carry_the_prefix() -> None:
    topics = Topics("staging.")
    assert topics.clicks == "staging.clicks"
    assert topics.clicks_invalid == "staging.clicks.invalid"
    assert topics.endpoints == "staging.webhook.endpoints"
    assert topics.dlq == "staging.webhook.dlq"
    assert topics.attempts == "staging.webhook.attempts"


def test_groups_carry_the_prefix() -> None:
    topics = Topics("staging.")
    assert topics.group(DISPATCHER_GROUP) == "staging.clickhook-dispatcher"
    assert topics.group(RETRY_GROUP) == "staging.clickhook-retry"


@pytest.mark.parametrize(
    ("delay_s", "topic"),
    [
        (5.0, "webhook.retry.5s"),
        (300.0, "webhook.retry.5m"),
        (0.25, "webhook.retry.250ms"),
        (36000.0, "webhook.retry.10h"),
        (86400.0, "webhook.retry.1d"),
    ],
)
def test_retry_topic_is_named_for_its_delay(delay_s: float, topic: str) -> None:
    assert Topics().retry(delay_s) == topic


def test_retry_tiers_are_distinct_and_in_schedule_order() -> None:
    schedule = parse_schedule("5s,5m,30m,2h,5h,10h,10h")
    assert Topics("p.").retry_tiers(schedule) == [
        "p.webhook.retry.5s",
        "p.webhook.retry.5m",
        "p.webhook.retry.30m",
        "p.webhook.retry.2h",
        "p.webhook.retry.5h",
        "p.webhook.retry.10h",
    ]


def test_equal_delays_written_differently_share_a_topic() -> None:
    assert Topics().retry_tiers(parse_schedule("60s,1m,60000ms")) == ["webhook.retry.1m"]


@pytest.mark.parametrize(
    "topic",
    ["p.webhook.retry.5s", "p.webhook.retry.250ms", "p.webhook.retry.10h", "p.webhook.retry.3d"],
)
def test_retry_pattern_matches_tier_topics_of_any_schedule(topic: str) -> None:
    assert re.match(Topics("p.").retry_pattern, topic)


@pytest.mark.parametrize(
    "topic",
    [
        "p.webhook.dlq",
        "p.webhook.retry.",
        "p.webhook.retry.5",
        "p.webhook.retry.5x",
        "p.webhook.retry.5s.old",
        "q.webhook.retry.5s",
        "pXwebhook.retry.5s",
        "webhook.retry.5s",
        "x.p.webhook.retry.5s",
    ],
)
def test_retry_pattern_matches_nothing_else(topic: str) -> None:
    assert re.match(Topics("p.").retry_pattern, topic) is None


@settings(max_examples=200, deadline=None)
@given(prefix=_prefixes, delay_ms=_delays_ms)
def test_retry_topic_names_round_trip_to_their_delay(prefix: str, delay_ms: int) -> None:
    topics = Topics(prefix)
    topic = topics.retry(delay_ms / 1000)
    assert re.match(topics.retry_pattern, topic)
    label = topic.removeprefix(prefix + "webhook.retry.")
    assert parse_duration_s(label) == pytest.approx(delay_ms / 1000, rel=1e-12)
    assert topics.retry(parse_duration_s(label)) == topic


@settings(max_examples=200, deadline=None)
@given(prefix=_prefixes, other=_prefixes, delay_ms=_delays_ms)
def test_retry_pattern_keeps_deployments_apart(prefix: str, other: str, delay_ms: int) -> None:
    matched = re.match(Topics(prefix).retry_pattern, Topics(other).retry(delay_ms / 1000))
    assert (matched is not None) == (prefix == other)


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_an_endpoints_at_stamp_round_trips(stamp: int) -> None:
    assert endpoints_at(endpoints_at_headers(stamp)) == stamp


def test_no_stamp_no_header() -> None:
    assert endpoints_at_headers(None) == []
    assert endpoints_at([("traceparent", b"00-ab")]) is None


@pytest.mark.parametrize(
    "value",
    [b"", b"-1", b"1.5", b" 7", b"seven", "\uff17".encode(), b"\xff", None, b"1" * 20, b"9" * 5000],
    ids=lambda v: repr(v)[:12],
)
def test_a_stamp_that_is_not_an_offset_reads_as_none(value: bytes | None) -> None:
    """A producer of the shortener's own may set the header to anything: the click is then
    routed as one without it."""
    assert endpoints_at([(HEADER_ENDPOINTS_AT, value)]) is None
