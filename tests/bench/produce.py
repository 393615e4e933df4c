"""Records straight into Kafka, the way the shortener (or a scheduled retry) would write
them: click backlogs, click streams at a fixed rate, and due-stamped retry envelopes."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from shared.delivery.deliverer import Deliverer
from shared.delivery.http_client import WebhookClient
from shared.delivery.sender import Sender
from shared.kafka.clients import create_producer
from shared.kafka.endpoint_store import EndpointStore
from shared.model.messages import AttemptRecord, DeadLetter, DeliveryEnvelope, encode
from shared.model.signing import webhook_id
from shared.model.topics import HEADER_DUE_AT_MS, HEADER_REASON
from shared.ops.settings import load_settings
from tests.bench.wire import ClickLoad, DeadLetterLoad, DeferLoad, EnvelopeLoad, ProduceResult

# A backlog is written as fast as the broker takes it: big, lingering batches.
BACKLOG_LINGER_MS = 20
DEFER_SEED = 15  # the deferrals' moments; the deliverer's jitter has a random seed of its own


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
    """A delivery that failed once and now waits in ``tier``, as the deliverer writes it."""
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
                # In exact due order, without the deliverer's jitter: the tier mechanism alone
                # (the deferred-lateness scenario writes through the real deliverer).
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


# --- through the real deliverer: deferrals with its jitter ---------------------------------


def unsent_envelope(account_id: str, endpoint_id: str, n: int) -> DeliveryEnvelope:
    """A delivery before its first attempt, as the dispatcher builds it."""
    event = click_event(f"evt_defer_{n}_{uuid.uuid4().hex[:8]}", account_id, "lnk_d")
    return DeliveryEnvelope(
        webhook_id=webhook_id(event["id"], endpoint_id),
        event_id=event["id"],
        endpoint_id=endpoint_id,
        account_id=account_id,
        event=event,
        attempts_made=0,
        tier=-1,
        due_at_ms=0,
    )


async def produce_deferrals(job: DeferLoad) -> ProduceResult:
    """``Deliverer.defer`` at random moments from several tasks, as deliveries over their
    endpoint's caps are deferred: the deliverer picks each due time (with its jitter) and
    writes the tier; the bench reads the due times back from the topic."""
    settings = load_settings(
        {
            "CLICKHOOK_KAFKA_BOOTSTRAP": job.bootstrap,
            "CLICKHOOK_TOPIC_PREFIX": job.prefix,
            "CLICKHOOK_RETRY_SCHEDULE": job.schedule,
        }
    )
    producer = create_producer(settings)
    await producer.start()
    client = WebhookClient((), timeout_s=1.0)  # never used: a deferral makes no attempt
    deliverer = Deliverer(
        settings,
        service="bench",
        producer=producer,
        attempt_log=None,
        sender=Sender(client),
        endpoints=EndpointStore(settings),
    )
    rng = random.Random(DEFER_SEED)
    started = time.monotonic()
    ends_at = started + job.duration_s
    written = itertools.count()

    async def writer() -> int:
        count = 0
        while time.monotonic() < ends_at:
            await asyncio.sleep(rng.expovariate(job.rate_per_s / job.writers))
            n = next(written)
            endpoint_id = job.endpoint_ids[n % len(job.endpoint_ids)]
            await deliverer.defer(unsent_envelope(job.account_id, endpoint_id, n), "endpoint_busy")
            count += 1
        return count

    try:
        counts = await asyncio.gather(*(writer() for _ in range(job.writers)))
    finally:
        await producer.stop()
        await client.close()
    return ProduceResult(records=sum(counts), seconds=time.monotonic() - started)


# --- dead letters, many and fast ---------------------------------------------------------

DEAD_LETTER_LINGER_MS = 50
DEAD_LETTER_BATCH_BYTES = 1024 * 1024
DEAD_LETTER_IN_FLIGHT = 20_000
DEAD_LETTER_ATTEMPTS = 3  # an exhausted letter of a three-attempt schedule


def dead_letter(
    job: DeadLetterLoad, endpoint_id: str, n: int, history: list[AttemptRecord]
) -> bytes:
    event = click_event(f"evt_dead_{n}", job.account_id, "lnk_dead")
    envelope = DeliveryEnvelope(
        webhook_id=webhook_id(event["id"], endpoint_id),
        event_id=event["id"],
        endpoint_id=endpoint_id,
        account_id=job.account_id,
        event=event,
        attempts_made=len(history),
        tier=len(history) - 1,
        due_at_ms=job.dead_at_ms,
        attempts=history,
    )
    return encode(DeadLetter(reason="exhausted", dead_at_ms=job.dead_at_ms, envelope=envelope))


def failed_history(job: DeadLetterLoad) -> list[AttemptRecord]:
    """What an exhausted letter carries: each attempt, a 503 with a short body."""
    return [
        AttemptRecord(
            webhook_id="msg_history",
            event_id="evt_history",
            endpoint_id="ep_history",
            account_id=job.account_id,
            attempt=attempt,
            at_ms=job.dead_at_ms - (DEAD_LETTER_ATTEMPTS - attempt) * 60_000,
            duration_ms=12.5,
            outcome="http_5xx",
            status=503,
            response_body="upstream unavailable",
            breaker="closed",
            service="retry",
        )
        for attempt in range(1, DEAD_LETTER_ATTEMPTS + 1)
    ]


async def produce_dead_letters(job: DeadLetterLoad) -> ProduceResult:
    """``big_count`` letters of the big endpoint spread evenly among the others' letters."""
    producer = AIOKafkaProducer(
        bootstrap_servers=job.bootstrap,
        acks=1,
        linger_ms=DEAD_LETTER_LINGER_MS,
        max_batch_size=DEAD_LETTER_BATCH_BYTES,
    )
    await producer.start()
    others = [f"ep_dead{n:05}" for n in range(job.other_endpoints)]
    history = failed_history(job)
    every = max(1, job.count // max(1, job.big_count))
    started = time.monotonic()
    slots = asyncio.Semaphore(DEAD_LETTER_IN_FLIGHT)
    try:
        big = 0
        for n in range(job.count):
            if n % every == 0 and big < job.big_count:
                endpoint_id, big = job.big_endpoint_id, big + 1
            else:
                endpoint_id = others[n % len(others)]
            await slots.acquire()
            sent = await producer.send(
                job.topic,
                key=endpoint_id.encode(),
                value=dead_letter(job, endpoint_id, n, history),
                headers=[(HEADER_REASON, b"exhausted")],
            )
            sent.add_done_callback(lambda _: slots.release())
        await producer.flush()
    finally:
        await producer.stop()
    return ProduceResult(records=job.count, seconds=time.monotonic() - started)
