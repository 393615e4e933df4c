"""The retry schedule: durations, tiers, jitter, and the waits of deliveries deferred while
their endpoint is down. Pure; no I/O."""

from __future__ import annotations

import math
import random
import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_JITTER_FRACTION = 0.10
# Jitter is capped in absolute terms too. The retry service waits on each tier partition's head
# record (a tier's records fall due in the order they were written), so a record behind a
# head with more jitter than its own can be late by the difference: the cap bounds that
# lateness. Spreading a burst further is the endpoint's concurrency and rate caps' job.
MAX_JITTER_S = 0.25
MIN_DELAY_S = 0.001
# While an endpoint is down, each failed probe makes the next wait this much longer, for at most
# DEFERRAL_STEPS waits (then the longest): each wait is one more tier topic.
DEFERRAL_GROWTH = 2
DEFERRAL_STEPS = 6
# Beyond this many doublings every cap a wait could have has been reached.
_MAX_DOUBLINGS = 64
# A delivery held back by its endpoint's caps waits in the first tier this many times in a row
# before its waits start doubling: a burst to a healthy endpoint is deferred because it came
# all at once, and comes back all at once (to within the jitter), so it may find the endpoint
# busy again once or twice. Doubling from the second wait sent such bursts from the 5 s tier to
# the next one, a minute (the e2e kill -9 test: 4,500 deliveries to three fast receivers took
# over two minutes).
FIRST_TIER_BUSY_WAITS = 3


def parse_duration_s(text: str) -> float:
    """``"5s"`` → 5.0, ``"2h"`` → 7200.0, ``"250ms"`` → 0.25; a bare number is seconds."""
    stripped = text.strip()
    try:
        value = float(stripped)
    except ValueError:
        match = _DURATION.match(stripped)
        if match is None:
            raise ValueError(f"not a duration: {text!r} (use e.g. 250ms, 5s, 5m, 2h, 1d)") from None
        value = float(match.group(1)) * _UNIT_S[match.group(2)]
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"not a finite, non-negative duration: {text!r}")
    return value


def parse_schedule(text: str) -> tuple[float, ...]:
    """Parse ``"5s,5m,30m,2h"``: the delays after the first, second, … failed attempt."""
    parts = [part for part in (p.strip() for p in text.split(",")) if part]
    if not parts:
        raise ValueError("the retry schedule is empty")
    delays = tuple(parse_duration_s(part) for part in parts)
    if any(delay < MIN_DELAY_S for delay in delays):
        raise ValueError("every retry delay must be positive, at least 1ms")
    return delays


def duration_label(delay_s: float) -> str:
    """The shortest exact label for a delay, used in topic names: 5.0 → ``5s``, 300 → ``5m``."""
    millis = round(delay_s * 1000)
    for unit, size_ms in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if millis % size_ms == 0:
            return f"{millis // size_ms}{unit}"
    return f"{millis}ms"


def jitter_bound_s(delay_s: float) -> float:
    """The most jitter a delay gets: 10 % of it, at most ``MAX_JITTER_S``."""
    return min(delay_s * MAX_JITTER_FRACTION, MAX_JITTER_S)


def jittered_delay_s(delay_s: float, rng: random.Random) -> float:
    """Spread retries of one burst so they do not all fall due in the same instant."""
    return delay_s + rng.uniform(0.0, jitter_bound_s(delay_s))


def deferral_delays(first_s: float, longest_s: float) -> tuple[float, ...]:
    """The waits of a delivery deferred while its endpoint is down, shortest first: the
    breaker's cool-down, growing ``DEFERRAL_GROWTH`` times per failed probe up to
    ``longest_s``, in at most ``DEFERRAL_STEPS`` waits. Each is one tier topic, as the
    schedule's delays are."""
    if first_s < MIN_DELAY_S:
        raise ValueError(f"a deferral wait must be at least {MIN_DELAY_S}s")
    delays = [first_s]
    while delays[-1] * DEFERRAL_GROWTH < longest_s and len(delays) < DEFERRAL_STEPS - 1:
        delays.append(delays[-1] * DEFERRAL_GROWTH)
    if longest_s > delays[-1]:
        delays.append(longest_s)
    return tuple(delays)


def shortest_wait_s(delays: tuple[float, ...], at_least_s: float) -> float:
    """The shortest of the tier topics' ``delays`` that lasts ``at_least_s``; the longest one
    when none does (no delivery waits longer than the longest tier)."""
    return min((delay for delay in delays if delay >= at_least_s), default=max(delays))


def nearest_tier(schedule_s: tuple[float, ...], tier: int) -> int:
    """Clamp a tier index from an older schedule into the current one."""
    return min(max(tier, 0), len(schedule_s) - 1)


def busy_deferral_wait_s(
    deferrals: int,
    *,
    tier_delays_s: tuple[float, ...],
    first_s: float,
    longest_s: float,
    backlog_wait_s: float = 0.0,
) -> float:
    """The tier a delivery held back by its endpoint's caps waits in.

    The ``deferrals``-th wait in a row (from 0) lasts ``first_s`` for the first
    ``FIRST_TIER_BUSY_WAITS``, then twice as long each time (``first_s * 2**k`` for the k-th
    after those), at most ``longest_s``, rounded up to a tier of ``tier_delays_s``: this
    doubling is what bounds the rewrites of one delivery per hour, however long its endpoint
    stays at its caps.
    ``backlog_wait_s`` (when the endpoint's turn for it comes, judging by the backlog its rate
    allows) may ask for longer, within the same cap, so that a burst comes back spread over
    the time the endpoint needs for it rather than all at once."""
    # Capping the exponent keeps the power finite for any count an envelope carries.
    doublings = min(max(0, deferrals - FIRST_TIER_BUSY_WAITS + 1), _MAX_DOUBLINGS)
    doubled_s = first_s * float(DEFERRAL_GROWTH**doublings)
    return shortest_wait_s(tier_delays_s, min(max(doubled_s, backlog_wait_s), longest_s))


def next_turn_s(booked_until_s: float, now_s: float, rate_per_s: float) -> float:
    """When an endpoint that takes ``rate_per_s`` deliveries a second has its next free turn,
    with the turns already promised running until ``booked_until_s``: the k-th delivery of a
    backlog gets its turn about k / rate from now."""
    return max(booked_until_s, now_s) + 1.0 / rate_per_s


def waited_too_long(
    waiting_since_ms: int | None, now_ms: int, schedule_s: tuple[float, ...]
) -> bool:
    """Whether a delivery held back by its endpoint's caps since ``waiting_since_ms`` has
    waited longer than its whole retry schedule: then it is dead, as one whose attempts all
    failed would be by then."""
    if waiting_since_ms is None:
        return False
    return now_ms - waiting_since_ms > sum(schedule_s) * 1000
