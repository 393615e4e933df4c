"""The retry schedule: durations, tiers and their topics, jitter. Pure; no I/O."""

from __future__ import annotations

import math
import random
import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_JITTER_FRACTION = 0.10
MIN_DELAY_S = 0.001


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


def jittered_delay_s(delay_s: float, rng: random.Random) -> float:
    """Spread retries of one burst so they do not all fall due in the same instant."""
    return delay_s * (1.0 + rng.uniform(0.0, MAX_JITTER_FRACTION))


def tier_for_min_delay(schedule_s: tuple[float, ...], start: int, min_delay_s: float) -> int:
    """The first tier at or after ``start`` whose delay covers ``min_delay_s``.

    When no remaining tier is long enough the last one is used: it is the longest wait we
    have. ``start`` must be a valid tier index.
    """
    for index in range(start, len(schedule_s)):
        if schedule_s[index] >= min_delay_s:
            return index
    return len(schedule_s) - 1


def nearest_tier(schedule_s: tuple[float, ...], tier: int) -> int:
    """Clamp a tier index from an older schedule into the current one."""
    return min(max(tier, 0), len(schedule_s) - 1)
