"""The two ceilings the headline figures are measured against, on the same machine in the
same run (issue 18): what our sender does with no Kafka around it, and what a bare aiokafka
producer does with no HTTP API in front of it. Run inside the load generator's process."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from datetime import UTC, datetime
from typing import Any

from shared.delivery.http_client import WebhookClient
from shared.delivery.sender import Sender
from shared.kafka.clients import create_producer
from shared.model.messages import Endpoint, EndpointSecret
from shared.model.signing import generate_secret, webhook_id
from shared.ops.settings import Settings
from tests.bench.produce import click_event
from tests.bench.wire import HttpResult, ProducerLoad, SenderLoad

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
SENDER_TIMEOUT_S = 15.0  # the delivery timeout's default


def bench_endpoint(url: str) -> Endpoint:
    now = datetime.now(UTC)
    return Endpoint(
        id="ep_ceiling",
        account_id="acc_ceiling",
        url=url,
        secrets=[EndpointSecret(generate_secret())],
        created_at=now,
        updated_at=now,
    )


class _Window:
    """Counts what finished inside the measuring window, after the warm-up."""

    def __init__(self, warmup_s: float, duration_s: float) -> None:
        self.counts_from = time.monotonic() + warmup_s
        self.ends_at = self.counts_from + duration_s
        self.ok = self.failed = self.ok_total = 0

    @property
    def open(self) -> bool:
        return time.monotonic() < self.ends_at

    def count(self, ok: bool, n: int = 1) -> None:
        done = time.monotonic()
        self.ok_total += n if ok else 0
        if self.counts_from <= done < self.ends_at:
            if ok:
                self.ok += n
            else:
                self.failed += n

    def result(self, duration_s: float) -> HttpResult:
        return HttpResult(
            ok=self.ok, failed=self.failed, seconds=duration_s, ok_total=self.ok_total
        )


async def run_sender_load(job: SenderLoad) -> HttpResult:
    """Signed webhook requests through the same client and sender the dispatcher uses."""
    client = WebhookClient(LOOPBACK, timeout_s=SENDER_TIMEOUT_S)
    sender = Sender(client)
    endpoint = bench_endpoint(job.url)
    event = click_event("evt_ceiling", endpoint.account_id, "lnk_1")
    window = _Window(job.warmup_s, job.duration_s)

    async def attempts(task: int) -> None:
        n = 0
        while window.open:
            n += 1
            event_id = f"evt_{task}_{n}"
            result = await sender.attempt(
                endpoint,
                event,
                webhook_id=webhook_id(event_id, endpoint.id),
                event_id=event_id,
                attempt=1,
            )
            window.count(result.outcome == "success")

    try:
        await asyncio.gather(*(attempts(task) for task in range(job.concurrency)))
    finally:
        await client.close()
    return window.result(job.duration_s)


async def run_producer_load(job: ProducerLoad) -> HttpResult:
    """The batch event written again and again with ingest's producer settings, keeping
    ``in_flight`` sends outstanding (ingest's connections times its batch size)."""
    producer = create_producer(Settings(kafka_bootstrap=job.bootstrap))
    await producer.start()
    value, key = job.event.encode(), job.key.encode()
    window = _Window(job.warmup_s, job.duration_s)
    slots = asyncio.Semaphore(job.in_flight)

    def acknowledged(sent: asyncio.Future[Any]) -> None:
        slots.release()
        window.count(not sent.cancelled() and sent.exception() is None)

    try:
        while window.open:
            await slots.acquire()
            sent = await producer.send(job.topic, key=key, value=value)
            sent.add_done_callback(acknowledged)
        await producer.flush()
    finally:
        await producer.stop()
    return window.result(job.duration_s)
