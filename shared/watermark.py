"""Per-partition offset tracking for many records in flight. Pure; no I/O.

The committable offset is the lowest offset still in flight, or the highest seen + 1 when
nothing is in flight (confluent parallel-consumer's "highest committable offset"). It never
passes a record that is not finished, so a crash at any instant loses nothing.
"""

from __future__ import annotations

import heapq


class PartitionWatermark:
    def __init__(self) -> None:
        self._in_flight: set[int] = set()
        self._heap: list[int] = []
        self._next_offset: int | None = None

    def start(self, offset: int) -> None:
        """A record at ``offset`` was taken on; offsets arrive in increasing order."""
        self._in_flight.add(offset)
        heapq.heappush(self._heap, offset)
        if self._next_offset is None or offset + 1 > self._next_offset:
            self._next_offset = offset + 1

    def finish(self, offset: int) -> None:
        """The record at ``offset`` is delivered or durably handed on."""
        self._in_flight.discard(offset)
        while self._heap and self._heap[0] not in self._in_flight:
            heapq.heappop(self._heap)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def committable(self) -> int | None:
        """The offset to commit (the next record to read after a restart), or None."""
        if self._heap:
            return self._heap[0]
        return self._next_offset
