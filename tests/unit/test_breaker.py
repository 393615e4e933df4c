"""The breaker says whether an endpoint is known to be down, and nothing else."""

from __future__ import annotations

import pytest

from shared.delivery.breaker import CircuitBreaker, Result
from shared.model.schedule import deferral_delays

THRESHOLD = 10
COOLDOWNS_S = deferral_delays(60.0, 1800.0)  # 60, 120, 240, 480, 960, 1800
EP = "ep_1"
GEN = 41  # the endpoint's version


@pytest.fixture(name="breaker")
def fixture_breaker() -> CircuitBreaker:
    return CircuitBreaker(THRESHOLD, COOLDOWNS_S)


def down(breaker: CircuitBreaker, times: int, at_s: float = 0.0) -> None:
    for _ in range(times):
        breaker.record(EP, Result.DOWN, at_s, generation=GEN)


def test_opens_after_the_threshold_of_down_results_in_a_row(breaker: CircuitBreaker) -> None:
    down(breaker, THRESHOLD - 1)
    assert breaker.state(EP, 0.0) == "closed"
    down(breaker, 1)
    assert breaker.state(EP, 0.0) == "open"
    assert not breaker.allow(EP, 1.0)
    assert breaker.next_probe_in_s(EP, 1.0) == pytest.approx(59.0)


def test_answers_from_a_live_receiver_never_open_it(breaker: CircuitBreaker) -> None:
    """300 answers of 500 in a row: the receiver is up, each delivery follows its schedule."""
    for n in range(300):
        breaker.record(EP, Result.FAILED, float(n), generation=GEN)
        assert breaker.allow(EP, float(n))
    assert breaker.state(EP, 300.0) == "closed"
    assert breaker.failing_for_s(EP, 300.0) == pytest.approx(300.0)


def test_an_answer_between_down_results_starts_the_count_again(breaker: CircuitBreaker) -> None:
    down(breaker, THRESHOLD - 1)
    breaker.record(EP, Result.FAILED, 0.0, generation=GEN)
    down(breaker, THRESHOLD - 1)
    assert breaker.state(EP, 0.0) == "closed"


def test_lets_one_probe_through_per_cooldown(breaker: CircuitBreaker) -> None:
    down(breaker, THRESHOLD)
    assert breaker.allow(EP, 60.0)  # the probe
    assert not breaker.allow(EP, 60.0)  # its neighbours wait for its result
    assert breaker.state(EP, 61.0) == "open"


def test_a_failed_probe_doubles_the_cooldown_up_to_the_longest(breaker: CircuitBreaker) -> None:
    down(breaker, THRESHOLD)
    opened_at_s = 0.0
    waits = []
    for _ in range(8):
        probe_at_s = opened_at_s + breaker.next_probe_in_s(EP, opened_at_s)
        assert breaker.allow(EP, probe_at_s)
        breaker.record(EP, Result.DOWN, probe_at_s, generation=GEN)
        waits.append(breaker.next_probe_in_s(EP, probe_at_s))
        opened_at_s = probe_at_s
    assert waits == [120.0, 240.0, 480.0, 960.0, 1800.0, 1800.0, 1800.0, 1800.0]


@pytest.mark.parametrize("answer", [Result.SUCCESS, Result.FAILED])
def test_a_probe_that_gets_an_answer_closes_it(breaker: CircuitBreaker, answer: Result) -> None:
    down(breaker, THRESHOLD)
    assert breaker.allow(EP, 60.0)
    breaker.record(EP, answer, 60.1, generation=GEN)
    assert breaker.state(EP, 60.1) == "closed"
    assert all(breaker.allow(EP, 60.2) for _ in range(50))


def test_a_probe_that_never_reports_back_is_replaced_after_a_cooldown(
    breaker: CircuitBreaker,
) -> None:
    down(breaker, THRESHOLD)
    assert breaker.allow(EP, 60.0)
    assert not breaker.allow(EP, 100.0)
    assert breaker.allow(EP, 120.0)


def test_an_endpoint_that_changed_gets_a_fresh_chance(breaker: CircuitBreaker) -> None:
    down(breaker, THRESHOLD)
    assert not breaker.refresh(EP, GEN)
    assert breaker.refresh(EP, GEN + 1)
    assert breaker.state(EP, 1.0) == "closed"


def test_a_replay_resets_an_open_breaker_once_per_job(breaker: CircuitBreaker) -> None:
    down(breaker, THRESHOLD)
    assert breaker.refresh(EP, GEN, replay_id="rpl_1")
    assert breaker.state(EP, 1.0) == "closed"
    down(breaker, THRESHOLD, at_s=2.0)
    assert not breaker.refresh(EP, GEN, replay_id="rpl_1")  # the same job: no second chance
    assert breaker.state(EP, 2.0) == "open"
    assert breaker.refresh(EP, GEN, replay_id="rpl_2")


def test_a_replay_forgets_a_failure_streak_of_a_closed_breaker(breaker: CircuitBreaker) -> None:
    """500s for days (the breaker stays closed), then fixed and replayed: a fresh streak."""
    breaker.record(EP, Result.FAILED, 500_000.0, generation=GEN, streak_start_s=0.0)
    assert breaker.refresh(EP, GEN, replay_id="rpl_1")
    breaker.record(EP, Result.DOWN, 500_001.0, generation=GEN)
    assert breaker.failing_for_s(EP, 500_002.0) == pytest.approx(1.0)


def test_the_failure_streak_starts_at_the_first_failure_known(breaker: CircuitBreaker) -> None:
    breaker.record(EP, Result.FAILED, 1000.0, generation=GEN, streak_start_s=100.0)
    assert breaker.failing_for_s(EP, 1000.0) == pytest.approx(900.0)
    breaker.record(EP, Result.SUCCESS, 1001.0, generation=GEN)
    assert breaker.failing_for_s(EP, 1001.0) == 0.0


def test_counts_endpoints_by_state(breaker: CircuitBreaker) -> None:
    down(breaker, THRESHOLD)
    breaker.record("ep_2", Result.DOWN, 0.0, generation=GEN)
    assert breaker.open_counts(1.0) == {"closed": 1, "open": 1, "half_open": 0}
    assert breaker.open_counts(60.0) == {"closed": 1, "open": 0, "half_open": 1}
