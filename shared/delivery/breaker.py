"""Per-endpoint circuit breaker and failure streaks. Pure; time comes in as an argument.

After ``threshold`` consecutive failures an endpoint is open for ``cooldown_s``: its deliveries
move on without an attempt. Then one probe is let through; its success closes the breaker, its
failure opens it again. The start of the failure streak is kept so an endpoint that has failed
everything for long enough can be disabled.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.model.messages import BreakerState


@dataclass(slots=True)
class _Health:
    consecutive_failures: int = 0
    failing_since_s: float | None = None
    opened_at_s: float | None = None
    probe_started_s: float | None = None


class CircuitBreaker:
    def __init__(self, threshold: int, cooldown_s: float) -> None:
        self._threshold = threshold
        self._cooldown_s = cooldown_s
        self._health: dict[str, _Health] = {}

    def state(self, endpoint_id: str, now_s: float) -> BreakerState:
        health = self._health.get(endpoint_id)
        if health is None or health.opened_at_s is None:
            return "closed"
        if now_s - health.opened_at_s < self._cooldown_s:
            return "open"
        probe = health.probe_started_s
        # A probe that never reported back (its process died) is replaced after a cool-down.
        if probe is not None and now_s - probe < self._cooldown_s:
            return "open"
        return "half_open"

    def allow(self, endpoint_id: str, now_s: float) -> bool:
        """May an attempt be made now? In half-open state only one probe is let through."""
        state = self.state(endpoint_id, now_s)
        if state == "closed":
            return True
        if state == "half_open":
            self._health[endpoint_id].probe_started_s = now_s
            return True
        return False

    def record(
        self, endpoint_id: str, success: bool, now_s: float, streak_start_s: float | None = None
    ) -> None:
        """Count an attempt's result; ``streak_start_s`` is the first failure already known
        for this delivery (from its history), so a streak survives a restart."""
        if success:
            self._health.pop(endpoint_id, None)
            return
        health = self._health.setdefault(endpoint_id, _Health())
        health.consecutive_failures += 1
        started = now_s if streak_start_s is None else min(now_s, streak_start_s)
        if health.failing_since_s is None or started < health.failing_since_s:
            health.failing_since_s = started
        if health.probe_started_s is not None or health.consecutive_failures >= self._threshold:
            health.opened_at_s = now_s
            health.probe_started_s = None

    def failing_for_s(self, endpoint_id: str, now_s: float) -> float:
        health = self._health.get(endpoint_id)
        if health is None or health.failing_since_s is None:
            return 0.0
        return now_s - health.failing_since_s

    def forget(self, endpoint_id: str) -> None:
        self._health.pop(endpoint_id, None)

    def open_counts(self, now_s: float) -> dict[BreakerState, int]:
        counts: dict[BreakerState, int] = {"closed": 0, "open": 0, "half_open": 0}
        for endpoint_id in self._health:
            counts[self.state(endpoint_id, now_s)] += 1
        return counts
