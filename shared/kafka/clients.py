"""Kafka producer/consumer factories and idempotent topic creation."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeAlias, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner, murmur2
from aiokafka.structs import ConsumerRecord

from shared.kafka.idempotence import SequenceRecoveringProducer
from shared.kafka.undecodable import UndecodableBatch
from shared.model.caps import CAPS_PARTITIONS
from shared.model.topics import HEADER_REASON, HEADER_SOURCE, Topics
from shared.model.watermark import decode_finished
from shared.ops import metrics
from shared.ops.settings import Settings

log = structlog.get_logger(__name__)

TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
HANDOFF_BATCH_BYTES = 256 * 1024
# The attempt log's batches: large, as nobody waits on them (create_audit_producer), and
# within the broker's default max.message.bytes (1 MiB) even uncompressed.
AUDIT_BATCH_BYTES = 1_000_000
MIN_INSYNC_REPLICAS = 2
# Keys whose hash is remembered: endpoint ids (the hand-offs, the attempt log) and link ids.
KEY_HASHES_KEPT = 4096

Header = tuple[str, bytes]
Record: TypeAlias = ConsumerRecord  # aiokafka ships no type information
T = TypeVar("T")


def compression_type(settings: Settings) -> str | None:
    """aiokafka's name for the settings' codec: every producer the services create uses it, so
    every topic's batches are stored compressed (the broker keeps the producer's codec).

    One codec for all of them, the attempt log's included: it writes the most records (one
    per delivery) and ``zstd`` is the cheapest codec there as well as the smallest. Built by
    aiokafka on the event loop, a full 256 KiB batch of attempt records (the batch size then)
    at fan-out 100 took 0.3-0.5 ms with ``zstd`` (+0.5-1.4 µs per record over ``none``, 16x
    smaller), ``snappy`` 0.5-0.6 ms (+1.6 µs, 7x), ``lz4`` 2-5 ms (aiokafka's LZ4-HC level 9,
    10x), ``gzip`` 4-10 ms (level 9, 14x), on a machine under varying load
    (``python -m tests.bench.codec_cost``).
    Against the dispatcher's 0.25 ms per delivery, ``zstd`` adds under 0.6 %.
    """
    return None if settings.kafka_compression == "none" else settings.kafka_compression


_DEFAULT_PARTITIONER = DefaultPartitioner()


@functools.lru_cache(maxsize=KEY_HASHES_KEPT)
def _key_hash(key: bytes) -> int:
    hashed: int = murmur2(key)
    return hashed & 0x7FFFFFFF


def partition_for_key(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """aiokafka's default partitioner (murmur2 of the key, as the Java client), with each
    key's hash remembered: its murmur2 is pure Python, and hashing the same endpoint id
    again for every attempt record was 2 % of the dispatcher's samples."""
    if key is None:
        partition: int = _DEFAULT_PARTITIONER(key, all_partitions, available)
        return partition
    return all_partitions[_key_hash(key) % len(all_partitions)]


# The dispatcher's and the retry service's producer, which hands deliveries off to the tiers
# and the dead letters, lingers this long. No click waits on a hand-off (only its record's
# commit does), and without a linger a steady stream of them (a hung endpoint's deferrals, one
# per click) went out as a produce request each, one as soon as the last was answered: 500 a
# second beside a 500/s stream, each a turn of the broker's request handlers that the clicks'
# own produce and fetch requests queued behind, and a compressed one-record batch to build in
# the service. The fast endpoints' p99 beside a hung one halved with 5 ms
# (docs/performance-history.md, "Latency regressions since 12-01").
HANDOFF_LINGER_MS = 5


def create_producer(settings: Settings, *, linger_ms: int = 0) -> AIOKafkaProducer:
    """Idempotent producer (acks=all): a send resolves only once the record is durable; one
    whose sequence the broker lost starts again under a new producer id (``idempotence``).

    Batches of up to 256 KiB: after an outage the workers hand thousands of envelopes (a
    kilobyte or two each) to the retry tiers at once, and aiokafka sends one batch per
    partition at a time; with the default 16 KiB those hand-offs queued for minutes.

    No linger by default: aiokafka keeps one request in flight per broker, and what arrives
    meanwhile is batched anyway, so under load batches fill by themselves; at light load a
    linger only made each click wait (5 ms was most of a click's way through the pipeline at
    200/s). The delivering services' hand-offs linger (``HANDOFF_LINGER_MS``).
    """
    return SequenceRecoveringProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=linger_ms,
        max_batch_size=HANDOFF_BATCH_BYTES,
        max_request_size=MAX_MESSAGE_BYTES,
        compression_type=compression_type(settings),
        request_timeout_ms=int(settings.publish_timeout_s * 1000),
        client_id="clickhook",
        partitioner=partition_for_key,
    )


def create_audit_producer(settings: Settings) -> AIOKafkaProducer:
    """For the attempt log: an audit trail nobody waits on, so it trades per-record latency
    for large batches (sending one tiny batch per delivery cost the dispatcher a fifth of its
    CPU in the benchmark).

    aiokafka sends one batch per partition per round trip to its leader, and a delivery's
    record goes to its endpoint's partition: a busy endpoint's records are written at most a
    batch per round trip. With 256 KiB batches (some 200 records) a dispatcher draining a
    backlog to one endpoint at 2,000-3,000 deliveries/s on a loaded 2-core machine filled the
    log's queue and dropped 11,000-13,500 of 20,000 records; with batches of 1 MB, 400-1,400.
    A batch holds uncompressed records; the broker stores it compressed (zstd: 10-16 times
    smaller)."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks=1,
        linger_ms=50,
        max_batch_size=AUDIT_BATCH_BYTES,
        compression_type=compression_type(settings),
        request_timeout_ms=int(settings.publish_timeout_s * 1000),
        client_id="clickhook-attempts",
        partitioner=partition_for_key,
    )


def create_consumer(
    settings: Settings,
    *,
    group_id: str | None,
    max_poll_records: int = 500,
    fetch_max_wait_ms: int = 500,
    partition_fetch_bytes: int = MAX_MESSAGE_BYTES,
) -> AIOKafkaConsumer:
    """A consumer with manual commits: offsets are committed only from watermarks.

    ``partition_fetch_bytes`` may be below the largest record: the broker still returns a
    partition's first batch whole (fetch v3 and later), so it only sizes the usual fetch.
    """
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=max_poll_records,
        fetch_max_bytes=MAX_MESSAGE_BYTES * 2,
        max_partition_fetch_bytes=partition_fetch_bytes,
        isolation_level="read_committed",
        fetch_max_wait_ms=fetch_max_wait_ms,
        client_id="clickhook",
    )


def min_insync_replicas(replication: int) -> int:
    """Replicas that must have a write before it is acknowledged (acks=all): two when there
    are two or more, so one broker can be lost without losing an acknowledged record, and with
    three, one can be down without stopping writes."""
    return min(MIN_INSYNC_REPLICAS, replication)


def topic_specs(settings: Settings) -> list[NewTopic]:
    topics = Topics(settings.topic_prefix)
    partitions = settings.topic_partitions
    replication = settings.topic_replication
    durable = {"min.insync.replicas": str(min_insync_replicas(replication))}
    big = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}

    def spec(name: str, configs: dict[str, str], num_partitions: int = partitions) -> NewTopic:
        return NewTopic(name, num_partitions, replication, topic_configs={**configs, **durable})

    return [
        spec(topics.clicks, big),
        spec(topics.clicks_invalid, {**big, "retention.ms": str(14 * 86_400_000)}),
        spec(topics.endpoints, {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}, 1),
        spec(topics.dlq, {**big, "retention.ms": str(30 * 86_400_000)}),
        spec(topics.attempts, {"retention.ms": str(7 * 86_400_000)}),
        spec(topics.replays, {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}, 1),
        # Never written: only its partition count matters (the grain of the caps shares).
        spec(topics.caps, {"retention.ms": str(3_600_000)}, CAPS_PARTITIONS),
        *(spec(name, big) for name in topics.retry_tiers(settings.tier_delays_s)),
    ]


async def ensure_topics(settings: Settings, specs: Iterable[NewTopic] | None = None) -> None:
    """Create the topics that are missing; existing ones are left as they are."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        wanted = list(specs if specs is not None else topic_specs(settings))
        existing = set(await admin.list_topics())
        missing = [spec for spec in wanted if spec.name not in existing]
        if not missing:
            return
        response = await admin.create_topics(missing)
        for name, error_code, *_ in response.topic_errors:
            if error_code not in (0, TOPIC_ALREADY_EXISTS):
                raise RuntimeError(f"creating topic {name} failed with Kafka error {error_code}")
        log.info("topics_created", topics=[spec.name for spec in missing])
    finally:
        await admin.close()


async def produce_durably(
    producer: AIOKafkaProducer,
    topic: str,
    *,
    key: bytes | None,
    value: bytes | None,
    headers: list[Header] | None = None,
) -> None:
    """Produce one record and wait for the broker's acknowledgement, retrying until it comes."""

    async def send() -> None:
        try:
            await producer.send_and_wait(topic, key=key, value=value, headers=headers or [])
        except Exception:
            metrics.PRODUCE_ERRORS.labels(topic=topic).inc()
            raise

    await until_done(send, f"produce to {topic}")


async def set_aside(producer: AIOKafkaProducer, topic: str, record: Record, reason: str) -> str:
    """Keep a record that cannot be processed, byte for byte, in ``topic``, with the reason and
    its source position in headers; returns that position (``topic/partition/offset``)."""
    source = f"{record.topic}/{record.partition}/{record.offset}"
    await _keep(producer, topic, key=record.key, value=record.value, reason=reason, source=source)
    return source


# Of an undecodable batch, what is kept: its first bytes (the header names the producer, the
# codec and the offsets); a batch may be as large as the largest record a topic takes.
KEPT_BATCH_BYTES = 1024 * 1024


async def set_aside_batch(producer: AIOKafkaProducer, topic: str, batch: UndecodableBatch) -> str:
    """Keep a batch that could not be decoded in ``topic``, as stored (its first
    ``KEPT_BATCH_BYTES``), with the reason and its source range
    (``topic/partition/first-last``) in headers; returns that range."""
    kept = batch.stored[:KEPT_BATCH_BYTES]
    reason = f"undecodable batch ({len(batch.stored)} bytes, {len(kept)} kept): {batch.reason}"
    await _keep(producer, topic, key=None, value=kept, reason=reason, source=batch.source)
    return batch.source


async def _keep(
    producer: AIOKafkaProducer,
    topic: str,
    *,
    key: bytes | None,
    value: bytes | None,
    reason: str,
    source: str,
) -> None:
    headers = [(HEADER_REASON, reason.encode()), (HEADER_SOURCE, source.encode())]
    await produce_durably(producer, topic, key=key, value=value, headers=headers)


async def finished_above_commits(
    consumer: AIOKafkaConsumer, partitions: set[TopicPartition]
) -> dict[TopicPartition, set[int]]:
    """Per partition, the offsets its last committer finished above the committed offset, as
    recorded in the commit's metadata (``shared.watermark``)."""
    # aiokafka's public committed() drops the metadata; the coordinator's fetch keeps it.
    committed = await consumer._coordinator.fetch_committed_offsets(list(partitions))
    found: dict[TopicPartition, set[int]] = {}
    for tp, meta in committed.items():
        if meta.offset >= 0 and (finished := decode_finished(meta.offset, meta.metadata)):
            found[tp] = finished
    return found


HANDOFF_RETRY_FIRST_S = 0.5
HANDOFF_RETRY_MAX_S = 30.0


async def until_done(operation: Callable[[], Awaitable[T]], what: str) -> T:
    """Retry a hand-off to Kafka until the broker takes it.

    Retrying the hand-off alone (not the whole record) keeps a broker outage from turning into
    early re-attempts at the receiver. Shutdown cancels the wait; the record is then not
    committed and is read again by whoever owns the partition next.
    """
    delay_s = HANDOFF_RETRY_FIRST_S
    while True:
        try:
            return await operation()
        except (KafkaError, TimeoutError, OSError) as exc:
            log.warning("handoff_retrying", what=what, error=repr(exc), retry_in_s=delay_s)
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, HANDOFF_RETRY_MAX_S)
