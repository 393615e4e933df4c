"""Counting what a receiver saw over time, for tests and the bench alike."""

from __future__ import annotations

from collections.abc import Iterable


def most_in_any_second(times_s: Iterable[float]) -> int:
    """The most arrivals in any closed one-second window, sliding (the strictest reading of
    "requests in one second": a window [t, t + 1] holds both ends)."""
    ordered = sorted(times_s)
    most, first = 0, 0
    for last, at_s in enumerate(ordered):
        while ordered[first] < at_s - 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most
