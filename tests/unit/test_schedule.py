"""The retry schedule: parsing, labels, jitter and tier choice."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.model.schedule import (
    duration_label,
    jittered_delay_s,
    nearest_tier,
    parse_duration_s,
    parse_schedule,
    tier_for_min_delay,
)

SCHEDULE = (5.0, 300.0, 1800.0, 7200.0)
UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


class _TopOfRange(random.Random):
    """A generator whose every uniform draw is the top of the range."""

    def uniform(self, a: float, b: float) -> float:
        return b


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("5s", 5.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1.5m", 90.0),
        ("7", 7.0),
        ("0.5", 0.5),
        (" 5 s ", 5.0),
    ],
)
def test_parse_duration_reads_units(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == pytest.approx(seconds, rel=1e-12)


@pytest.mark.parametrize("text", ["", "5M", "5sec", "five", "5 s s", "-5s"])
def test_parse_duration_rejects_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration_s(text)


def test_parse_duration_rejects_a_negative_number() -> None:
    with pytest.raises(ValueError, match="negative duration"):
        parse_duration_s("-5")


@pytest.mark.parametrize("text", ["nan", "inf", "1e400"])
def test_parse_duration_rejects_non_finite_numbers(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration_s(text)


def test_parse_schedule_keeps_the_delays_in_order() -> None:
    assert parse_schedule("5s,5m,30m,2h") == SCHEDULE


def test_parse_schedule_skips_empty_parts() -> None:
    assert parse_schedule(" 5s, ,5m,") == (5.0, 300.0)


@pytest.mark.parametrize("text", ["", " , ,"])
def test_parse_schedule_rejects_an_empty_schedule(text: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        parse_schedule(text)


def test_parse_schedule_rejects_a_zero_delay() -> None:
    with pytest.raises(ValueError, match="positive"):
        parse_schedule("5s,0s,5m")


@pytest.mark.parametrize(
    ("delay_s", "label"),
    [
        (5.0, "5s"),
        (300.0, "5m"),
        (90.0, "90s"),
        (1800.0, "30m"),
        (7200.0, "2h"),
        (36000.0, "10h"),
        (86400.0, "1d"),
        (172800.0, "2d"),
        (0.25, "250ms"),
        (1.5, "1500ms"),
    ],
)
def test_duration_label_is_the_shortest_exact_label(delay_s: float, label: str) -> None:
    assert duration_label(delay_s) == label


@settings(max_examples=200, deadline=None)
@given(count=st.integers(min_value=1, max_value=10**6), unit=st.sampled_from(sorted(UNIT_MS)))
def test_duration_label_round_trips_through_parse(count: int, unit: str) -> None:
    delay_s = parse_duration_s(f"{count}{unit}")
    label = duration_label(delay_s)
    assert parse_duration_s(label) == pytest.approx(count * UNIT_MS[unit] / 1000, rel=1e-12)
    assert duration_label(parse_duration_s(label)) == label


def test_jitter_reaches_at_most_ten_percent() -> None:
    assert jittered_delay_s(300.0, _TopOfRange()) == pytest.approx(330.0)


def test_jitter_is_reproducible_with_a_seeded_generator() -> None:
    assert jittered_delay_s(60.0, random.Random(7)) == jittered_delay_s(60.0, random.Random(7))


def test_jitter_spreads_a_burst() -> None:
    rng = random.Random(42)
    delays = {jittered_delay_s(100.0, rng) for _ in range(50)}
    assert len(delays) == 50
    assert max(delays) > 105.0


@settings(max_examples=200, deadline=None)
@given(
    delay_s=st.floats(min_value=0.001, max_value=1e7, allow_nan=False),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_jitter_stays_within_delay_and_ten_percent_more(delay_s: float, seed: int) -> None:
    jittered = jittered_delay_s(delay_s, random.Random(seed))
    assert delay_s <= jittered <= delay_s * 1.1


@pytest.mark.parametrize(
    ("start", "min_delay_s", "tier"),
    [
        (0, 0.0, 0),
        (0, 5.0, 0),
        (0, 6.0, 1),
        (0, 60.0, 1),
        (2, 60.0, 2),
        (1, 1801.0, 3),
        (0, 100_000.0, 3),
        (3, 100_000.0, 3),
    ],
)
def test_tier_for_min_delay_picks_the_first_covering_tier(
    start: int, min_delay_s: float, tier: int
) -> None:
    assert tier_for_min_delay(SCHEDULE, start, min_delay_s) == tier


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    schedule=st.lists(st.floats(min_value=0.001, max_value=1e6), min_size=1, max_size=8),
    min_delay_s=st.floats(min_value=0.0, max_value=2e6),
)
def test_tier_for_min_delay_never_goes_back_and_covers_when_it_can(
    data: st.DataObject, schedule: list[float], min_delay_s: float
) -> None:
    start = data.draw(st.integers(min_value=0, max_value=len(schedule) - 1))
    tier = tier_for_min_delay(tuple(schedule), start, min_delay_s)
    assert start <= tier < len(schedule)
    if any(delay >= min_delay_s for delay in schedule[start:]):
        assert schedule[tier] >= min_delay_s
        assert all(delay < min_delay_s for delay in schedule[start:tier])
    else:
        assert tier == len(schedule) - 1


@pytest.mark.parametrize(("tier", "nearest"), [(-3, 0), (0, 0), (2, 2), (3, 3), (9, 3)])
def test_nearest_tier_clamps_into_the_schedule(tier: int, nearest: int) -> None:
    assert nearest_tier(SCHEDULE, tier) == nearest
