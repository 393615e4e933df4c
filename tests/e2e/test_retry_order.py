"""Retries written by the deliverer itself, with its jitter, come out of their tier on time.

The retry service waits on each tier partition's head record, so a record behind a head that
falls due later would be late by the difference: jitter must never put a tier much out of
order. Envelopes go through the real hand-off (``Deliverer.defer``) at a steady rate into a
20 s tier, where an uncapped 10 % jitter could put a record up to 2 s behind its due time.
"""

from __future__ import annotations

import asyncio
import statistics
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from shared.delivery.deliverer import Deliverer
from shared.delivery.http_client import WebhookClient
from shared.delivery.sender import Sender
from shared.kafka.clients import create_producer
from shared.kafka.endpoint_store import EndpointStore
from shared.model.envelopes import first_envelope
from shared.model.messages import ClickEvent, Endpoint, decode_envelope, validate_click
from shared.model.schedule import MAX_JITTER_S
from shared.ops.settings import load_settings
from tests.e2e.conftest import ACCOUNT_ID, Pipeline, StartPipeline
from tests.support.clicks import make_click
from tests.support.receiver import Receiver
from tests.support.topics import read_records

pytestmark = [pytest.mark.kafka, pytest.mark.e2e, pytest.mark.timeout(120)]

TIER = "20s"
ENVELOPES = 500
WRITES_PER_S = 125.0
ENDPOINTS = 5
# Lateness comes from the cap on jitter and from the retry service's own polling.
LATENESS_BOUND_S = MAX_JITTER_S + 0.75


async def write_through_the_deliverer(
    pipeline: Pipeline, endpoints: list[Endpoint], clicks: list[ClickEvent]
) -> None:
    settings = load_settings(
        {
            "CLICKHOOK_KAFKA_BOOTSTRAP": pipeline.bootstrap,
            "CLICKHOOK_TOPIC_PREFIX": pipeline.prefix,
            "CLICKHOOK_RETRY_SCHEDULE": TIER,
        }
    )
    producer: AIOKafkaProducer = create_producer(settings)
    await producer.start()
    client = WebhookClient((), timeout_s=1.0)
    store = EndpointStore(settings)  # not started: deferring reads no endpoint
    try:
        deliverer = Deliverer(
            settings,
            service="test",
            producer=producer,
            attempt_log=None,
            sender=Sender(client),
            endpoints=store,
        )
        for n, click in enumerate(clicks):
            endpoint = endpoints[n % len(endpoints)]
            await deliverer.defer(first_envelope(endpoint, click), "endpoint_busy")
            await asyncio.sleep(1 / WRITES_PER_S)
    finally:
        await store.stop()
        await client.close()
        await producer.stop()


def as_endpoint(created: dict[str, Any]) -> Endpoint:
    """The endpoint record behind an API answer (which shows the secret once)."""
    return msgspec.convert(
        {**created, "secrets": [{"secret": created["secret"]}]}, Endpoint, strict=False
    )


async def test_jittered_retries_are_never_early_and_late_by_at_most_the_cap(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    pipeline = await start_pipeline(CLICKHOOK_RETRY_SCHEDULE=TIER)
    endpoints = [
        as_endpoint(await pipeline.create_endpoint(receiver.url(f"/ep{n}")))
        for n in range(ENDPOINTS)
    ]
    clicks = [
        validate_click(make_click(f"evt_order_{n}", account_id=ACCOUNT_ID), now=datetime.now(UTC))
        for n in range(ENVELOPES)
    ]

    await write_through_the_deliverer(pipeline, endpoints, clicks)
    arrivals = await receiver.wait_for(ENVELOPES, timeout_s=60)
    tier = await read_records(
        pipeline.bootstrap, pipeline.topic(f"webhook.retry.{TIER}"), ENVELOPES
    )

    due_s = {
        envelope.webhook_id: envelope.due_at_ms / 1000
        for envelope in (decode_envelope(record.value) for record in tier)
    }
    lateness_s = sorted(a.at_s - due_s[a.headers["webhook-id"]] for a in arrivals)
    assert len(lateness_s) == ENVELOPES
    assert lateness_s[0] >= 0, f"a retry came {-lateness_s[0]:.3f} s before it was due"
    p99_s = statistics.quantiles(lateness_s, n=100)[98]
    assert p99_s <= LATENESS_BOUND_S, f"p99 lateness {p99_s:.3f} s, max {lateness_s[-1]:.3f} s"
