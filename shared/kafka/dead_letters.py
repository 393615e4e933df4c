"""Reading dead letters back from ``webhook.dlq`` (replaying them: ``shared.kafka.replay``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import msgspec
import structlog

from shared.kafka.window import read_window
from shared.model.messages import DeadLetter, decode_dead_letter
from shared.model.topics import Topics
from shared.ops.settings import Settings

log = structlog.get_logger(__name__)

M = TypeVar("M")


async def _readable(
    settings: Settings, topic: str, since_ms: int, decode: Callable[[bytes], M]
) -> AsyncIterator[M]:
    """The messages of a topic window that decode; unreadable ones are skipped here (they are
    kept, raw, for an operator)."""
    async for record in read_window(settings, topic, since_ms):
        if record.value is None:
            continue
        try:
            yield decode(record.value)
        except msgspec.DecodeError:
            continue


async def dead_letters_since(
    settings: Settings, since_ms: int, until_ms: int | None = None
) -> list[DeadLetter]:
    """Readable dead letters that died in ``[since_ms, until_ms)``."""
    dlq = Topics(settings.topic_prefix).dlq
    return [
        letter
        async for letter in _readable(settings, dlq, since_ms, decode_dead_letter)
        if letter.dead_at_ms >= since_ms and (until_ms is None or letter.dead_at_ms < until_ms)
    ]


async def count_dead_letters(settings: Settings, since_ms: int = 0) -> Counter[tuple[str, str]]:
    """(endpoint id, reason) → number of dead letters."""
    counts: Counter[tuple[str, str]] = Counter()
    for letter in await dead_letters_since(settings, since_ms):
        counts[(letter.envelope.endpoint_id, letter.reason)] += 1
    return counts
