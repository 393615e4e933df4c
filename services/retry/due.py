"""When retry partitions may be read again. Pure bookkeeping; time comes in as an argument.

Records of one tier topic are in due order, so a partition whose head is not due can be
paused until exactly that time; nothing behind the head is due either.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

from shared.model.topics import HEADER_DUE_AT_MS, header_value

K = TypeVar("K", bound=Hashable)


def due_at_ms_from_headers(headers: Iterable[tuple[str, bytes | None]]) -> int | None:
    value = header_value(headers, HEADER_DUE_AT_MS)
    if value is None or not (value.isascii() and value.isdigit()):
        return None
    return int(value)


class DueTimes(Generic[K]):
    def __init__(self) -> None:
        self._due_ms: dict[K, int] = {}

    def hold(self, key: K, due_ms: int) -> None:
        self._due_ms[key] = due_ms

    def release_due(self, now_ms: int) -> list[K]:
        """Keys whose time has come; they are forgotten."""
        ready = [key for key, due in self._due_ms.items() if due <= now_ms]
        for key in ready:
            del self._due_ms[key]
        return ready

    def forget(self, keys: Iterable[K]) -> None:
        for key in keys:
            self._due_ms.pop(key, None)

    def next_wakeup_s(self, now_ms: int) -> float | None:
        if not self._due_ms:
            return None
        return max(0.0, (min(self._due_ms.values()) - now_ms) / 1000)

    def held(self) -> list[K]:
        return list(self._due_ms)
