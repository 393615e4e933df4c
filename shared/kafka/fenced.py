"""Compare-and-set writes to a compacted topic, built on Kafka's transactions (Kafka has no
compare-and-set), committed in groups.

Every writer of the topic, in every instance of every service and the CLI, writes under one
transactional id. Opening a producer with that id fences all the others: a writer that opened
before can no longer commit (``ProducerFenced``), and what it had written is aborted, which no
reader ever sees (the consumers read committed records only). After opening, the writer reads
the topic to its end; from then on it decides from what it holds (what it read, and its own
commits since), writes and commits. A write therefore commits only if no other writer opened,
and so none committed, between the read and the commit; one that was fenced opens again, reads
again and decides again, a bounded number of times. This is how Kafka Connect keeps a zombie
leader from writing its config topic (KIP-618).

Why not a base version in each record, checked by every reader: two writers racing on one key
both append, the loser's record comes last, and compaction keeps the last record of a key. A
reader that starts after compaction sees only the loser's record and cannot tell it lost. With
transactions a losing write is aborted: never visible, dropped by the log cleaner.

Group commit. The writes of this instance that wait while a transaction is being committed go
together into the next one (at most ``MAX_BATCH_WRITES``, one per key: a second write of a key
waits for the first's version). Each keeps its own decision: one whose check fails gets its own
error at once, and the others commit. The producer stays open across transactions, so a write
costs one send and one commit, shared by the batch: reopening, and the read to the end that
must follow (about 100 ms, the follower's fetch wait, to pass the last commit marker), only
when another instance or the CLI fenced it meanwhile.

A writer that dies inside its transaction holds every reader back (read_committed stops at an
open transaction) until the next writer fences it or ``WRITE_TRANSACTION_TIMEOUT_MS`` passes.

Used by the endpoint registry (``webhook.endpoints``) and by replay jobs claiming their
endpoint (``webhook.replays``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced, UnknownError
from aiokafka.structs import RecordMetadata

from shared.kafka.clients import MAX_MESSAGE_BYTES, compression_type
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
# A write's transaction is open for one batch of sends and one commit; a writer that dies with
# one open holds the topic's readers back at most this long.
WRITE_TRANSACTION_TIMEOUT_MS = 15_000
# The most writes one transaction commits: about 1 MB of endpoints, well under a request's
# limit, and a batch that fails takes no more than this many answers with it.
MAX_BATCH_WRITES = 500
# aiokafka waits this long before asking again when the coordinator is still finishing the
# previous transaction (CONCURRENT_TRANSACTIONS, or a coordinator moving): the next batch is
# waiting on it, so ask again soon rather than after the default 100 ms.
TRANSACTION_RETRY_BACKOFF_MS = 5


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


@dataclass(eq=False)
class _Write:
    """One caller's write, waiting for a batch."""

    key: str
    decide: Callable[[], Decision]
    on_commit: Callable[[int], None]
    answer: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def settle(self, result: bool | BaseException) -> None:
        """Answer the caller once (one that gave up waiting has its answer already)."""
        if self.answer.done():
            return
        if isinstance(result, BaseException):
            self.answer.set_exception(result)
        else:
            self.answer.set_result(result)


@dataclass(frozen=True, slots=True)
class _Decided:
    write: _Write
    value: bytes | None


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
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter, not security
        self._waiting: list[_Write] = []
        self._committer: asyncio.Task[None] | None = None
        # Open and unfenced as far as we know; None until the next batch opens one.
        self._producer: AIOKafkaProducer | None = None

    @property
    def writer_id(self) -> str:
        """The transactional id every writer of the topic shares (prefixed like the topic, so
        environments sharing a cluster never fence each other)."""
        return f"{self._topic}.writer"

    async def write(
        self, key: str, decide: Callable[[], Decision], on_commit: Callable[[int], None]
    ) -> bool:
        """Ask ``decide`` what to write under ``key`` once everything committed so far is
        read, write it with the other writes waiting now, in one transaction; again if fenced.
        ``decide`` looks at what the reader has applied, may run more than once, and may raise
        to refuse. ``on_commit`` gets the committed record's offset (apply it there:
        read-your-writes). False when ``decide`` kept things as they are."""
        write = _Write(key, decide, on_commit)
        self._waiting.append(write)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_waiting(), name="fenced-writer")
        return await write.answer

    async def close(self) -> None:
        """Stop committing and close the producer; writes still waiting are cancelled."""
        if self._committer is not None:
            self._committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._committer
        for write in self._waiting:
            write.answer.cancel()
        self._waiting.clear()
        await self._drop_producer()

    async def read_to_end(self) -> None:
        """Wait until the reader has applied every record committed so far (bounded by the
        publish timeout): what a writer does once it opened, and what a read does that must
        not miss a write another instance made a moment ago."""
        ends = await self._reader.end_offsets(list(self._reader.assignment()))
        async with asyncio.timeout(self._settings.publish_timeout_s):
            for tp, end in ends.items():
                # Polled: the position also moves past transaction markers, which wake no
                # one (the follower's getmany returns only for records).
                while await self._reader.position(tp) < end:  # noqa: ASYNC110
                    await asyncio.sleep(READ_POLL_S)

    # --- batches -----------------------------------------------------------------------------

    async def _commit_waiting(self) -> None:
        """Commit batches of the waiting writes until none waits."""
        while self._waiting:
            batch = self._take_batch()
            try:
                await self._commit_batch(batch)
            except Exception as exc:  # noqa: BLE001 - each caller gets it and raises it
                # The producer may be left in a state only a new one leaves (an abortable
                # error, a timeout mid-commit): the next batch opens another.
                await self._drop_producer()
                for write in batch:
                    write.settle(exc)

    def _take_batch(self) -> list[_Write]:
        """The oldest waiting writes, one per key, at most ``MAX_BATCH_WRITES``."""
        batch: list[_Write] = []
        keys: set[str] = set()
        left: list[_Write] = []
        for write in self._waiting:
            if write.key in keys or len(batch) >= MAX_BATCH_WRITES:
                left.append(write)
            else:
                keys.add(write.key)
                batch.append(write)
        self._waiting = left
        return batch

    async def _commit_batch(self, batch: list[_Write]) -> None:
        for attempt in range(1, MAX_WRITE_ATTEMPTS + 1):
            try:
                producer = await self._open_producer()
                decided = _decide(batch)
                if not decided:
                    return
                metas = await _send_in_transaction(producer, self._topic, decided)
            except KafkaError as exc:
                if not _fenced(exc):
                    raise
                await self._drop_producer(fenced=True)
                log.info(
                    "fenced_write_fenced", topic=self._topic, writes=len(batch), attempt=attempt
                )
                await asyncio.sleep(self._rng.uniform(0, FENCED_BACKOFF_S * attempt))
                continue
            for one, meta in zip(decided, metas, strict=True):
                one.write.on_commit(meta.offset)
            await self._wait_for_commit_markers(metas)
            for one in decided:
                one.write.settle(True)
            return
        for write in batch:
            write.settle(WriteContended(write.key, MAX_WRITE_ATTEMPTS))

    async def _open_producer(self) -> AIOKafkaProducer:
        """The open producer, or a new one: opening it fences every other writer, and from
        then on no write commits unless it is ours or it fenced us (and then ours does not).
        What was committed before is read first."""
        if self._producer is None:
            producer = self._transactional_producer()
            try:
                await producer.start()
            except BaseException:
                await close_quietly("fenced writer", producer.stop())
                raise
            self._producer = producer
            await self.read_to_end()
        return self._producer

    async def _drop_producer(self, *, fenced: bool = False) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        if fenced:
            _forget_fencing(producer)
        await close_quietly("fenced writer", producer.stop())

    async def _wait_for_commit_markers(self, metas: list[RecordMetadata]) -> None:
        """Wait until the batch's commit markers are in the log, seen by our own reader.

        A commit returns once the coordinator has decided, before the markers are written;
        until they are, no reader of committed records sees the write. A caller that answers
        at once lets its client publish a click that a dispatcher may read before the
        endpoint (seen on a fresh broker, whose first markers took seconds): the click went
        to the endpoints of the old table. Once the marker is in the log, every follower's
        waiting fetch returns it at once.
        """
        last: dict[TopicPartition, int] = {}
        for meta in metas:
            tp = TopicPartition(meta.topic, meta.partition)
            last[tp] = max(last.get(tp, -1), meta.offset)
        try:
            async with asyncio.timeout(self._settings.publish_timeout_s):
                for tp, offset in last.items():
                    while await self._reader.position(tp) <= offset:  # noqa: ASYNC110
                        await asyncio.sleep(READ_POLL_S)
        except TimeoutError:
            log.warning("fenced_write_not_yet_visible", topic=self._topic, writes=len(metas))

    def _transactional_producer(self) -> AIOKafkaProducer:
        timeout_ms = int(self._settings.publish_timeout_s * 1000)
        return AIOKafkaProducer(
            bootstrap_servers=self._settings.kafka_bootstrap,
            transactional_id=self.writer_id,
            enable_idempotence=True,
            acks="all",
            transaction_timeout_ms=WRITE_TRANSACTION_TIMEOUT_MS,
            request_timeout_ms=timeout_ms,
            retry_backoff_ms=TRANSACTION_RETRY_BACKOFF_MS,
            max_request_size=MAX_MESSAGE_BYTES,
            compression_type=compression_type(self._settings),
            client_id=self._client_id,
        )


def _decide(batch: list[_Write]) -> list[_Decided]:
    """Each write's decision on what is held now. A write that refuses, or keeps things as
    they are, is answered at once; those to write are returned."""
    decided: list[_Decided] = []
    for write in batch:
        if write.answer.done():  # answered on an earlier attempt, or its caller gave up
            continue
        try:
            decision = write.decide()
        except Exception as exc:  # noqa: BLE001 - a refusal (If-Match, taken id): its caller's
            write.settle(exc)
            continue
        if isinstance(decision, Keep):
            write.settle(False)
        else:
            decided.append(_Decided(write, decision))
    return decided


async def _send_in_transaction(
    producer: AIOKafkaProducer, topic: str, decided: list[_Decided]
) -> list[RecordMetadata]:
    """Every decided record in one transaction, committed; their metadata in order."""
    async with producer.transaction():
        sent = [
            await producer.send(topic, key=one.write.key.encode(), value=one.value)
            for one in decided
        ]
        # Every answer is retrieved, so one that fails never leaves the others' errors
        # unretrieved (asyncio would log them); the first failure is raised.
        answers = await asyncio.gather(*sent, return_exceptions=True)
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        return [answer for answer in answers if isinstance(answer, RecordMetadata)]


def _fenced(exc: KafkaError) -> bool:
    """Whether another writer fenced this one. Besides ``ProducerFenced``: a commit that meets
    the other writer's fencing half-way. The broker (Kafka 4.1) answers that EndTxn with an
    unknown server error ("transition to PREPARE_COMMIT while it already a pending state
    PREPARE_EPOCH_FENCE", seen in the two-replica tests), which kills aiokafka's sender; the
    fencing aborts the transaction, so it is a fencing like any other: open again, read,
    decide again."""
    return isinstance(exc, ProducerFenced) or isinstance(exc.__cause__, UnknownError)


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
