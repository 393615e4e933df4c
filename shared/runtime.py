"""Start-up and shutdown shared by the services, in one order: topics, producer, endpoint
table, broker probe, ops server; and the reverse on the way out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from shared.courier import Courier
from shared.delivery import Sender
from shared.endpoints import EndpointStore
from shared.health import Readiness, start_ops_server
from shared.http_client import WebhookClient
from shared.kafka import create_audit_producer, create_producer, ensure_topics
from shared.lifecycle import close_quietly
from shared.settings import Settings
from shared.worker import PartitionWorker

log = structlog.get_logger(__name__)

BROKER_PROBE_INTERVAL_S = 5.0
STARTUP_RETRY_S = 2.0
STARTUP_ATTEMPTS = 30


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    producer: AIOKafkaProducer
    endpoints: EndpointStore
    readiness: Readiness
    stop: asyncio.Event


class BrokerProbe:
    """Readiness fact: did the last metadata request to the broker succeed?"""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self.reachable = True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(BROKER_PROBE_INTERVAL_S)
            try:
                async with asyncio.timeout(BROKER_PROBE_INTERVAL_S):
                    await self._producer.client.fetch_all_metadata()
                self.reachable = True
            except (KafkaError, TimeoutError, OSError) as exc:
                if self.reachable:
                    log.warning("broker_unreachable", error=str(exc))
                self.reachable = False


async def _ensure_topics_when_reachable(settings: Settings) -> None:
    """A broker that is still starting is waited for; one that never comes up fails start."""
    for attempt in range(1, STARTUP_ATTEMPTS + 1):
        try:
            await ensure_topics(settings)
            return
        except (KafkaError, OSError) as exc:
            if attempt == STARTUP_ATTEMPTS:
                raise
            log.warning("broker_not_ready", attempt=attempt, error=str(exc))
            await asyncio.sleep(STARTUP_RETRY_S)


@contextlib.asynccontextmanager
async def kafka_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    stop = asyncio.Event()
    await _ensure_topics_when_reachable(settings)
    producer = create_producer(settings)
    await producer.start()
    endpoints = EndpointStore(settings, producer)
    probe = BrokerProbe(producer)
    probe_task: asyncio.Task[None] | None = None
    stop_watch: asyncio.Task[None] | None = None
    try:
        await endpoints.start()
        probe_task = asyncio.create_task(probe.run(), name="broker-probe")
        readiness = Readiness()
        readiness.add("broker_reachable", lambda: probe.reachable)
        readiness.add("endpoints_loaded", endpoints.loaded.is_set)
        stop_watch = asyncio.create_task(_unready_on_stop(stop, readiness), name="unready-on-stop")
        yield Runtime(settings, producer, endpoints, readiness, stop)
    finally:
        for task in (probe_task, stop_watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await endpoints.stop()
        await close_quietly("producer", producer.stop())


async def _unready_on_stop(stop: asyncio.Event, readiness: Readiness) -> None:
    """Unready from the moment a stop is asked for, not once the drain is over: the drain
    takes up to CLICKHOOK_DRAIN_GRACE, and nothing new should be routed here meanwhile."""
    await stop.wait()
    readiness.draining = True


async def wait_for_stop_or(stop: asyncio.Event, ready: asyncio.Event) -> bool:
    """Wait until ``ready`` is set; False if ``stop`` came first."""
    stop_wait = asyncio.ensure_future(stop.wait())
    ready_wait = asyncio.ensure_future(ready.wait())
    await asyncio.wait({stop_wait, ready_wait}, return_when=asyncio.FIRST_COMPLETED)
    for pending in (stop_wait, ready_wait):
        pending.cancel()
    return ready.is_set() and not stop.is_set()


@contextlib.asynccontextmanager
async def courier_for(rt: Runtime, service: str) -> AsyncIterator[Courier]:
    """The pooled HTTP client and the courier that carries deliveries for ``service``."""
    settings = rt.settings
    client = WebhookClient(settings.allowed_cidrs, timeout_s=settings.delivery_timeout_s)
    attempt_log = create_audit_producer(settings) if settings.attempt_log_enabled else None
    try:
        if attempt_log is not None:
            await attempt_log.start()
        sender = Sender(client)
        yield Courier(
            settings,
            service=service,
            producer=rt.producer,
            attempt_log=attempt_log,
            sender=sender,
            endpoints=rt.endpoints,
        )
    finally:
        if attempt_log is not None:
            await close_quietly("attempt log producer", attempt_log.stop())
        await client.close()


@contextlib.asynccontextmanager
async def ops_server(rt: Runtime, port: int) -> AsyncIterator[None]:
    runner = await start_ops_server(rt.readiness, rt.settings.bind_host, port)
    try:
        yield
    finally:
        rt.readiness.draining = True
        await runner.cleanup()


async def run_worker(rt: Runtime, consumer: AIOKafkaConsumer, worker: PartitionWorker) -> None:
    """Consume once the endpoint table is loaded (so no click meets an empty table)."""
    if not await wait_for_stop_or(rt.stop, rt.endpoints.loaded):
        return
    await consumer.start()
    try:
        await worker.run(rt.stop)
    finally:
        rt.readiness.draining = True
        await close_quietly("consumer", consumer.stop())
