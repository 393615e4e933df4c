"""Dead letters: counting them, and putting an endpoint's back into delivery (replay)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeVar

import msgspec
import structlog
from aiokafka import AIOKafkaProducer

from shared.kafka.window import read_window
from shared.model.messages import DeadLetter, decode_attempt, decode_dead_letter, encode
from shared.model.topics import HEADER_DUE_AT_MS, Topics
from shared.ops import metrics
from shared.ops.settings import Settings

log = structlog.get_logger(__name__)

M = TypeVar("M")


@dataclass(frozen=True, slots=True)
class ReplayReport:
    matched: int
    replayed: int
    already_delivered: int

    def as_dict(self) -> dict[str, int]:
        return {
            "matched": self.matched,
            "replayed": self.replayed,
            "already_delivered": self.already_delivered,
        }


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


async def delivered_after(settings: Settings, since_ms: int) -> dict[str, int]:
    """webhook-id → time of its latest successful attempt, from the attempt log."""
    delivered: dict[str, int] = {}
    attempts = Topics(settings.topic_prefix).attempts
    async for attempt in _readable(settings, attempts, since_ms, decode_attempt):
        if attempt.outcome == "success":
            delivered[attempt.webhook_id] = max(attempt.at_ms, delivered.get(attempt.webhook_id, 0))
    return delivered


async def replay(
    settings: Settings,
    producer: AIOKafkaProducer,
    endpoint_id: str,
    since_ms: int,
    until_ms: int | None = None,
) -> ReplayReport:
    """Put the endpoint's dead letters of the window back into delivery, once each.

    A letter whose delivery succeeded after it died (an earlier replay) is skipped, so replaying
    twice does not deliver twice. Each goes to the first retry tier, due at once, with its
    original webhook-id and its history.
    """
    letters = [
        letter
        for letter in await dead_letters_since(settings, since_ms, until_ms)
        if letter.envelope.endpoint_id == endpoint_id
    ]
    delivered = await delivered_after(settings, since_ms) if letters else {}
    topics = Topics(settings.topic_prefix)
    tier_topic = topics.retry(settings.retry_schedule_s[0])
    seen: set[str] = set()
    replayed = skipped = 0
    for letter in letters:
        envelope = letter.envelope
        if envelope.webhook_id in seen:
            continue
        seen.add(envelope.webhook_id)
        if delivered.get(envelope.webhook_id, 0) > letter.dead_at_ms:
            skipped += 1
            continue
        now_ms = int(time.time() * 1000)
        queued = msgspec.structs.replace(envelope, tier=-1, due_at_ms=now_ms)
        await producer.send_and_wait(
            tier_topic,
            key=envelope.endpoint_id.encode(),
            value=encode(queued),
            headers=[(HEADER_DUE_AT_MS, str(now_ms).encode())],
        )
        replayed += 1
    metrics.REPLAYED.inc(replayed)
    log.info("dead_letters_replayed", endpoint_id=endpoint_id, replayed=replayed, skipped=skipped)
    return ReplayReport(matched=len(letters), replayed=replayed, already_delivered=skipped)


async def count_dead_letters(settings: Settings, since_ms: int = 0) -> Counter[tuple[str, str]]:
    """(endpoint id, reason) → number of dead letters."""
    counts: Counter[tuple[str, str]] = Counter()
    for letter in await dead_letters_since(settings, since_ms):
        counts[(letter.envelope.endpoint_id, letter.reason)] += 1
    return counts
