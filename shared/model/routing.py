"""What an attempt's result means and where the delivery goes next. Pure; no I/O."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Literal

from shared.model.errors import RefusedDestination
from shared.model.messages import AttemptRecord, DeadLetterReason, Outcome

OVERLOADED_MIN_DELAY_S = 60.0
RETRY_AFTER_STATUSES = frozenset({429, 503})
# Answers that say the receiver itself is not there: a gateway in front of it that cannot reach
# it, or the receiver saying it is unavailable. Other statuses are answers from a live receiver.
DOWN_STATUSES = frozenset({502, 503, 504})
# Outcomes where no HTTP answer came at all.
UNANSWERED: frozenset[Outcome] = frozenset({"timeout", "connect_error", "tls_error"})


def classify_status(status: int) -> Outcome:
    if 200 <= status < 300:
        return "success"
    if status < 200:
        return "error"  # an informational answer is not an answer
    if status == 410:
        return "gone"
    if status == 429:
        return "http_429"
    if 300 <= status < 400:
        return "http_3xx"
    if 400 <= status < 500:
        return "http_4xx"
    return "http_5xx"


def signals_down(outcome: Outcome, status: int | None) -> bool:
    """Whether an attempt's result says the endpoint is down (what the breaker counts), as
    opposed to a live receiver refusing this one delivery (a 500, a 400): those follow the
    schedule attempt by attempt, and a breaker must not make them wait."""
    return outcome in UNANSWERED or status in DOWN_STATUSES


def failure_streak_start_ms(
    attempts: list[AttemptRecord], *, endpoint_version: int, replay_id: str | None
) -> int | None:
    """When the delivery's current failure streak began: its earliest attempt, all failed,
    of the run now going on, that is made under the endpoint's ``endpoint_version`` and by
    the replay ``replay_id`` (None: not replayed). None when the latest attempt succeeded or
    none belongs to this run.

    Attempts of an earlier run say nothing about the endpoint as it is now: a replay keeps the
    letter's history, and a history that began days ago must not make the endpoint look as if
    it had been failing all that time (and disable it on its first new failure)."""
    start_ms: int | None = None
    for attempt in reversed(attempts):
        current_run = (
            attempt.endpoint_version == endpoint_version and attempt.replay_id == replay_id
        )
        if not current_run or attempt.outcome == "success":
            break
        start_ms = attempt.at_ms
    return start_ms


def describe_exception(exc: BaseException) -> str:
    if isinstance(exc, RefusedDestination):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def classify_exception(exc: BaseException) -> Outcome:
    """Map a client-side failure to an outcome; never branch on exception types elsewhere."""
    if isinstance(exc, TimeoutError):  # asyncio.TimeoutError is this one since 3.11
        return "timeout"
    if isinstance(exc, RefusedDestination):
        return "refused_destination"
    if isinstance(exc, ssl.SSLError):
        return "tls_error"
    if isinstance(exc, OSError):
        return "connect_error"
    return "error"


def parse_retry_after_s(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None if absent/bad."""
    if not value:
        return None
    stripped = value.strip()
    if stripped.isascii() and stripped.isdigit():
        return float(stripped)
    try:
        when = parsedate_to_datetime(stripped)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True, slots=True)
class Delivered:
    kind: Literal["delivered"] = "delivered"


@dataclass(frozen=True, slots=True)
class RetryLater:
    """The next attempt is the schedule's ``tier``-th retry; it waits that tier's delay, or
    ``at_least_s`` when longer (Retry-After, or an overloaded receiver)."""

    tier: int
    at_least_s: float = 0.0
    kind: Literal["retry"] = "retry"


@dataclass(frozen=True, slots=True)
class DeadLettered:
    reason: DeadLetterReason
    kind: Literal["dead_letter"] = "dead_letter"


Route = Delivered | RetryLater | DeadLettered


def route_after_attempt(
    outcome: Outcome,
    *,
    current_tier: int,
    schedule_s: tuple[float, ...],
    retry_after_s: float | None = None,
) -> Route:
    """Where a delivery goes after an attempt made from ``current_tier`` (-1: first attempt).

    Every failure moves one tier on, so a delivery gets each of the schedule's attempts, and
    past the last tier it is exhausted; 410 dead-letters at once. The wait may be longer than
    the tier's: 429/503 with Retry-After wait at least that long, a timeout or a 429 without it
    at least a minute, so an overloaded receiver gets room.
    """
    if outcome == "success":
        return Delivered()
    if outcome == "gone":
        return DeadLettered("endpoint_gone")
    next_tier = current_tier + 1
    if next_tier >= len(schedule_s):
        return DeadLettered("exhausted")
    if retry_after_s is not None:
        return RetryLater(next_tier, at_least_s=retry_after_s)
    if outcome in ("timeout", "http_429"):
        return RetryLater(next_tier, at_least_s=OVERLOADED_MIN_DELAY_S)
    return RetryLater(next_tier)
