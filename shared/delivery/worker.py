"""What the dispatcher and the retry service share around their consume loops: the webhook
client and the deliverer, the ops server, lag reporting, signals, and the loop itself."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from aiokafka import AIOKafkaConsumer

from shared.delivery.attempt_log import AttemptLog
from shared.delivery.deliverer import Deliverer
from shared.delivery.endpoint_gate import EndpointGate, gate_for
from shared.delivery.http_client import WebhookClient
from shared.delivery.sender import Sender
from shared.kafka.caps_membership import FIRST_SHARE_TIMEOUT_S, CapsMembership
from shared.kafka.clients import HANDOFF_LINGER_MS, create_audit_producer
from shared.kafka.lag import LagScope, lag_reporting
from shared.kafka.partition_worker import PartitionWorker
from shared.kafka.service_base import ServiceBase, service_base
from shared.model.errors import CapsShareUnavailable
from shared.model.topics import Topics
from shared.ops import metrics
from shared.ops.health import start_ops_server
from shared.ops.logging import configure_logging
from shared.ops.metrics import Service
from shared.ops.process import close_quietly, stop_on_signals
from shared.ops.settings import Settings, load_settings
from shared.ops.tracing import tracing

# How long a stopping service waits for the endpoint disables under way (a write each).
DISABLES_GRACE_S = 5.0
# Builds the service's consumer and its worker once the base, the deliverer and the gate exist.
WorkerFactory = Callable[
    [ServiceBase, Deliverer, EndpointGate], tuple[AIOKafkaConsumer, PartitionWorker]
]


async def run_delivery_worker(
    service: Service,
    build: WorkerFactory,
    *,
    port: Callable[[Settings], int],
    lag_scope: Callable[[Settings], LagScope],
) -> None:
    """Run a delivering service until SIGTERM, then drain and stop in reverse order."""
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    metrics.initialise(service, settings)
    async with (
        tracing(settings, service),
        service_base(settings, linger_ms=HANDOFF_LINGER_MS) as base,
        deliverer_for(base, service) as deliverer,
        caps_share(base, service) as membership,
        ops_server(base, port(settings)),
        lag_reporting(settings, lag_scope(settings), base.supervisor),
    ):
        stop_on_signals(base.stop)
        consumer, worker = build(base, deliverer, gate_for(settings, membership.share))
        await consume(base, consumer, worker, membership)


@contextlib.asynccontextmanager
async def deliverer_for(base: ServiceBase, service: str) -> AsyncIterator[Deliverer]:
    """The pooled webhook client and the deliverer that carries deliveries for ``service``."""
    settings = base.settings
    client = WebhookClient(settings.allowed_cidrs, timeout_s=settings.delivery_timeout_s)
    async with attempt_log_for(base, service) as attempt_log:
        deliverer = Deliverer(
            settings,
            service=service,
            producer=base.producer,
            attempt_log=attempt_log,
            sender=Sender(client),
            endpoints=base.endpoints,
        )
        try:
            yield deliverer
        finally:
            await deliverer.finish_disables(DISABLES_GRACE_S)
            await client.close()


@contextlib.asynccontextmanager
async def attempt_log_for(base: ServiceBase, service: str) -> AsyncIterator[AttemptLog | None]:
    """The delivery log's writer and its producer, when the log is on."""
    settings = base.settings
    if not settings.attempt_log_enabled:
        yield None
        return
    producer = create_audit_producer(settings)
    await producer.start()
    attempt_log = AttemptLog(producer, Topics(settings.topic_prefix).attempts, service=service)
    base.supervisor.start("attempt_log_writer", attempt_log.run())
    try:
        yield attempt_log
    finally:
        await base.supervisor.cancel("attempt_log_writer")
        await attempt_log.flush()
        await close_quietly("attempt log producer", producer.stop())


@contextlib.asynccontextmanager
async def caps_share(
    base: ServiceBase, service: str, *, first_share_timeout_s: float = FIRST_SHARE_TIMEOUT_S
) -> AsyncIterator[CapsMembership]:
    """Membership of the caps group, for the whole life of the consume loop: the process's
    share of every endpoint's caps. Left last, after the drain, so that the deliveries still
    in flight keep their share, and the others take it over at once."""
    membership = CapsMembership(base.settings, service, first_share_timeout_s=first_share_timeout_s)
    await membership.start()
    base.readiness.add("caps_share_assigned", membership.assigned.is_set)
    base.supervisor.start("caps_membership", membership.run())
    try:
        yield membership
    finally:
        await base.supervisor.cancel("caps_membership")
        await close_quietly("caps membership", membership.stop())


@contextlib.asynccontextmanager
async def ops_server(base: ServiceBase, port: int) -> AsyncIterator[None]:
    runner = await start_ops_server(base.readiness, base.settings.bind_host, port)
    try:
        yield
    finally:
        base.readiness.draining = True
        await runner.cleanup()


async def consume(
    base: ServiceBase,
    consumer: AIOKafkaConsumer,
    worker: PartitionWorker,
    membership: CapsMembership,
) -> None:
    """Consume once the endpoint table is loaded (so no click meets an empty table) and the
    process has its share of the caps (so none is sent without one). ``CapsShareUnavailable``
    when no share came in time: nothing was consumed, so nothing committed, and the clicks wait
    in the topic for a process that has one."""
    try:
        if not await _ready_unless_stopped(base.stop, base.endpoints.loaded):
            return
        if not await _first_share_unless_stopped(base.stop, membership):
            return
        await consumer.start()
        await worker.run(base.stop)
    finally:
        base.readiness.draining = True
        # Also one never started (stopped or given up before): it holds a client all the same.
        await close_quietly("consumer", consumer.stop())


async def _first_share_unless_stopped(stop: asyncio.Event, membership: CapsMembership) -> bool:
    """Wait for the process's first share of the caps, for a bounded time."""
    try:
        async with asyncio.timeout(membership.first_share_timeout_s):
            return await _ready_unless_stopped(stop, membership.assigned)
    except TimeoutError:
        raise CapsShareUnavailable(membership.topic, membership.first_share_timeout_s) from None


async def _ready_unless_stopped(stop: asyncio.Event, ready: asyncio.Event) -> bool:
    """Wait until ``ready`` is set; False if ``stop`` came first."""
    stop_wait = asyncio.ensure_future(stop.wait())
    ready_wait = asyncio.ensure_future(ready.wait())
    await asyncio.wait({stop_wait, ready_wait}, return_when=asyncio.FIRST_COMPLETED)
    for pending in (stop_wait, ready_wait):
        pending.cancel()
    return ready.is_set() and not stop.is_set()
