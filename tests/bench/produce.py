"""Records straight into Kafka, the way the shortener (or a scheduled retry) would write
them: click backlogs, click streams at a fixed rate, and due-stamped retry envelopes."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from shared.model.messages import DeliveryEnvelope, encode
from shared.model.signing import webhook_id
from shared.model.topics import HEADER_DUE_AT_MS
from tests.bench.wire import ClickLoad, EnvelopeLoad, ProduceResult

# A backlog is written as fast as the broker takes it: big, lingering batches.
BACKLOG_LINGER_MS = 20


def click_event(event_id: str, account_id: str, link_id: str) -> dict[str, Any]:
    """A realistic click: the required fields plus what a shortener typically sends."""
    return {
        "id": event_id,
        "type": "link.clicked",
        "occurred_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "account_id": account_id,
        "link": {
            "id": link_id,
            "domain": "short.example",
            "key": "abc",
            "url": "https://example.com/landing",
            "tags": ["bench"],
        },
        "click": {"ip": "203.0.113.9", "country": "JP", "user_agent": "bench", "referer": "-"},
    }


async def produce_clicks(job: ClickLoad) -> ProduceResult:
    linger_ms = BACKLOG_LINGER_MS if job.rate_per_s is None else 0
    producer = AIOKafkaProducer(bootstrap_servers=job.bootstrap, linger_ms=linger_ms, acks="all")
    await producer.start()
    started = time.monotonic()
    try:
        run = uuid.uuid4().hex[:8]
        links = itertools.cycle(job.link_ids)
        pending: list[asyncio.Future[Any]] = []
        for index in range(job.count):
            if job.rate_per_s is not None:
                await _wait_for_turn(index, job.rate_per_s, started)
            link_id = next(links)
            event = click_event(f"evt_{run}_{index}", job.account_id, link_id)
            pending.append(
                await producer.send(job.topic, key=link_id.encode(), value=encode(event))
            )
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return ProduceResult(records=job.count, seconds=time.monotonic() - started)


async def _wait_for_turn(index: int, rate_per_s: float, started: float) -> None:
    """Sleep until record ``index`` is due on the fixed-rate schedule (behind: no sleep)."""
    ahead_s = index / rate_per_s - (time.monotonic() - started)
    if ahead_s > 0:
        await asyncio.sleep(ahead_s)


def envelope(job: EnvelopeLoad, tier: int, endpoint_id: str, due_ms: int, n: int) -> bytes:
    """A delivery that failed once and now waits in ``tier``, as the courier writes it."""
    event = click_event(f"evt_retry_{tier}_{n}_{uuid.uuid4().hex[:8]}", job.account_id, "lnk_r")
    event["bench_due_ms"] = due_ms  # the receiver measures lateness against this
    return encode(
        DeliveryEnvelope(
            webhook_id=webhook_id(event["id"], endpoint_id),
            event_id=event["id"],
            endpoint_id=endpoint_id,
            account_id=job.account_id,
            event=event,
            attempts_made=tier + 1,
            tier=tier,
            due_at_ms=due_ms,
        )
    )


async def produce_envelopes(job: EnvelopeLoad) -> ProduceResult:
    producer = AIOKafkaProducer(bootstrap_servers=job.bootstrap, acks="all")
    await producer.start()
    started = time.monotonic()
    scheduled_ms = time.time() * 1000
    try:
        pending: list[asyncio.Future[Any]] = []
        for tier in job.tiers:
            endpoints = itertools.cycle(tier.endpoint_ids)
            step_ms = job.spread_s * 1000 / job.per_tier
            for n in range(job.per_tier):
                # In due order, as the courier writes a tier: the retry service relies on it.
                due_ms = int(scheduled_ms + tier.delay_s * 1000 + n * step_ms)
                endpoint_id = next(endpoints)
                value = envelope(job, tier.index, endpoint_id, due_ms, n)
                headers = [(HEADER_DUE_AT_MS, str(due_ms).encode())]
                pending.append(
                    await producer.send(
                        tier.topic, key=endpoint_id.encode(), value=value, headers=headers
                    )
                )
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return ProduceResult(records=job.per_tier * len(job.tiers), seconds=time.monotonic() - started)
