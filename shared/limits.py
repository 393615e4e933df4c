"""Per-endpoint caps on concurrency and rate, so one receiver only spends its own share."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenBucket:
    """Classic token bucket; time comes in as an argument, so it is pure."""

    rate_per_s: float
    tokens: float
    updated_s: float

    def take(self, now_s: float) -> bool:
        burst = max(1.0, self.rate_per_s)
        elapsed = max(0.0, now_s - self.updated_s)
        self.tokens = min(burst, self.tokens + elapsed * self.rate_per_s)
        self.updated_s = now_s
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


@dataclass(slots=True)
class _Lane:
    slots: asyncio.Semaphore
    queued: int = 0
    active: int = 0
    bucket: TokenBucket | None = field(default=None)


class EndpointGate:
    """At most ``max_in_flight`` deliveries per endpoint, ``max_queued`` more waiting.

    ``enter`` answers False when the endpoint is over its rate or its short queue is full:
    the caller then shunts the delivery to the first retry tier instead of holding a
    partition back behind one slow receiver.
    """

    def __init__(self, max_in_flight: int, max_queued: int) -> None:
        self._max_in_flight = max_in_flight
        self._max_queued = max_queued
        self._lanes: dict[str, _Lane] = {}

    async def enter(self, endpoint_id: str, rate_per_s: float | None, now_s: float) -> bool:
        lane = self._lanes.get(endpoint_id)
        if lane is None:
            lane = self._lanes[endpoint_id] = _Lane(asyncio.Semaphore(self._max_in_flight))
        if rate_per_s is not None:
            if lane.bucket is None or lane.bucket.rate_per_s != rate_per_s:
                lane.bucket = TokenBucket(rate_per_s, max(1.0, rate_per_s), now_s)
            if not lane.bucket.take(now_s):
                self._forget_if_idle(endpoint_id, lane)
                return False
        if lane.slots.locked():
            if lane.queued >= self._max_queued:
                return False
            lane.queued += 1
            try:
                await lane.slots.acquire()
            finally:
                lane.queued -= 1
        else:
            await lane.slots.acquire()
        lane.active += 1
        return True

    def leave(self, endpoint_id: str) -> None:
        lane = self._lanes[endpoint_id]
        lane.active -= 1
        lane.slots.release()
        self._forget_if_idle(endpoint_id, lane)

    def in_flight(self, endpoint_id: str) -> int:
        lane = self._lanes.get(endpoint_id)
        return lane.active if lane else 0

    def _forget_if_idle(self, endpoint_id: str, lane: _Lane) -> None:
        # Rate-limited lanes keep their bucket; others are dropped to bound memory.
        if lane.active == 0 and lane.queued == 0 and lane.bucket is None:
            self._lanes.pop(endpoint_id, None)
