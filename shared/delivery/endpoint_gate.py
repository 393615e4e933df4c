"""Per-endpoint caps on concurrency and rate, so one receiver only spends its own share.

A delivery over an endpoint's caps waits a short, bounded time (a burst to a fast receiver
drains in that time); past it, or past the short queue, the caller shunts it to the first
retry tier rather than hold a partition back behind one slow receiver.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.ops.settings import Settings

# Weight of the newest attempt in an endpoint's typical attempt duration.
SMOOTHING = 0.2


@dataclass(slots=True)
class TokenBucket:
    """A token bucket with reservations; time comes in as an argument, so it is pure.

    ``reserve`` may take a token that is not there yet (the balance goes negative) and says
    how long to wait for it, like Go's ``rate.Limiter.Reserve``.
    """

    rate_per_s: float
    tokens: float
    updated_s: float

    @property
    def burst(self) -> float:
        return max(1.0, self.rate_per_s)

    def reserve(self, now_s: float, max_wait_s: float) -> float | None:
        """Seconds to wait before sending, or None when that would exceed ``max_wait_s``."""
        elapsed = max(0.0, now_s - self.updated_s)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate_per_s)
        self.updated_s = max(now_s, self.updated_s)
        wait_s = max(0.0, (1.0 - self.tokens) / self.rate_per_s)
        if wait_s > max_wait_s:
            return None
        self.tokens -= 1.0
        return wait_s


@dataclass(slots=True)
class _Lane:
    slots: asyncio.Semaphore
    queued: int = 0
    bucket: TokenBucket | None = None
    # Start times of the attempts in flight, oldest first, and a moving average of how long
    # attempts take: together they estimate how long a newcomer would wait.
    started_s: deque[float] = field(default_factory=deque)
    typical_s: float = 0.0

    @property
    def active(self) -> int:
        return len(self.started_s)

    def expected_wait_s(self, now_s: float, max_in_flight: int) -> float:
        """Roughly how long the next queued delivery would wait for a slot."""
        oldest_age_s = now_s - self.started_s[0] if self.started_s else 0.0
        per_attempt_s = max(self.typical_s, oldest_age_s)
        return (self.queued + 1) * per_attempt_s / max_in_flight


class EndpointGate:
    def __init__(
        self,
        max_in_flight: int,
        max_queued: int,
        max_wait_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_in_flight = max_in_flight
        self._max_queued = max_queued
        self._max_wait_s = max_wait_s
        self._clock = clock
        self._lanes: dict[str, _Lane] = {}

    async def enter(self, endpoint_id: str, rate_per_s: float | None) -> bool:
        """Wait (briefly) for the endpoint's rate and a slot; False: shunt the delivery.

        A delivery is shunted at once, without queueing, when the endpoint's attempts are so
        slow that it could not get a slot within the wait limit anyway: a hung receiver then
        holds no clicks back, while a burst to a fast one still queues and drains.
        On True the caller must ``leave`` once the attempt is over.
        """
        lane = self._lanes.get(endpoint_id)
        if lane is None:
            lane = self._lanes[endpoint_id] = _Lane(asyncio.Semaphore(self._max_in_flight))
        if lane.slots.locked() and (
            lane.queued >= self._max_queued
            or lane.expected_wait_s(self._clock(), self._max_in_flight) > self._max_wait_s
        ):
            return False
        lane.queued += 1
        try:
            return await self._wait_turn(lane, rate_per_s)
        finally:
            lane.queued -= 1
            self._forget_if_idle(endpoint_id, lane)

    async def _wait_turn(self, lane: _Lane, rate_per_s: float | None) -> bool:
        if rate_per_s is not None:
            now_s = self._clock()
            if lane.bucket is None or lane.bucket.rate_per_s != rate_per_s:
                lane.bucket = TokenBucket(rate_per_s, max(1.0, rate_per_s), now_s)
            wait_s = lane.bucket.reserve(now_s, self._max_wait_s)
            if wait_s is None:
                return False
            if wait_s > 0:
                await asyncio.sleep(wait_s)
        try:
            async with asyncio.timeout(self._max_wait_s):
                await lane.slots.acquire()
        except TimeoutError:
            return False
        lane.started_s.append(self._clock())
        return True

    def leave(self, endpoint_id: str) -> None:
        lane = self._lanes[endpoint_id]
        # Attempts end in any order; taking the oldest start is close enough for an estimate.
        duration_s = self._clock() - lane.started_s.popleft()
        lane.typical_s += SMOOTHING * (duration_s - lane.typical_s)
        lane.slots.release()
        self._forget_if_idle(endpoint_id, lane)

    def in_flight(self, endpoint_id: str) -> int:
        lane = self._lanes.get(endpoint_id)
        return lane.active if lane else 0

    def _forget_if_idle(self, endpoint_id: str, lane: _Lane) -> None:
        # Rate-limited lanes keep their bucket; others are dropped to bound memory (their
        # duration estimate with them: an idle endpoint starts afresh).
        if lane.active == 0 and lane.queued == 0 and lane.bucket is None:
            self._lanes.pop(endpoint_id, None)


def gate_for(settings: Settings) -> EndpointGate:
    return EndpointGate(
        settings.endpoint_max_in_flight,
        max_queued=settings.endpoint_max_queued,
        max_wait_s=settings.endpoint_max_wait_s,
    )
