"""Per-partition offset tracking for many records in flight. Pure; no I/O.

The committable offset is the lowest offset still in flight, or the highest seen + 1 when
nothing is in flight (confluent parallel-consumer's "highest committable offset"). It never
passes a record that is not finished, so a crash at any instant loses nothing.

What finished above it travels with the commit as its metadata (a bitmap, as
parallel-consumer does), so that after a crash or a rebalance the next owner skips those
records instead of doing them again: one slow record no longer means a duplicate of every
record behind it.
"""

from __future__ import annotations

import base64
import binascii
import heapq
from collections.abc import Iterable

FINISHED_PREFIX = "finished1:"
# Kafka refuses commit metadata over offset.metadata.max.bytes (4096 by default). A longer
# bitmap is cut: the offsets it would have named are simply done again (at-least-once).
MAX_METADATA_CHARS = 4000
_MAX_BITMAP_BYTES = (MAX_METADATA_CHARS - len(FINISHED_PREFIX)) // 4 * 3


class PartitionWatermark:
    def __init__(self) -> None:
        self._in_flight: set[int] = set()
        self._heap: list[int] = []
        self._finished_above: list[int] = []  # a heap of finished offsets above the lowest
        self._next_offset: int | None = None

    def start(self, offset: int) -> None:
        """A record at ``offset`` was taken on; offsets arrive in increasing order."""
        self._in_flight.add(offset)
        heapq.heappush(self._heap, offset)
        if self._next_offset is None or offset + 1 > self._next_offset:
            self._next_offset = offset + 1

    def finish(self, offset: int) -> None:
        """The record at ``offset`` is delivered or durably handed on."""
        if offset not in self._in_flight:
            return
        self._in_flight.discard(offset)
        heapq.heappush(self._finished_above, offset)
        while self._heap and self._heap[0] not in self._in_flight:
            heapq.heappop(self._heap)
        low = self.committable()
        while self._finished_above and (low is None or self._finished_above[0] < low):
            heapq.heappop(self._finished_above)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def committable(self) -> int | None:
        """The offset to commit (the next record to read after a restart), or None."""
        if self._heap:
            return self._heap[0]
        return self._next_offset

    def finished_above(self) -> list[int]:
        """Finished offsets above the committable one, in order."""
        return sorted(self._finished_above)


def encode_finished(committed: int, finished: Iterable[int]) -> str:
    """Commit metadata naming the offsets above ``committed`` that are finished."""
    relative = [offset - committed for offset in finished if offset > committed]
    if not relative:
        return ""
    bitmap = bytearray((max(relative) >> 3) + 1)
    for position in relative:
        bitmap[position >> 3] |= 1 << (position & 7)
    return FINISHED_PREFIX + base64.b64encode(bitmap[:_MAX_BITMAP_BYTES]).decode()


def decode_finished(committed: int, metadata: str) -> set[int]:
    """The finished offsets named by commit metadata; none if it is not ours or unreadable."""
    if not metadata.startswith(FINISHED_PREFIX):
        return set()
    try:
        bitmap = base64.b64decode(metadata[len(FINISHED_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        return set()
    return {
        committed + (index << 3) + bit
        for index, byte in enumerate(bitmap)
        if byte
        for bit in range(8)
        if byte >> bit & 1
    }
