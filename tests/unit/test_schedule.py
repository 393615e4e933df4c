"""The retry schedule: parsing, labels, jitter and tier choice."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.model.schedule import (
    DEFERRAL_STEPS,
    FIRST_TIER_BUSY_WAITS,
    MAX_JITTER_S,
    busy_deferral_wait_s,
    deferral_delays,
    duration_label,
    jittered_delay_s,
    nearest_tier,
    next_turn_s,
    parse_duration_s,
    parse_schedule,
    shortest_wait_s,
    waited_too_long,
)
from shared.ops.settings import load_settings

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


def test_jitter_reaches_at_most_ten_percent_of_a_short_delay() -> None:
    assert jittered_delay_s(2.0, _TopOfRange()) == pytest.approx(2.2)


def test_jitter_of_a_long_delay_is_capped_so_it_cannot_reorder_a_tier_by_more() -> None:
    assert jittered_delay_s(300.0, _TopOfRange()) == pytest.approx(300.0 + MAX_JITTER_S)


def test_jitter_is_reproducible_with_a_seeded_generator() -> None:
    assert jittered_delay_s(60.0, random.Random(7)) == jittered_delay_s(60.0, random.Random(7))


def test_jitter_spreads_a_burst() -> None:
    rng = random.Random(42)
    delays = {jittered_delay_s(100.0, rng) for _ in range(50)}
    assert len(delays) == 50
    assert max(delays) - min(delays) > MAX_JITTER_S / 2


@settings(max_examples=200, deadline=None)
@given(
    delay_s=st.floats(min_value=0.001, max_value=1e7, allow_nan=False),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_jitter_stays_within_ten_percent_and_the_cap(delay_s: float, seed: int) -> None:
    jittered = jittered_delay_s(delay_s, random.Random(seed))
    assert delay_s <= jittered <= delay_s + min(delay_s * 0.1, MAX_JITTER_S)


@pytest.mark.parametrize(
    ("first_s", "longest_s", "delays"),
    [
        (60.0, 1800.0, (60.0, 120.0, 240.0, 480.0, 960.0, 1800.0)),
        (60.0, 60.0, (60.0,)),
        (2.0, 8.0, (2.0, 4.0, 8.0)),
        (1.0, 5.0, (1.0, 2.0, 4.0, 5.0)),
        (3.0, 1800.0, (3.0, 6.0, 12.0, 24.0, 48.0, 1800.0)),
    ],
)
def test_deferral_waits_double_up_to_the_longest(
    first_s: float, longest_s: float, delays: tuple[float, ...]
) -> None:
    assert deferral_delays(first_s, longest_s) == delays


@settings(max_examples=200, deadline=None)
@given(
    first_s=st.floats(min_value=0.001, max_value=1e5, allow_nan=False),
    growth=st.floats(min_value=1.0, max_value=1e4, allow_nan=False),
    wait_s=st.floats(min_value=0.0, max_value=1e9, allow_nan=False),
)
def test_a_deferral_lasts_until_the_probe_or_the_longest_wait(
    first_s: float, growth: float, wait_s: float
) -> None:
    delays = deferral_delays(first_s, first_s * growth)
    assert list(delays) == sorted(set(delays))
    assert len(delays) <= DEFERRAL_STEPS
    chosen = shortest_wait_s(delays, wait_s)
    assert chosen >= wait_s or chosen == delays[-1]


def test_a_deferral_wait_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least"):
        deferral_delays(0.0, 10.0)


@pytest.mark.parametrize(
    ("at_least_s", "wait_s"),
    [(0.0, 5.0), (5.0, 5.0), (6.0, 300.0), (60.0, 300.0), (1801.0, 7200.0), (1e5, 7200.0)],
)
def test_the_shortest_wait_that_lasts_long_enough(at_least_s: float, wait_s: float) -> None:
    assert shortest_wait_s(SCHEDULE, at_least_s) == wait_s


@settings(max_examples=200, deadline=None)
@given(
    delays=st.lists(st.floats(min_value=0.001, max_value=1e6), min_size=1, max_size=12),
    at_least_s=st.floats(min_value=0.0, max_value=2e6),
)
def test_a_wait_is_a_tier_that_lasts_or_the_longest(delays: list[float], at_least_s: float) -> None:
    chosen = shortest_wait_s(tuple(delays), at_least_s)
    assert chosen in delays
    if any(delay >= at_least_s for delay in delays):
        assert chosen >= at_least_s
        assert all(delay < at_least_s or delay >= chosen for delay in delays)
    else:
        assert chosen == max(delays)


@pytest.mark.parametrize(("tier", "nearest"), [(-3, 0), (0, 0), (2, 2), (3, 3), (9, 3)])
def test_nearest_tier_clamps_into_the_schedule(tier: int, nearest: int) -> None:
    assert nearest_tier(SCHEDULE, tier) == nearest


# --- deliveries held back by their endpoint's caps ------------------------------------------

HOUR_S = 3600.0


def busy_rewrites(
    tier_delays_s: tuple[float, ...], first_s: float, longest_s: float, horizon_s: float
) -> list[float]:
    """When one delivery, always found at its endpoint's caps, is rewritten (from 0 s)."""
    moments = [0.0]
    while moments[-1] < horizon_s:
        wait_s = busy_deferral_wait_s(
            len(moments) - 1, tier_delays_s=tier_delays_s, first_s=first_s, longest_s=longest_s
        )
        moments.append(moments[-1] + wait_s)
    return [moment for moment in moments if moment < horizon_s]


def in_hour(moments: list[float], hour: int) -> int:
    return sum(1 for moment in moments if hour * HOUR_S <= moment < (hour + 1) * HOUR_S)


@pytest.mark.parametrize("schedule", ["5s,5m,30m,2h,5h,10h,10h", "5s,30s,2m,5m"])
def test_a_delivery_at_its_caps_is_rewritten_at_most_11_times_in_its_first_hour_then_twice_an_hour(
    schedule: str,
) -> None:
    """The figures docs/concepts/delivery-semantics.md states, with the default deferral tiers."""
    config = load_settings({"CLICKHOOK_RETRY_SCHEDULE": schedule})
    moments = busy_rewrites(
        config.tier_delays_s,
        config.retry_schedule_s[0],
        max(config.deferral_delays_s),
        horizon_s=24 * HOUR_S,
    )
    assert in_hour(moments, 0) <= 11
    assert all(in_hour(moments, hour) <= 2 for hour in range(1, 24))


@given(
    first_s=st.floats(min_value=0.5, max_value=60.0),
    longest_s=st.floats(min_value=60.0, max_value=3600.0),
    deferrals=st.integers(min_value=0, max_value=10_000),
)
def test_a_busy_wait_doubles_from_the_first_tier_up_to_the_longest(
    first_s: float, longest_s: float, deferrals: int
) -> None:
    tiers = (first_s, *deferral_delays(60.0, longest_s))
    wait_s = busy_deferral_wait_s(
        deferrals, tier_delays_s=tiers, first_s=first_s, longest_s=longest_s
    )
    doublings = min(max(0, deferrals - FIRST_TIER_BUSY_WAITS + 1), 64)
    assert min(first_s * 2**doublings, longest_s) <= wait_s <= longest_s
    longer_s = busy_deferral_wait_s(
        deferrals + 1, tier_delays_s=tiers, first_s=first_s, longest_s=longest_s
    )
    assert longer_s >= wait_s


@given(
    first_s=st.floats(min_value=0.5, max_value=60.0),
    longest_s=st.floats(min_value=60.0, max_value=3600.0),
)
@settings(max_examples=50)
def test_busy_rewrites_per_hour_are_bounded_by_the_doubling(
    first_s: float, longest_s: float
) -> None:
    """However the tiers round: the waits in the first tier, then about log2(longest / first)
    rewrites to reach the longest wait, then one per longest wait."""
    tiers = (first_s, *deferral_delays(60.0, longest_s))
    moments = busy_rewrites(tiers, first_s, longest_s, horizon_s=6 * HOUR_S)
    per_longest_wait = math.ceil(HOUR_S / longest_s)
    doubling = math.ceil(math.log2(longest_s / first_s)) + 1
    assert in_hour(moments, 0) <= FIRST_TIER_BUSY_WAITS - 1 + doubling + per_longest_wait
    assert all(in_hour(moments, hour) <= per_longest_wait + 1 for hour in range(1, 6))


def test_a_backlog_spreads_the_busy_waits_but_never_past_the_longest() -> None:
    tiers = (5.0, 30.0, 60.0, 120.0, 1800.0)
    shortest = busy_deferral_wait_s(0, tier_delays_s=tiers, first_s=5.0, longest_s=1800.0)
    spread = busy_deferral_wait_s(
        0, tier_delays_s=tiers, first_s=5.0, longest_s=1800.0, backlog_wait_s=50.0
    )
    capped = busy_deferral_wait_s(
        0, tier_delays_s=tiers, first_s=5.0, longest_s=1800.0, backlog_wait_s=1e9
    )
    assert (shortest, spread, capped) == (5.0, 60.0, 1800.0)


@given(rate=st.floats(min_value=0.1, max_value=1000.0), backlog=st.integers(1, 500))
def test_the_kth_turn_of_a_backlog_comes_k_over_the_rate_from_now(
    rate: float, backlog: int
) -> None:
    booked_s = now_s = 1000.0
    for _ in range(backlog):
        booked_s = next_turn_s(booked_s, now_s, rate)
    assert booked_s - now_s == pytest.approx(backlog / rate)


def test_turns_booked_in_the_past_start_again_from_now() -> None:
    assert next_turn_s(10.0, 100.0, 2.0) == 100.5


def test_a_delivery_waits_for_its_caps_at_most_its_whole_schedule() -> None:
    schedule = (5.0, 30.0, 120.0, 300.0)  # 455 s
    assert not waited_too_long(None, 10**12, schedule)
    assert not waited_too_long(0, 455_000, schedule)
    assert waited_too_long(0, 455_001, schedule)
