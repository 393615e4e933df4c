"""Consumer lag of a service's own group, computed from the broker's offsets.

No Kafka exporter is needed: every ``LAG_INTERVAL_S`` the service asks the broker for the end
offset of each partition of its group's topics and for the group's committed offsets; the lag
of a partition is the difference (a partition the group never committed counts from the log
start, since the consumers begin at the earliest offset). Every replica measures the whole
group, so dashboards and alerts aggregate with ``max``, never ``sum``.

For the retry tiers the lag is split into envelopes already due and envelopes still waiting,
without reading them: a tier's envelopes fall due the tier's delay (plus at most
``MAX_JITTER_FRACTION``) after they were written, so every record written before
``now - delay * (1 + jitter)`` is surely due, and the broker finds the first record written
after that instant by timestamp. Due is thus a lower bound (a record inside the jitter window,
or replayed and due at once, counts as waiting until the bound passes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata

from shared.kafka.clients import create_consumer
from shared.model.schedule import MAX_JITTER_FRACTION, parse_duration_s
from shared.model.topics import DISPATCHER_GROUP, RETRY_GROUP, RETRY_PREFIX, Topics
from shared.ops import metrics
from shared.ops.process import close_quietly
from shared.ops.settings import Settings
from shared.ops.supervision import Supervisor

log = structlog.get_logger(__name__)

LAG_INTERVAL_S = 15.0
# After a failed sample (a broker still electing the group coordinator at start), try again
# sooner, doubling up to the interval, so the gauges do not wait a whole interval to appear.
FIRST_RETRY_S = 1.0
# A sample that hangs (aiokafka waits for a partition's leader) must not stall later ones.
SAMPLE_TIMEOUT_S = 10.0


# --- pure: what one set of offsets means ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    start: int
    end: int
    committed: int | None = None
    # Retry tiers only: the first offset not surely due yet.
    due_end: int | None = None

    @property
    def position(self) -> int:
        """Where the group resumes: its commit, or the log start when it has none (or when
        retention deleted the records it points at)."""
        if self.committed is None or self.committed < self.start:
            return self.start
        return min(self.committed, self.end)

    @property
    def lag(self) -> int:
        return self.end - self.position

    @property
    def due(self) -> int:
        if self.due_end is None:
            return 0
        return max(0, min(self.due_end, self.end) - self.position)


@dataclass(frozen=True, slots=True)
class TopicLag:
    lag: int = 0
    due: int = 0

    @property
    def waiting(self) -> int:
        return self.lag - self.due


def lag_by_topic(offsets: Mapping[TopicPartition, PartitionOffsets]) -> dict[str, TopicLag]:
    """Partitions summed per topic: the label set stays one series per topic."""
    totals: dict[str, TopicLag] = {}
    for tp, partition in offsets.items():
        total = totals.get(tp.topic, TopicLag())
        totals[tp.topic] = TopicLag(total.lag + partition.lag, total.due + partition.due)
    return totals


def committed_offset(meta: OffsetAndMetadata | None) -> int | None:
    """The broker answers -1 for a partition the group has no offset for."""
    if meta is None or meta.offset < 0:
        return None
    return int(meta.offset)


def tier_delay_s(topic: str, tier_prefix: str) -> float | None:
    """The delay a tier topic's name spells (``webhook.retry.5m`` → 300.0); None otherwise."""
    if not topic.startswith(tier_prefix):
        return None
    try:
        return parse_duration_s(topic.removeprefix(tier_prefix))
    except ValueError:
        return None


def surely_due_before_ms(now_ms: int, delay_s: float) -> int:
    """Records of a tier written before this instant are due whatever their jitter."""
    return max(0, now_ms - round(delay_s * (1 + MAX_JITTER_FRACTION) * 1000))


# --- what a service measures --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LagScope:
    group: str
    topics: tuple[str, ...]
    # More topics of the group, found by name (tiers of an older schedule still drain).
    pattern: str | None = None
    # Set when the topics are retry tiers: their lag is split into due and waiting.
    tier_prefix: str | None = None

    def wanted(self, existing: Iterable[str]) -> list[str]:
        found = {t for t in existing if self.pattern and re.match(self.pattern, t)}
        return sorted(found | set(self.topics))


def dispatcher_lag_scope(settings: Settings) -> LagScope:
    topics = Topics(settings.topic_prefix)
    return LagScope(group=topics.group(DISPATCHER_GROUP), topics=(topics.clicks,))


def retry_lag_scope(settings: Settings) -> LagScope:
    topics = Topics(settings.topic_prefix)
    return LagScope(
        group=topics.group(RETRY_GROUP),
        topics=tuple(topics.retry_tiers(settings.tier_delays_s)),
        pattern=topics.retry_pattern,
        tier_prefix=settings.topic_prefix + RETRY_PREFIX,
    )


# --- I/O: asking the broker ---------------------------------------------------------------------


class LagMonitor:
    """Samples the scope's lag into the gauges, now and every ``interval_s``."""

    def __init__(
        self,
        settings: Settings,
        scope: LagScope,
        *,
        interval_s: float = LAG_INTERVAL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._scope = scope
        self._interval_s = interval_s
        self._clock = clock
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._exported: set[str] = set()

    async def run(self) -> None:
        retry_s = FIRST_RETRY_S
        try:
            while True:
                if await self._sample_safely():
                    retry_s = FIRST_RETRY_S
                    await asyncio.sleep(self._interval_s)
                else:
                    await asyncio.sleep(min(retry_s, self._interval_s))
                    retry_s *= 2
        finally:
            await self.close()

    async def close(self) -> None:
        if self._consumer is not None:
            await close_quietly("lag consumer", self._consumer.stop())
            self._consumer = None
        if self._admin is not None:
            await close_quietly("lag admin client", self._admin.close())
            self._admin = None

    async def sample(self) -> dict[str, TopicLag]:
        """Measure once and set the gauges; returns the figures per topic."""
        admin, consumer = await self._connect()
        partitions = await self._partitions(admin)
        if not partitions:
            self._export({})
            return {}
        committed = await admin.list_consumer_group_offsets(self._scope.group)
        starts = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        due_ends = await self._due_ends(consumer, partitions, ends)
        offsets = {
            tp: PartitionOffsets(
                start=starts[tp],
                end=ends[tp],
                committed=committed_offset(committed.get(tp)),
                due_end=due_ends.get(tp),
            )
            for tp in partitions
        }
        totals = lag_by_topic(offsets)
        self._export(totals)
        return totals

    async def _sample_safely(self) -> bool:
        try:
            async with asyncio.timeout(SAMPLE_TIMEOUT_S):
                await self.sample()
        except Exception as exc:  # noqa: BLE001 - a missed sample must never stop the service
            metrics.LAG_SAMPLE_ERRORS.labels(group=self._scope.group).inc()
            log.warning("lag_sample_failed", group=self._scope.group, error=repr(exc))
            # Reconnect next time: a client that failed may be in any state.
            await self.close()
            return False
        return True

    async def _connect(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self._settings.kafka_bootstrap, client_id="clickhook-lag"
            )
            self._admin = admin
            await admin.start()
        if self._consumer is None:
            # No group: this consumer only asks for offsets, it never joins or commits.
            consumer = create_consumer(self._settings, group_id=None)
            self._consumer = consumer
            await consumer.start()
        return self._admin, self._consumer

    async def _partitions(self, admin: AIOKafkaAdminClient) -> list[TopicPartition]:
        existing = await admin.list_topics() if self._scope.pattern else []
        wanted = self._scope.wanted(existing)
        described = await admin.describe_topics(wanted)
        return [
            TopicPartition(topic["topic"], partition["partition"])
            for topic in described
            if topic["error_code"] == 0  # a topic not created yet has no lag to report
            for partition in topic["partitions"]
        ]

    async def _due_ends(
        self,
        consumer: AIOKafkaConsumer,
        partitions: list[TopicPartition],
        ends: Mapping[TopicPartition, int],
    ) -> dict[TopicPartition, int]:
        prefix = self._scope.tier_prefix
        if prefix is None:
            return {}
        now_ms = int(self._clock() * 1000)
        cutoffs: dict[TopicPartition, int] = {}
        for tp in partitions:
            delay_s = tier_delay_s(tp.topic, prefix)
            if delay_s is not None:
                cutoffs[tp] = surely_due_before_ms(now_ms, delay_s)
        if not cutoffs:
            return {}
        found = await consumer.offsets_for_times(dict(cutoffs))
        # No record at or after the cutoff: every record of the partition is due.
        return {tp: ends[tp] if found.get(tp) is None else int(found[tp].offset) for tp in cutoffs}

    def _export(self, totals: Mapping[str, TopicLag]) -> None:
        group = self._scope.group
        for topic, figures in totals.items():
            metrics.CONSUMER_LAG.labels(group=group, topic=topic).set(figures.lag)
            if self._scope.tier_prefix is not None:
                metrics.RETRY_ENVELOPES.labels(topic=topic, state="due").set(figures.due)
                metrics.RETRY_ENVELOPES.labels(topic=topic, state="waiting").set(figures.waiting)
        # A deleted topic (a tier of a retired schedule) leaves the dashboards.
        for topic in self._exported - set(totals):
            metrics.CONSUMER_LAG.remove(group, topic)
            if self._scope.tier_prefix is not None:
                metrics.RETRY_ENVELOPES.remove(topic, "due")
                metrics.RETRY_ENVELOPES.remove(topic, "waiting")
        self._exported = set(totals)


@contextlib.asynccontextmanager
async def lag_reporting(
    settings: Settings, scope: LagScope, supervisor: Supervisor
) -> AsyncIterator[LagMonitor]:
    """Sample the scope's lag in the background, supervised, for as long as the block runs."""
    monitor = LagMonitor(settings, scope)
    supervisor.start("consumer_lag", monitor.run())
    try:
        yield monitor
    finally:
        await supervisor.cancel("consumer_lag")
