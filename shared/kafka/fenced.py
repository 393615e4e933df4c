"""Compare-and-set writes to a compacted topic, built on Kafka's transactions (Kafka has no
compare-and-set).

Every writer of the topic, in every instance of every service and the CLI, writes under one
transactional id. Opening a producer with that id fences all the others: a writer that opened
before can no longer commit (``ProducerFenced``), and what it had written is aborted, which no
reader ever sees (the consumers read committed records only). After opening, the writer reads
the topic to its end, decides from what it now holds, writes and commits. A write therefore
commits only if no other fenced write committed between its read and its commit; one that was
fenced starts again from the read, a bounded number of times. This is how Kafka Connect keeps a
zombie leader from writing its config topic (KIP-618).

Why not a base version in each record, checked by every reader: two writers racing on one key
both append, the loser's record comes last, and compaction keeps the last record of a key. A
reader that starts after compaction sees only the loser's record and cannot tell it lost. With
transactions a losing write is aborted: never visible, dropped by the log cleaner.

Costs: a write opens a short-lived producer (a few milliseconds against a local broker) and
waits for the others of this instance; a writer that dies inside its transaction holds every
reader back (read_committed stops at an open transaction) until the next writer fences it or
``WRITE_TRANSACTION_TIMEOUT_MS`` passes.

Used by the endpoint registry (``webhook.endpoints``) and by replay jobs claiming their
endpoint (``webhook.replays``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import ProducerFenced

from shared.kafka.clients import MAX_MESSAGE_BYTES
from shared.model.errors import ClickhookError
from shared.ops.process import close_quietly
from shared.ops.settings import Settings

log = structlog.get_logger(__name__)

# How long the broker may hold a follower's fetch when nothing is new. A write first waits for
# the follower to pass the end of the topic, which after a transaction is its commit marker: a
# control record that only a fetch of its own brings in. This bounds that wait. Followers of a
# topic written through a ``FencedWriter`` are created with it.
FOLLOW_FETCH_WAIT_MS = 100
# A write fenced this many times in a row (other writers kept committing) gives up.
MAX_WRITE_ATTEMPTS = 5
# Before trying again, a fenced writer waits a random part of this, times its attempt: two
# writers fencing each other in turn fall out of step.
FENCED_BACKOFF_S = 0.05
# How often a writer looks whether the follower has read up to the end it waits for.
READ_POLL_S = 0.005
# A write's transaction is open for one send and one commit; a writer that dies with one open
# holds the topic's readers back at most this long.
WRITE_TRANSACTION_TIMEOUT_MS = 15_000


class Keep:
    """A decision to write nothing."""


KEEP = Keep()
# What a write puts under its key: a value, a tombstone (None), or nothing at all (KEEP).
Decision = bytes | None | Keep


class WriteContended(ClickhookError):
    """Other writers committed between every read and write of ``attempts`` tries."""

    def __init__(self, key: str, attempts: int) -> None:
        super().__init__(f"{key}: other writes won {attempts} times in a row")
        self.key = key
        self.attempts = attempts


class FencedWriter:
    """Compare-and-set writes to ``topic``, whose records ``reader`` follows (a read_committed
    consumer assigned every partition of the topic, whose records are applied as they come:
    what ``decide`` looks at)."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        reader: AIOKafkaConsumer,
        *,
        client_id: str,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._topic = topic
        self._reader = reader
        self._client_id = client_id
        self._lock = asyncio.Lock()
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter, not security

    @property
    def writer_id(self) -> str:
        """The transactional id every writer of the topic shares (prefixed like the topic, so
        environments sharing a cluster never fence each other)."""
        return f"{self._topic}.writer"

    async def write(
        self, key: str, decide: Callable[[], Decision], on_commit: Callable[[int], None]
    ) -> bool:
        """Read to the end, ask ``decide`` what to write under ``key``, write it; again if
        fenced. ``decide`` looks at what the reader has applied, may run more than once, and
        may raise to refuse. ``on_commit`` gets the committed record's offset (apply it there:
        read-your-writes). False when ``decide`` kept things as they are."""
        async with self._lock:  # one transactional producer of ours at a time
            for attempt in range(1, MAX_WRITE_ATTEMPTS + 1):
                producer = self._transactional_producer()
                try:
                    # Opening the producer fences every other writer: from here on, no write
                    # commits unless it is ours or it fenced us (and then ours does not).
                    await producer.start()
                    await self.read_to_end()
                    decision = decide()
                    if isinstance(decision, Keep):
                        return False
                    async with producer.transaction():
                        meta = await producer.send_and_wait(
                            self._topic, key=key.encode(), value=decision
                        )
                except ProducerFenced:
                    _forget_fencing(producer)
                    log.info("fenced_write_fenced", topic=self._topic, key=key, attempt=attempt)
                    await asyncio.sleep(self._rng.uniform(0, FENCED_BACKOFF_S * attempt))
                    continue
                finally:
                    await close_quietly("fenced writer", producer.stop())
                on_commit(meta.offset)
                await self._wait_for_commit_marker(
                    TopicPartition(meta.topic, meta.partition), meta.offset
                )
                return True
        raise WriteContended(key, MAX_WRITE_ATTEMPTS)

    async def read_to_end(self) -> None:
        """Wait until the reader has applied every record committed so far (bounded by the
        publish timeout): what a write sees before it decides, and what a read does that must
        not miss a write another instance made a moment ago."""
        ends = await self._reader.end_offsets(list(self._reader.assignment()))
        async with asyncio.timeout(self._settings.publish_timeout_s):
            for tp, end in ends.items():
                # Polled: the position also moves past transaction markers, which wake no
                # one (the follower's getmany returns only for records).
                while await self._reader.position(tp) < end:  # noqa: ASYNC110
                    await asyncio.sleep(READ_POLL_S)

    async def _wait_for_commit_marker(self, tp: TopicPartition, offset: int) -> None:
        """Wait until the write's commit marker is in the log, seen by our own reader.

        A commit returns once the coordinator has decided, before the markers are written;
        until they are, no reader of committed records sees the write. A caller that answers
        at once lets its client publish a click that a dispatcher may read before the
        endpoint (seen on a fresh broker, whose first markers took seconds): the click went
        to the endpoints of the old table. Once the marker is in the log, every follower's
        waiting fetch returns it at once.
        """
        try:
            async with asyncio.timeout(self._settings.publish_timeout_s):
                while await self._reader.position(tp) <= offset:  # noqa: ASYNC110
                    await asyncio.sleep(READ_POLL_S)
        except TimeoutError:
            log.warning(
                "fenced_write_not_yet_visible",
                topic=self._topic,
                partition=tp.partition,
                offset=offset,
            )

    def _transactional_producer(self) -> AIOKafkaProducer:
        timeout_ms = int(self._settings.publish_timeout_s * 1000)
        return AIOKafkaProducer(
            bootstrap_servers=self._settings.kafka_bootstrap,
            transactional_id=self.writer_id,
            enable_idempotence=True,
            acks="all",
            transaction_timeout_ms=WRITE_TRANSACTION_TIMEOUT_MS,
            request_timeout_ms=timeout_ms,
            max_request_size=MAX_MESSAGE_BYTES,
            client_id=self._client_id,
        )


def _forget_fencing(producer: AIOKafkaProducer) -> None:
    """Mark the fencing error retrieved wherever aiokafka also left it (its transaction waiter,
    the futures of the batch the fenced send was in), which nobody awaits once the producer is
    dropped:
    asyncio would log "Future exception was never retrieved", an error line for an outcome
    that is expected here. aiokafka has no public way to do this."""
    accumulator = producer._message_accumulator
    batches = [*accumulator._pending_batches]
    batches += [batch for queued in accumulator._batches.values() for batch in queued]
    futures = [producer._txn_manager.wait_for_transaction_end()]
    futures += [future for batch in batches for future in (batch.future, batch._drain_waiter)]
    for future in futures:
        if future.done() and not future.cancelled():
            future.exception()
