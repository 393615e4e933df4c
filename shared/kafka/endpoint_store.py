"""The endpoint registry: the compacted topic, materialised and followed, and its writes.

Reads. Every service reads ``webhook.endpoints`` from the beginning into an ``EndpointTable``
and then follows it (``follow``, a supervised task). An endpoint's ``version`` is the offset of
the record that holds its current state; the API shows it as the ``ETag``.

Writes are compare-and-set, built on Kafka's transactions since Kafka has no compare-and-set.
Every writer of the topic, in every instance of every service, writes under one transactional
id. Opening a producer with that id fences all the others: a writer that opened before can no
longer commit (``ProducerFenced``), and what it had written is aborted, which no reader ever
sees (the consumers read committed records only). After opening, the writer reads the topic to
its end, looks at the endpoint as it now stands (its version against ``If-Match``, or the change
to make to it), writes and commits. A write therefore commits only if no other write committed
between its read and its commit; one that was fenced starts again from the read, a bounded
number of times. This is how Kafka Connect keeps a zombie leader from writing its config topic
(KIP-618).

Why not a base version in each record, checked by every reader: two writers racing on one key
both append, the loser's record comes last, and compaction keeps the last record of a key. A
reader that starts after compaction sees only the loser's record and cannot tell it lost, so
its table would differ from every other reader's for good. With transactions a losing write is
aborted: never visible, dropped by the log cleaner, so the last record of every key is always a
write that won, and a reader that starts after compaction builds the same table as one that
read every record. Records written before this scheme (plain, non-transactional) read as before.

Costs: a write opens a short-lived producer (a few milliseconds against a local broker) and
waits for the others of this instance; a writer that dies inside its transaction holds every
reader back (read_committed stops at an open transaction) until the next writer fences it or
``WRITE_TRANSACTION_TIMEOUT_MS`` passes.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Collection

import msgspec
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import ProducerFenced

from shared.kafka.clients import MAX_MESSAGE_BYTES, create_consumer
from shared.kafka.metadata import partitions_when_ready
from shared.kafka.window import read_to_ends
from shared.model.endpoint_table import EndpointTable
from shared.model.errors import ClickhookError
from shared.model.messages import Endpoint, decode_endpoint, encode_endpoint
from shared.model.topics import Topics
from shared.ops import metrics
from shared.ops.process import close_quietly
from shared.ops.settings import Settings

log = structlog.get_logger(__name__)

FOLLOW_POLL_MS = 1000
# How long the broker may hold the follower's fetch when nothing is new. A write first waits
# for the follower to pass the end of the topic, which after a transaction is its commit
# marker: a control record that only a fetch of its own brings in. This bounds that wait.
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

# A change to an endpoint: the endpoint as it stands in, the endpoint to write out (None:
# nothing to do). Pure: it may run again on a newer version.
Change = Callable[[Endpoint], Endpoint | None]


class _Keep:
    """Leave the endpoint as it stands: nothing to write."""


_KEEP = _Keep()
# What a write does with the endpoint as it stands: write this endpoint, delete it (None), or
# leave it as it is.
_Decision = Endpoint | None | _Keep


class EndpointWriteError(ClickhookError):
    """A write to ``webhook.endpoints`` that was not made."""

    def __init__(self, endpoint_id: str, message: str) -> None:
        super().__init__(message)
        self.endpoint_id = endpoint_id


class VersionMismatch(EndpointWriteError):
    """The endpoint's version is not one the writer expected (``If-Match``): nothing written."""

    def __init__(self, current: Endpoint, expected: Collection[int]) -> None:
        wanted = ", ".join(str(version) for version in sorted(expected))
        super().__init__(
            current.id, f"endpoint {current.id} is at version {current.version}, not {wanted}"
        )
        self.current = current
        self.expected = expected


class EndpointExists(EndpointWriteError):
    """A create for an id that is taken."""

    def __init__(self, endpoint_id: str) -> None:
        super().__init__(endpoint_id, f"endpoint {endpoint_id} exists")


class WriteContended(EndpointWriteError):
    """Other writers committed between every read and write of ``attempts`` tries."""

    def __init__(self, endpoint_id: str, attempts: int) -> None:
        super().__init__(
            endpoint_id, f"endpoint {endpoint_id}: other writes won {attempts} times in a row"
        )
        self.attempts = attempts


class EndpointStore:
    """Reads ``webhook.endpoints`` from the beginning, then follows it; writes go through it."""

    def __init__(self, settings: Settings, rng: random.Random | None = None) -> None:
        self._settings = settings
        self._topic = Topics(settings.topic_prefix).endpoints
        self._consumer: AIOKafkaConsumer = create_consumer(
            settings, group_id=None, fetch_max_wait_ms=FOLLOW_FETCH_WAIT_MS
        )
        self._assignment: list[TopicPartition] = []
        self._end_offsets: dict[TopicPartition, int] = {}
        self._write_lock = asyncio.Lock()
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter, not security
        self.table = EndpointTable()
        self.loaded = asyncio.Event()

    @property
    def writer_id(self) -> str:
        """The transactional id every writer of the topic shares (prefixed like the topic, so
        environments sharing a cluster never fence each other)."""
        return f"{self._topic}.writer"

    async def start(self) -> None:
        """Assign the topic and find where it ends; ``follow`` then reads it."""
        self._assignment = await partitions_when_ready(self._settings, self._topic)
        await self._consumer.start()
        self._consumer.assign(self._assignment)
        await self._consumer.seek_to_beginning(*self._assignment)
        self._end_offsets = await self._consumer.end_offsets(self._assignment)

    async def stop(self) -> None:
        await close_quietly("endpoint consumer", self._consumer.stop())

    async def follow(self) -> None:
        """Read to the end seen at start (then ``loaded`` is set), then follow; never returns."""
        await self._catch_up(self._end_offsets)
        self.loaded.set()
        log.info("endpoints_loaded", endpoints=len(self.table.all()))
        while True:
            batches = await self._consumer.getmany(timeout_ms=FOLLOW_POLL_MS)
            for records in batches.values():
                for record in records:
                    self._apply_record(record.key, record.value, record.offset)
            if batches:
                self._update_gauge()

    # --- writes ------------------------------------------------------------------------------

    async def create(self, endpoint: Endpoint) -> Endpoint:
        """Write a new endpoint; it is in ``table`` (with its version) when this returns."""

        def only_if_new(current: Endpoint | None) -> _Decision:
            if current is not None:
                raise EndpointExists(endpoint.id)
            return endpoint

        created = await self._write(endpoint.id, only_if_new)
        assert created is not None  # for mypy: only_if_new wrote it or raised
        return created

    async def update(
        self,
        endpoint_id: str,
        change: Change,
        *,
        if_match: Collection[int] | None = None,
    ) -> Endpoint | None:
        """Apply ``change`` to the endpoint's latest version and write the result.

        ``change`` gets the endpoint as it stands after every write committed so far, and
        returns it changed, or None when there is nothing to do; it runs again on the newer
        version if another write wins the race, so it must be a pure function of its argument:
        a change never reverts a newer write it did not see. ``if_match``: write only if the
        endpoint's version is one of these, else raise ``VersionMismatch``.

        Returns the endpoint as it now stands (written or not, with its version); None if
        there is no such endpoint. Visible in ``table`` when this returns (read-your-writes).
        """

        def changed(current: Endpoint | None) -> _Decision:
            if current is None:
                return _KEEP
            _check_version(current, if_match)
            result = change(current)
            return _KEEP if result is None else result

        return await self._write(endpoint_id, changed)

    async def delete(self, endpoint_id: str, *, if_match: Collection[int] | None = None) -> bool:
        """Delete the endpoint (a tombstone); False if there was none. ``if_match`` as for
        ``update``."""
        existed = False

        def tombstone(current: Endpoint | None) -> _Decision:
            nonlocal existed
            existed = current is not None
            if current is None:
                return _KEEP
            _check_version(current, if_match)
            return None

        await self._write(endpoint_id, tombstone)
        return existed

    async def put(self, endpoint: Endpoint) -> None:
        """Replace the whole endpoint (never re-creating a deleted one).

        Deprecated: a whole record computed from an earlier read reverts whatever was written
        since (a secret rotated meanwhile comes back). Use ``update`` with a change.
        """
        await self.update(endpoint.id, lambda _current: endpoint)

    async def _write(
        self, endpoint_id: str, decide: Callable[[Endpoint | None], _Decision]
    ) -> Endpoint | None:
        """Read to the end, ask ``decide`` what to write, write it; again if fenced."""
        async with self._write_lock:  # one transactional producer of ours at a time
            for attempt in range(1, MAX_WRITE_ATTEMPTS + 1):
                producer = self._transactional_producer()
                try:
                    # Opening the producer fences every other writer: from here on, no write
                    # commits unless it is ours or it fenced us (and then ours does not).
                    await producer.start()
                    await self.read_to_end()
                    decision = decide(self.table.get(endpoint_id))
                    if isinstance(decision, _Keep):
                        return self.table.get(endpoint_id)
                    value = None if decision is None else encode_endpoint(decision)
                    async with producer.transaction():
                        meta = await producer.send_and_wait(
                            self._topic, key=endpoint_id.encode(), value=value
                        )
                except ProducerFenced:
                    _forget_fencing(producer)
                    log.info("endpoint_write_fenced", endpoint_id=endpoint_id, attempt=attempt)
                    await asyncio.sleep(self._rng.uniform(0, FENCED_BACKOFF_S * attempt))
                    continue
                finally:
                    await close_quietly("endpoint writer", producer.stop())
                # Read-your-writes: the write is in the table before the caller answers.
                self.table.apply(endpoint_id, decision, meta.offset)
                self._update_gauge()
                await self._wait_for_commit_marker(
                    TopicPartition(meta.topic, meta.partition), meta.offset
                )
                return self.table.get(endpoint_id)
        raise WriteContended(endpoint_id, MAX_WRITE_ATTEMPTS)

    async def _wait_for_commit_marker(self, tp: TopicPartition, offset: int) -> None:
        """Wait until the write's commit marker is in the log, seen by our own follower.

        A commit returns once the coordinator has decided, before the markers are written;
        until they are, no reader of committed records sees the write. A caller that answers
        at once lets its client publish a click that a dispatcher may read before the
        endpoint (seen on a fresh broker, whose first markers took seconds): the click went
        to the endpoints of the old table. Once the marker is in the log, every follower's
        waiting fetch returns it at once.
        """
        try:
            async with asyncio.timeout(self._settings.publish_timeout_s):
                while await self._consumer.position(tp) <= offset:  # noqa: ASYNC110
                    await asyncio.sleep(READ_POLL_S)
        except TimeoutError:
            log.warning("endpoint_write_not_yet_visible", partition=tp.partition, offset=offset)

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
            client_id="clickhook-endpoints",
        )

    async def read_to_end(self) -> None:
        """Wait until ``table`` holds every record committed so far (bounded by the publish
        timeout): what a write sees before it decides, and what a read does that must not
        miss a write another instance made a moment ago."""
        ends = await self._consumer.end_offsets(self._assignment)
        async with asyncio.timeout(self._settings.publish_timeout_s):
            for tp, end in ends.items():
                # Polled: the position also moves past transaction markers, which wake no
                # one (the follower's getmany returns only for records).
                while await self._consumer.position(tp) < end:  # noqa: ASYNC110
                    await asyncio.sleep(READ_POLL_S)

    # --- reads -------------------------------------------------------------------------------

    async def _catch_up(self, end_offsets: dict[TopicPartition, int]) -> None:
        async for record in read_to_ends(self._consumer, end_offsets):
            self._apply_record(record.key, record.value, record.offset)
        self._update_gauge()

    def _apply_record(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        if key is None:
            log.warning("endpoint_record_without_key", offset=offset)
            return
        endpoint_id = key.decode(errors="replace")
        if value is None:
            self.table.apply(endpoint_id, None, offset)
            return
        try:
            endpoint = decode_endpoint(value)
        except msgspec.DecodeError as exc:
            log.error(  # noqa: TRY400 - the decode error is the whole story
                "endpoint_record_unreadable", endpoint_id=endpoint_id, error=str(exc)
            )
            return
        self.table.apply(endpoint_id, endpoint, offset)

    def _update_gauge(self) -> None:
        enabled, disabled = self.table.counts()
        metrics.ENDPOINTS.labels(state="enabled").set(enabled)
        metrics.ENDPOINTS.labels(state="disabled").set(disabled)


def _check_version(current: Endpoint, if_match: Collection[int] | None) -> None:
    if if_match is not None and current.version not in if_match:
        raise VersionMismatch(current, if_match)


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
