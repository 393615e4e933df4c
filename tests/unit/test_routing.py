"""What an attempt's result means, and where the delivery goes next."""

from __future__ import annotations

import socket
import ssl
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.model.errors import BadResponse, ConnectionClosed, RefusedDestination, UnsendableRequest
from shared.model.messages import AttemptRecord, Outcome
from shared.model.routing import (
    OVERLOADED_MIN_DELAY_S,
    DeadLettered,
    Delivered,
    RetryLater,
    classify_exception,
    classify_status,
    failure_streak_start_ms,
    parse_retry_after_s,
    route_after_attempt,
    signals_down,
)

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
SCHEDULE = (5.0, 30.0, 60.0, 300.0, 1800.0)
LAST_TIER = len(SCHEDULE) - 1
ALL_OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)


def _refused() -> RefusedDestination:
    return RefusedDestination("hooks.example.com", "10.0.0.7", "private")


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "success"),
        (202, "success"),
        (204, "success"),
        (299, "success"),
        (301, "http_3xx"),
        (308, "http_3xx"),
        (400, "http_4xx"),
        (404, "http_4xx"),
        (409, "http_4xx"),
        (410, "gone"),
        (429, "http_429"),
        (500, "http_5xx"),
        (503, "http_5xx"),
        (599, "http_5xx"),
    ],
)
def test_classify_status_maps_status_codes(status: int, outcome: Outcome) -> None:
    assert classify_status(status) == outcome


@pytest.mark.parametrize(
    "exc",
    [
        TimeoutError(),
        TimeoutError("read timed out"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_classify_exception_sees_timeouts(exc: BaseException) -> None:
    assert classify_exception(exc) == "timeout"


def test_classify_exception_sees_a_refused_destination_before_the_os_error_it_is() -> None:
    assert classify_exception(_refused()) == "refused_destination"


@pytest.mark.parametrize(
    "exc",
    [
        ssl.SSLError(1, "handshake failure"),
        ssl.SSLCertVerificationError(1, "certificate verify failed"),
        ssl.CertificateError("hostname mismatch"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_classify_exception_sees_tls_errors(exc: BaseException) -> None:
    assert classify_exception(exc) == "tls_error"


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionResetError(104, "Connection reset by peer"),
        socket.gaierror(-2, "Name or service not known"),
        ConnectionClosed(answered=False),
        ConnectionClosed(answered=True),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_classify_exception_sees_connect_errors(exc: BaseException) -> None:
    assert classify_exception(exc) == "connect_error"


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("boom"),
        BadResponse("bad status line"),
        UnsendableRequest("a line break"),
        RuntimeError(),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_classify_exception_calls_anything_else_an_error(exc: BaseException) -> None:
    assert classify_exception(exc) == "error"


@pytest.mark.parametrize("value", [None, "", "   ", "soon", "1.5", "-1", "12abc"])
def test_parse_retry_after_is_none_when_absent_or_bad(value: str | None) -> None:
    assert parse_retry_after_s(value, NOW) is None


@pytest.mark.parametrize(("value", "seconds"), [("120", 120.0), (" 7 ", 7.0), ("0", 0.0)])
def test_parse_retry_after_reads_delta_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after_s(value, NOW) == seconds


def test_parse_retry_after_reads_an_http_date() -> None:
    value = format_datetime(NOW + timedelta(minutes=2), usegmt=True)
    assert value == "Sat, 01 Mar 2025 12:02:00 GMT"
    assert parse_retry_after_s(value, NOW) == 120.0


def test_parse_retry_after_clamps_a_past_date_to_zero() -> None:
    assert parse_retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", NOW) == 0.0


def test_parse_retry_after_ignores_a_date_without_a_zone() -> None:
    assert parse_retry_after_s("Sat, 01 Mar 2025 12:02:00 -0000", NOW) is None


@pytest.mark.parametrize("value", ["²", "①"])
def test_parse_retry_after_is_none_for_unicode_digit_symbols(value: str) -> None:
    assert parse_retry_after_s(value, NOW) is None


def test_route_success_is_delivered() -> None:
    assert route_after_attempt("success", current_tier=LAST_TIER, schedule_s=SCHEDULE) == (
        Delivered()
    )


@pytest.mark.parametrize("current_tier", [-1, 0, LAST_TIER])
def test_route_410_dead_letters_as_endpoint_gone(current_tier: int) -> None:
    route = route_after_attempt("gone", current_tier=current_tier, schedule_s=SCHEDULE)
    assert route == DeadLettered("endpoint_gone")


@pytest.mark.parametrize("outcome", ["http_5xx", "timeout", "http_429", "connect_error"])
def test_route_after_the_last_tier_is_exhausted(outcome: Outcome) -> None:
    route = route_after_attempt(outcome, current_tier=LAST_TIER, schedule_s=SCHEDULE)
    assert route == DeadLettered("exhausted")


def test_route_exhausted_wins_over_retry_after() -> None:
    route = route_after_attempt(
        "http_429", current_tier=LAST_TIER, schedule_s=SCHEDULE, retry_after_s=10.0
    )
    assert route == DeadLettered("exhausted")


@pytest.mark.parametrize(("current_tier", "retry_after_s"), [(-1, 100.0), (1, 10.0), (0, 1e4)])
def test_route_retry_after_waits_that_long_for_the_next_attempt(
    current_tier: int, retry_after_s: float
) -> None:
    route = route_after_attempt(
        "http_429", current_tier=current_tier, schedule_s=SCHEDULE, retry_after_s=retry_after_s
    )
    assert route == RetryLater(current_tier + 1, at_least_s=retry_after_s)


def test_route_retry_after_applies_to_a_503() -> None:
    route = route_after_attempt("http_5xx", current_tier=-1, schedule_s=SCHEDULE, retry_after_s=45)
    assert route == RetryLater(0, at_least_s=45)


@pytest.mark.parametrize("outcome", ["timeout", "http_429"])
@pytest.mark.parametrize("current_tier", [-1, 2])
def test_route_overload_without_retry_after_waits_a_minute_and_uses_one_attempt(
    outcome: Outcome, current_tier: int
) -> None:
    assert OVERLOADED_MIN_DELAY_S == 60.0
    route = route_after_attempt(outcome, current_tier=current_tier, schedule_s=SCHEDULE)
    assert route == RetryLater(current_tier + 1, at_least_s=60.0)


@pytest.mark.parametrize(
    "outcome", ["http_3xx", "http_4xx", "http_5xx", "connect_error", "tls_error", "error"]
)
@pytest.mark.parametrize("current_tier", [-1, 0, 2])
def test_route_other_failures_move_to_the_next_tier(outcome: Outcome, current_tier: int) -> None:
    route = route_after_attempt(outcome, current_tier=current_tier, schedule_s=SCHEDULE)
    assert route == RetryLater(current_tier + 1)


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    outcome=st.sampled_from(ALL_OUTCOMES),
    schedule=st.lists(st.floats(min_value=0.001, max_value=1e6), min_size=1, max_size=8),
    retry_after_s=st.none() | st.floats(min_value=0.0, max_value=2e6),
)
def test_route_retries_only_forward_and_inside_the_schedule(
    data: st.DataObject,
    outcome: Outcome,
    schedule: list[float],
    retry_after_s: float | None,
) -> None:
    current_tier = data.draw(st.integers(min_value=-1, max_value=len(schedule) - 1))
    route = route_after_attempt(
        outcome, current_tier=current_tier, schedule_s=tuple(schedule), retry_after_s=retry_after_s
    )
    if isinstance(route, RetryLater):
        assert route.tier == current_tier + 1 < len(schedule)  # one attempt at a time
    elif isinstance(route, DeadLettered):
        assert route.reason == "endpoint_gone" or current_tier == len(schedule) - 1
    else:
        assert outcome == "success"


@pytest.mark.parametrize(
    ("outcome", "status", "down"),
    [
        ("timeout", None, True),
        ("connect_error", None, True),
        ("tls_error", None, True),
        ("http_5xx", 502, True),
        ("http_5xx", 503, True),
        ("http_5xx", 504, True),
        ("http_5xx", 500, False),
        ("http_4xx", 400, False),
        ("http_429", 429, False),
        ("gone", 410, False),
        ("refused_destination", None, False),
        ("error", None, False),
        ("success", 200, False),
    ],
)
def test_only_no_answer_or_unavailable_says_the_endpoint_is_down(
    outcome: Outcome, status: int | None, down: bool
) -> None:
    assert signals_down(outcome, status) is down


# --- failure streaks ------------------------------------------------------------------------

DAY_MS = 86_400_000


def attempt(
    at_ms: int, outcome: Outcome = "http_5xx", *, version: int | None = 7, replay: str | None = None
) -> AttemptRecord:
    return AttemptRecord(
        webhook_id="msg_1",
        event_id="evt_1",
        endpoint_id="ep_1",
        account_id="acc_1",
        attempt=1,
        at_ms=at_ms,
        duration_ms=1.0,
        outcome=outcome,
        endpoint_version=version,
        replay_id=replay,
    )


def test_a_streak_starts_at_the_first_failure_of_the_current_run() -> None:
    history = [attempt(1), attempt(2), attempt(3)]
    assert failure_streak_start_ms(history, endpoint_version=7, replay_id=None) == 1


def test_a_replay_starts_a_new_streak_however_old_the_letters_history() -> None:
    """Letters dead after 5 days of failures, replayed: the streak is the replay's own."""
    now_ms = 10 * DAY_MS
    history = [attempt(now_ms - 6 * DAY_MS), attempt(now_ms - 5 * DAY_MS)]
    replayed = [*history, attempt(now_ms, replay="rpl_1")]
    assert failure_streak_start_ms(replayed, endpoint_version=7, replay_id="rpl_1") == now_ms


def test_attempts_under_an_earlier_version_of_the_endpoint_do_not_count() -> None:
    history = [attempt(1, version=3), attempt(2, version=None), attempt(5)]
    assert failure_streak_start_ms(history, endpoint_version=7, replay_id=None) == 5


def test_a_success_ends_the_streak() -> None:
    history = [attempt(1), attempt(2, "success"), attempt(3)]
    assert failure_streak_start_ms(history, endpoint_version=7, replay_id=None) == 3
    assert failure_streak_start_ms(history[:2], endpoint_version=7, replay_id=None) is None


def test_no_attempt_of_the_current_run_means_no_streak() -> None:
    assert failure_streak_start_ms([attempt(1)], endpoint_version=8, replay_id=None) is None
    assert failure_streak_start_ms([], endpoint_version=7, replay_id=None) is None
