"""Per-endpoint circuit breaker and failure streaks. Pure; time comes in as an argument.

The breaker answers one question: is the endpoint known to be down? It counts results that
say so (no answer at all, or a 502/503/504: ``shared.model.routing.signals_down``). After
``threshold`` of them in a row the endpoint is open: its deliveries wait without an attempt
until the cool-down ends, then one probe is let through. A probe that gets any answer from the
receiver closes the breaker; one that does not opens it again for a longer cool-down (the
deferral waits of ``shared.model.schedule.deferral_delays``, one after the other).

Any other answer (a 500, a 400) means the receiver is there: the breaker closes, and that
delivery follows its schedule attempt by attempt.

A breaker is reset when its endpoint changes (a new URL, re-enabled, any accepted write: the
endpoint's ``version``) or when a replay job sends it a letter (a fresh chance after a fix);
so is its failure streak, which deliveries seed only from attempts of that same run
(``shared.model.routing.failure_streak_start_ms``).

The start of a failure streak (of any failures, down or not) is kept as well, so that an
endpoint whose every attempt has failed for long enough can be disabled.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from shared.model.messages import BreakerState


class Result(Enum):
    """What an attempt said about its endpoint."""

    SUCCESS = "success"
    FAILED = "failed"  # an answer from a live receiver, not a success
    DOWN = "down"  # no answer, or an answer saying the receiver is unavailable


@dataclass(slots=True)
class _Health:
    generation: int  # the endpoint's version the health was learnt on
    consecutive_down: int = 0
    failing_since_s: float | None = None
    opened_at_s: float | None = None
    openings: int = 0  # consecutive openings: picks the cool-down
    probe_started_s: float | None = None
    reset_by: str | None = None  # the replay job that last reset it


class CircuitBreaker:
    def __init__(self, threshold: int, cooldowns_s: tuple[float, ...]) -> None:
        self._threshold = threshold
        self._cooldowns_s = cooldowns_s
        self._health: dict[str, _Health] = {}

    def refresh(self, endpoint_id: str, generation: int, replay_id: str | None = None) -> bool:
        """Forget what was learnt about an endpoint that changed since (``generation``), or that
        a replay job (``replay_id``) gives a fresh chance. True when it was reset."""
        health = self._health.get(endpoint_id)
        if health is None:
            return False
        renewed = health.generation != generation
        # A replay forgets a failure streak as well as an open breaker: the endpoint was
        # fixed, and its old failures must not count against its first new one.
        replayed = (
            replay_id is not None
            and replay_id != health.reset_by
            and (health.opened_at_s is not None or health.failing_since_s is not None)
        )
        if not (renewed or replayed):
            return False
        self._health[endpoint_id] = _Health(generation, reset_by=replay_id or health.reset_by)
        return True

    def state(self, endpoint_id: str, now_s: float) -> BreakerState:
        health = self._health.get(endpoint_id)
        if health is None or health.opened_at_s is None:
            return "closed"
        return "half_open" if self.next_probe_in_s(endpoint_id, now_s) == 0 else "open"

    def next_probe_in_s(self, endpoint_id: str, now_s: float) -> float:
        """How long until a probe may go: 0 when closed or half-open with no probe out."""
        health = self._health.get(endpoint_id)
        if health is None or health.opened_at_s is None:
            return 0.0
        cooldown_s = self._cooldown_s(health)
        wait_s = health.opened_at_s + cooldown_s - now_s
        # A probe that never reported back (its process died) is replaced after a cool-down.
        if health.probe_started_s is not None:
            wait_s = max(wait_s, health.probe_started_s + cooldown_s - now_s)
        return max(0.0, wait_s)

    def allow(self, endpoint_id: str, now_s: float) -> bool:
        """May an attempt be made now? While open, one probe is let through per cool-down."""
        health = self._health.get(endpoint_id)
        if health is None or health.opened_at_s is None:
            return True
        if self.next_probe_in_s(endpoint_id, now_s) > 0:
            return False
        health.probe_started_s = now_s
        return True

    def record(
        self,
        endpoint_id: str,
        result: Result,
        now_s: float,
        *,
        generation: int,
        streak_start_s: float | None = None,
    ) -> None:
        """Count an attempt's result. ``streak_start_s`` is the first failure already known for
        this delivery (from its history), so a failure streak survives a restart."""
        if result is Result.SUCCESS:
            self._health.pop(endpoint_id, None)
            return
        health = self._health.setdefault(endpoint_id, _Health(generation))
        started = now_s if streak_start_s is None else min(now_s, streak_start_s)
        if health.failing_since_s is None or started < health.failing_since_s:
            health.failing_since_s = started
        if result is Result.FAILED:
            # The receiver answered: it is up, whatever it thought of this delivery.
            health.consecutive_down = 0
            health.opened_at_s = health.probe_started_s = None
            health.openings = 0
            return
        health.consecutive_down += 1
        probing = health.probe_started_s is not None
        if probing or (health.opened_at_s is None and health.consecutive_down >= self._threshold):
            health.openings += 1
            health.opened_at_s = now_s
            health.probe_started_s = None

    def failing_for_s(self, endpoint_id: str, now_s: float) -> float:
        health = self._health.get(endpoint_id)
        if health is None or health.failing_since_s is None:
            return 0.0
        return now_s - health.failing_since_s

    def failing_since_s(self, endpoint_id: str) -> float | None:
        """When the endpoint's current failure streak began; None when it is not failing."""
        health = self._health.get(endpoint_id)
        return None if health is None else health.failing_since_s

    def forget(self, endpoint_id: str) -> None:
        self._health.pop(endpoint_id, None)

    def open_counts(self, now_s: float) -> dict[BreakerState, int]:
        counts: dict[BreakerState, int] = {"closed": 0, "open": 0, "half_open": 0}
        for endpoint_id in self._health:
            counts[self.state(endpoint_id, now_s)] += 1
        return counts

    def _cooldown_s(self, health: _Health) -> float:
        return self._cooldowns_s[min(health.openings, len(self._cooldowns_s)) - 1]
