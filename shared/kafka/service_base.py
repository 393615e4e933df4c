"""The base every service stands on, started and stopped in one order: topics, producer,
endpoint table, broker probe, readiness; and the reverse on the way out.

Its long-running tasks (the endpoint follower, the broker probe) run under the base's
``Supervisor`` (``shared.ops.supervision``): one that dies turns /readyz red under its own
name and stops the service, which then exits non-zero. A service adds its own tasks with
``base.supervisor.start(name, coroutine)``.
"""

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
from shared.ops.supervision import Supervisor

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
    supervisor: Supervisor


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
async def service_base(settings: Settings, *, linger_ms: int = 0) -> AsyncIterator[ServiceBase]:
    """The base, for the block's duration; raises ``BackgroundTaskFailed`` on the way out when
    a supervised task died (the block was stopped for it). ``linger_ms``: its producer's."""
    stop = asyncio.Event()
    await _ensure_topics_when_reachable(settings)
    producer = create_producer(settings, linger_ms=linger_ms)
    await producer.start()
    endpoints = EndpointStore(settings)
    probe = BrokerProbe(producer)
    # Unready from the moment a stop is asked for, not once the drain is over: the drain takes
    # up to CLICKHOOK_DRAIN_GRACE, and nothing new should be routed here meanwhile.
    readiness = Readiness(draining_on=stop)
    supervisor = Supervisor(readiness, stop)
    try:
        await endpoints.start()
        readiness.add("broker_reachable", lambda: probe.reachable)
        readiness.add("endpoints_loaded", endpoints.loaded.is_set)
        supervisor.start("endpoint_follower", endpoints.follow())
        supervisor.start("broker_probe", probe.run())
        yield ServiceBase(settings, producer, endpoints, readiness, stop, supervisor)
    finally:
        await supervisor.close()
        await endpoints.stop()
        await close_quietly("producer", producer.stop())
    supervisor.raise_if_failed()
