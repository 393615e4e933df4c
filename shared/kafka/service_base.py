"""The base every service stands on, started and stopped in one order: topics, producer,
endpoint table, broker probe, readiness; and the reverse on the way out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from shared.kafka.clients import create_producer, ensure_topics
from shared.kafka.endpoint_store import EndpointStore
from shared.ops.health import Readiness
from shared.ops.process import close_quietly
from shared.ops.settings import Settings

log = structlog.get_logger(__name__)

BROKER_PROBE_INTERVAL_S = 5.0
STARTUP_RETRY_S = 2.0
STARTUP_ATTEMPTS = 30


@dataclass(frozen=True, slots=True)
class ServiceBase:
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
async def service_base(settings: Settings) -> AsyncIterator[ServiceBase]:
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
        yield ServiceBase(settings, producer, endpoints, readiness, stop)
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
