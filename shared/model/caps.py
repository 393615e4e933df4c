"""Each delivering process's share of every endpoint's caps: pure rules, time passed in.

An endpoint's caps (``rate_limit_per_s``, CLICKHOOK_ENDPOINT_MAX_IN_FLIGHT) are the endpoint's,
across every dispatcher and retry process of the deployment. There is no database and the
processes do not talk to each other, so each one needs a share it can act on alone, and the
shares must never overlap. Kafka hands out such shares already: the partitions of a topic among
the members of a consumer group are disjoint, and the group protocol keeps them so as processes
come and go. Every delivering process joins one group on a small topic nobody writes
(``webhook.caps``, ``CAPS_PARTITIONS`` partitions; ``shared.kafka.caps_membership``); the
partitions it holds are its ``Share``.

Rate: global slots on the wall clock. Slot k of an endpoint with rate r is at k / r seconds;
it belongs to the process holding partition (k + endpoint_offset) mod P. A process sends at most
one request in each of its own slots, so the whole deployment sends at most one request per
1 / r seconds, and any one-second window sees at most r + 1. The offset (a CRC-32 of the
endpoint id, the same in every process, unlike Python's salted ``hash()``) spreads endpoints of
the same rate over the processes instead of starting them all on the same one. Clocks of
different machines are as close as NTP keeps them (milliseconds); a skew of d seconds can put
two requests 1 / r - d apart.

Why slots rather than a token bucket per process at r x share: buckets that refill apart each
allow their own burst, so N processes may send r + N in a second (4 processes at r = 2 sent 4
in one second: the issue). Slots need no burst and no coordination beyond the clock.

Concurrency: a process may have ``max(1, floor(C x held / P))`` requests in flight to an
endpoint with cap C. Floors of disjoint shares sum to at most C, so the deployment holds the cap
whenever each process's floor is at least one, i.e. when C is at least the number of processes
(with P = 60 and the default C = 20: up to 20 processes, each holding 3 partitions or more).
With more processes than C, each still gets one so that deliveries go on: the endpoint then
sees up to one per process (stated in docs/operations/scaling.md).
"""

from __future__ import annotations

import bisect
import math
import zlib
from dataclasses import dataclass, field

# Partitions of the caps topic: the grain of the shares. 60 divides evenly among 1, 2, 3, 4,
# 5, 6, 10, 12, 15, 20, 30 and 60 processes.
CAPS_PARTITIONS = 60
# A process may wait for this many of its own slots (when that is longer than the endpoint
# wait), so that one of its deliveries is already waiting when its next slot comes.
OWN_SLOTS_WAITED = 2
# ...but never longer than this: a delivery waiting longer is deferred to the first tier.
MAX_SLOT_WAIT_S = 10.0
# A sleeper that wakes up later than this part of a slot interval after its slot lets it go
# and takes the next one: a late send must not bunch up with the next slot's.
LATE_SLOT_SHARE = 0.5


def endpoint_offset(endpoint_id: str) -> int:
    """The endpoint's place among the partitions: stable across processes and restarts."""
    return zlib.crc32(endpoint_id.encode())


@dataclass(frozen=True, slots=True)
class Share:
    """The caps partitions a process holds, of ``partitions``."""

    held: tuple[int, ...]  # sorted, distinct, each in range(partitions)
    partitions: int
    _held_set: frozenset[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_held_set", frozenset(self.held))

    @classmethod
    def whole(cls, partitions: int = CAPS_PARTITIONS) -> Share:
        """Everything: a process alone (unit tests, a gate built without membership)."""
        return cls(tuple(range(partitions)), partitions)

    @classmethod
    def of(cls, held: set[int] | frozenset[int], partitions: int) -> Share:
        return cls(tuple(sorted(held)), partitions)

    @property
    def fraction(self) -> float:
        return len(self.held) / self.partitions

    def owns_slot(self, slot: int, offset: int) -> bool:
        return (slot + offset) % self.partitions in self._held_set

    def next_own_slot(self, first_slot: int, offset: int) -> int | None:
        """The first slot at or after ``first_slot`` that is this process's; None: it holds
        nothing."""
        if not self.held:
            return None
        position = (first_slot + offset) % self.partitions
        index = bisect.bisect_left(self.held, position)
        if index == len(self.held):
            return first_slot + self.held[0] + self.partitions - position
        return first_slot + self.held[index] - position

    def concurrency(self, max_in_flight: int) -> int:
        """This process's part of an endpoint's concurrency cap (see the module docstring)."""
        if not self.held:
            return 0
        return max(1, max_in_flight * len(self.held) // self.partitions)

    def slot_wait_allowed_s(self, rate_per_s: float, max_wait_s: float) -> float:
        """How long a delivery may wait for one of this process's slots before it is deferred:
        the endpoint wait, or a couple of own-slot intervals when those are longer, bounded."""
        if not self.held:
            return 0.0
        own_interval_s = 1.0 / (rate_per_s * self.fraction)
        return min(MAX_SLOT_WAIT_S, max(max_wait_s, OWN_SLOTS_WAITED * own_interval_s))


def first_slot_at(now_s: float, rate_per_s: float) -> int:
    """The first slot at or after ``now_s`` (wall-clock seconds)."""
    return math.ceil(now_s * rate_per_s)


def slot_time_s(slot: int, rate_per_s: float) -> float:
    return slot / rate_per_s


@dataclass(slots=True)
class SlotReservations:
    """One endpoint's slots as this process takes them; time comes in as an argument.

    Each slot is taken once: ``next_slot`` is the first slot not yet handed out.
    """

    rate_per_s: float
    offset: int
    next_slot: int = 0

    def reserve(self, share: Share, now_s: float, max_wait_s: float) -> int | None:
        """The slot reserved for one request, or None when it is further away than the allowed
        wait (or the process holds no share): the caller defers."""
        first = max(first_slot_at(now_s, self.rate_per_s), self.next_slot)
        slot = share.next_own_slot(first, self.offset)
        if slot is None:
            return None
        wait_s = slot_time_s(slot, self.rate_per_s) - now_s
        if wait_s > share.slot_wait_allowed_s(self.rate_per_s, max_wait_s):
            return None
        self.next_slot = slot + 1
        return slot


def missed_slot(slot: int, rate_per_s: float, now_s: float) -> bool:
    """Woke up too late for ``slot`` (a busy event loop): sending now could bunch up with the
    next slot's request, so the sender takes a later slot instead."""
    return now_s - slot_time_s(slot, rate_per_s) > LATE_SLOT_SHARE / rate_per_s
