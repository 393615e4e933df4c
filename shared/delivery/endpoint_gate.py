"""Per-endpoint caps on concurrency and rate, so one receiver only spends its own share.

A delivery over an endpoint's caps waits its turn for at most ``max_wait_s``; past that, or
past the queue's length, the caller defers it to the first retry tier rather than hold a
partition back behind one slow receiver.

Whether a newcomer would get its turn in time is judged from the pace the endpoint has shown
since all its slots became busy, not from how long its attempts seem to take: on a busy event
loop every attempt looks slow (taking in a burst of a thousand records holds the loop for
tens of milliseconds, during which no answer is read), and judging by that deferred most of a
healthy endpoint's burst. So a busy lane lets in as many waiters as it finished attempts in
the last ``max_wait_s`` ("a turn within the wait"), and before it has been busy that long, as
many as its pace so far promises, but only once the loop has read other endpoints' answers
meanwhile: until then a slow endpoint and a busy loop look the same, and the burst queues
(the wait bounds it). An attempt that has been running for longer than the wait is evidence
no busy loop explains: then the queue is cut to what the running attempts' age allows.

The caps are the endpoint's across every process of the deployment: this gate applies only this
process's ``Share`` of them (``shared.model.caps``: why and how; the share comes from the caps
consumer group, ``shared.kafka.caps_membership``). A gate built without a share source holds
the whole of every cap, as a process alone does. A delivery first takes one of the process's
in-flight slots, then waits for one of its rate slots: holding the in-flight slot while waiting
means nothing else can make it late for its rate slot, so requests leave at their slot times.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.model.caps import Share, SlotReservations, endpoint_offset, missed_slot, slot_time_s
from shared.ops.settings import Settings

# Completions are counted over the last ``max_wait_s`` in this many slices of it.
COUNT_SLICES = 10
# A lane busy for less than this share of the wait has shown no pace worth judging.
EARLIEST_JUDGEMENT_SHARE = 0.1
# Rate slots a delivery may try for when the event loop wakes it too late for one (or the
# share moved meanwhile) before it is deferred.
SLOT_TRIES = 3

# This process's share of every endpoint's caps, as it stands now.
ShareSource = Callable[[], Share]
_WHOLE = Share.whole()


def alone() -> Share:
    """The share of a process alone: the whole of every cap."""
    return _WHOLE


@dataclass(slots=True)
class RecentCount:
    """Events in the last ``window_s`` (to within one slice of it); time comes in as an
    argument, so it is pure."""

    window_s: float
    counts: list[int] = field(default_factory=lambda: [0] * COUNT_SLICES)
    slice_at: int = 0  # the absolute number of the slice the newest count is in

    def add(self, now_s: float) -> None:
        self._advance(now_s)
        self.counts[self.slice_at % COUNT_SLICES] += 1

    def total(self, now_s: float) -> int:
        self._advance(now_s)
        return sum(self.counts)

    def _advance(self, now_s: float) -> None:
        current = int(now_s * COUNT_SLICES / self.window_s)
        for passed in range(self.slice_at + 1, min(current, self.slice_at + COUNT_SLICES) + 1):
            self.counts[passed % COUNT_SLICES] = 0
        self.slice_at = max(self.slice_at, current)


@dataclass(frozen=True, slots=True)
class _Waiter:
    deadline: float  # event-loop time
    turn: asyncio.Future[bool]


@dataclass(slots=True)
class _Lane:
    finished: RecentCount
    queued: int = 0
    slots: SlotReservations | None = None
    # Slots taken: attempts in flight, and slots handed to a waiter that has yet to run. Not
    # an asyncio.Semaphore with a timeout per waiter: its locked() walks every waiter, and a
    # timer each for a burst of a thousand cost a fifth more CPU per delivery. Waiters are
    # first in, first out, so their deadlines are in order: one timer, for the first.
    taken: int = 0
    waiters: deque[_Waiter] = field(default_factory=deque)
    expiry: asyncio.TimerHandle | None = None
    started_s: deque[float] = field(default_factory=deque)  # attempts in flight, oldest first
    # Since when every slot has been taken or someone has been waiting; what this lane, and
    # every lane of the gate, had finished by then and since.
    busy_since_s: float | None = None
    finished_since_busy: int = 0
    all_finished_at_busy: int = 0

    @property
    def active(self) -> int:
        return len(self.started_s)

    def full(self, max_in_flight: int) -> bool:
        return self.taken >= max_in_flight or bool(self.waiters)

    def release(self, max_in_flight: int) -> None:
        """A slot is free: it goes to the longest waiter still waiting, else back (also when
        the process's share shrank below what is taken)."""
        while self.waiters and self.taken <= max_in_flight:
            waiter = self.waiters.popleft()
            if not waiter.turn.done():  # one that gave up (cancelled) is skipped
                waiter.turn.set_result(True)
                return
        self.taken -= 1

    def wait(self, deadline: float) -> asyncio.Future[bool]:
        """A place in the queue: True when a slot is handed over, False at ``deadline``."""
        loop = asyncio.get_running_loop()
        turn: asyncio.Future[bool] = loop.create_future()
        self.waiters.append(_Waiter(deadline, turn))
        if self.expiry is None:
            self.expiry = loop.call_at(deadline, self._expire)
        return turn

    def _expire(self) -> None:
        """Tell the waiters whose deadline passed; the timer moves on to the next one."""
        self.expiry = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self.waiters and self.waiters[0].deadline <= now:
            turn = self.waiters.popleft().turn
            if not turn.done():
                turn.set_result(False)
        if self.waiters:
            self.expiry = loop.call_at(self.waiters[0].deadline, self._expire)

    def became_busy(self, now_s: float, all_finished: int) -> None:
        self.busy_since_s = now_s
        self.finished_since_busy = 0
        self.all_finished_at_busy = all_finished


@dataclass(frozen=True, slots=True)
class _Limits:
    max_in_flight: int
    max_wait_s: float

    def turns(self, lane: _Lane, now_s: float, all_finished: int) -> int | None:
        """How many waiters can expect a slot within the wait; None: no evidence yet (let
        them queue, the wait bounds them)."""
        found = [
            turns
            for turns in (self._by_age(lane, now_s), self._by_pace(lane, now_s, all_finished))
            if turns is not None
        ]
        return min(found) if found else None

    def _by_age(self, lane: _Lane, now_s: float) -> int | None:
        oldest_age_s = now_s - lane.started_s[0] if lane.started_s else 0.0
        if oldest_age_s <= self.max_wait_s:
            return None
        # Attempts outlast the wait: at best each slot frees once per oldest age.
        return int(self.max_in_flight * self.max_wait_s / oldest_age_s)

    def _by_pace(self, lane: _Lane, now_s: float, all_finished: int) -> int | None:
        if lane.busy_since_s is None:
            return None
        busy_s = now_s - lane.busy_since_s
        if busy_s >= self.max_wait_s:
            return lane.finished.total(now_s)
        others_finished = all_finished - lane.all_finished_at_busy - lane.finished_since_busy
        if busy_s < self.max_wait_s * EARLIEST_JUDGEMENT_SHARE or others_finished <= 0:
            return None
        return int(lane.finished_since_busy * self.max_wait_s / busy_s)


class EndpointGate:
    def __init__(
        self,
        max_in_flight: int,
        max_queued: int,
        max_wait_s: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        share: ShareSource = alone,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._max_in_flight = max_in_flight
        self._max_wait_s = max_wait_s
        self._max_queued = max_queued
        self._clock = clock
        # Rate slots are on the wall clock: the one clock every process of the deployment
        # shares (to NTP's precision).
        self._wall_clock = wall_clock
        self._share = share
        self._limits_share: Share | None = None
        self._limits = _Limits(max_in_flight, max_wait_s)
        self._lanes: dict[str, _Lane] = {}
        self._finished = 0  # attempts finished by every lane: shows that answers get read

    async def enter(self, endpoint_id: str, rate_per_s: float | None) -> bool:
        """Wait (briefly) for the endpoint's rate and a slot; False: defer the delivery.

        A delivery is deferred at once, without queueing, when the queue is full or when the
        endpoint's pace says it would not get a slot within the wait anyway: a hung receiver
        then holds no clicks back, while a burst to a fast one queues and drains. A process
        that holds no share of the caps defers every delivery.
        On True the caller must ``leave`` once the attempt is over.
        """
        share = self._share()
        limits = self._limits_for(share)
        if limits.max_in_flight == 0:
            return False
        lane = self._lanes.get(endpoint_id)
        if lane is None:
            lane = self._lanes[endpoint_id] = _Lane(RecentCount(limits.max_wait_s))
        if lane.full(limits.max_in_flight):
            now_s = self._clock()
            if lane.busy_since_s is None:
                lane.became_busy(now_s, self._finished)
            turns = limits.turns(lane, now_s, self._finished)
            if lane.queued >= self._max_queued or (turns is not None and lane.queued >= turns):
                return False
        lane.queued += 1
        try:
            return await self._wait_turn(endpoint_id, lane, rate_per_s)
        finally:
            lane.queued -= 1
            self._forget_if_idle(endpoint_id, lane)

    def _limits_for(self, share: Share) -> _Limits:
        """The limits of the process's current share (recomputed only when it changed)."""
        if share is not self._limits_share:
            self._limits_share = share
            self._limits = _Limits(share.concurrency(self._max_in_flight), self._max_wait_s)
        return self._limits

    async def _wait_turn(self, endpoint_id: str, lane: _Lane, rate_per_s: float | None) -> bool:
        if not await self._take_slot(lane):
            return False
        if rate_per_s is not None:
            try:
                on_time = await self._wait_rate_slot(endpoint_id, lane, rate_per_s)
            except BaseException:
                lane.release(self._limits.max_in_flight)
                raise
            if not on_time:
                lane.release(self._limits.max_in_flight)
                return False
        lane.started_s.append(self._clock())
        return True

    async def _take_slot(self, lane: _Lane) -> bool:
        """One of the process's in-flight slots for the endpoint, waiting at most the wait."""
        if not lane.full(self._limits.max_in_flight):
            lane.taken += 1
            return True
        turn = lane.wait(asyncio.get_running_loop().time() + self._max_wait_s)
        try:
            return await turn
        except BaseException:
            if turn.done() and not turn.cancelled() and turn.result():
                lane.release(self._limits.max_in_flight)  # handed a slot, cancelled before use
            raise

    async def _wait_rate_slot(self, endpoint_id: str, lane: _Lane, rate_per_s: float) -> bool:
        """Sleep until one of the process's own rate slots; False: none within the allowed
        wait. A slot the loop woke too late for, or that changed hands meanwhile (a
        rebalance), is let go for a later one."""
        if lane.slots is None or lane.slots.rate_per_s != rate_per_s:
            lane.slots = SlotReservations(rate_per_s, endpoint_offset(endpoint_id))
        for _ in range(SLOT_TRIES):
            now_s = self._wall_clock()
            slot = lane.slots.reserve(self._share(), now_s, self._max_wait_s)
            if slot is None:
                return False
            wait_s = slot_time_s(slot, rate_per_s) - now_s
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            on_time = not missed_slot(slot, rate_per_s, self._wall_clock())
            if on_time and self._share().owns_slot(slot, lane.slots.offset):
                return True
        return False

    def leave(self, endpoint_id: str) -> None:
        lane = self._lanes[endpoint_id]
        now_s = self._clock()
        max_in_flight = self._limits_for(self._share()).max_in_flight
        # Attempts end in any order; only their number in flight and the oldest start matter.
        lane.started_s.popleft()
        lane.finished.add(now_s)
        lane.finished_since_busy += 1
        self._finished += 1
        lane.release(max_in_flight)
        if lane.queued == 0 and lane.taken < max_in_flight:
            lane.busy_since_s = None  # room to spare: the next burst starts afresh
        self._forget_if_idle(endpoint_id, lane)

    def in_flight(self, endpoint_id: str) -> int:
        lane = self._lanes.get(endpoint_id)
        return lane.active if lane else 0

    def _forget_if_idle(self, endpoint_id: str, lane: _Lane) -> None:
        # Rate-limited lanes keep their slot reservations (a slot is never handed out twice);
        # others are dropped to bound memory (their recent pace with them: an idle endpoint
        # starts afresh).
        if lane.taken == 0 and lane.queued == 0 and lane.slots is None:
            self._lanes.pop(endpoint_id, None)


def gate_for(settings: Settings, share: ShareSource = alone) -> EndpointGate:
    """The gate of a delivering service, applying ``share`` of every endpoint's caps."""
    return EndpointGate(
        settings.endpoint_max_in_flight,
        max_queued=settings.endpoint_max_queued,
        max_wait_s=settings.endpoint_max_wait_s,
        share=share,
    )
