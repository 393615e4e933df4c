"""The delivery log's writer: every attempt and deferral to ``webhook.attempts``, never in the
way of a delivery.

The log is an audit trail, not part of the delivery guarantee: a delivery hands its record
over (``record``: no await, no exception) and goes on. The records are written with a producer
of its own that batches widely. When the broker is slow or away, a partition's batches wait
and then fail; past ``max_bytes`` of a partition's records held (in batches not yet
acknowledged), new ones for it are dropped and counted (``clickhook_attempt_log_dropped_total``),
and past ``max_total_bytes`` held over all partitions, any new one: memory stays bounded
however many partitions the topic has. What was delivered is delivered either way: the log
never causes a re-delivery.

The batches are filled here rather than by aiokafka's ``send``, which awaits a coroutine and
makes a future per record and, once a partition's batch is full, waits until the sender takes
it: a writer doing one ``send`` after the other stopped for every partition at the first full
one, while records piled up behind it. Draining a 20,000-click backlog, the log then dropped
11-25 % of its records with the broker healthy (``python -m tests.bench --only deliveries``).
Here a record goes straight into its partition's open batch, without an await; only handing
the partition's next batch over, behind one the sender has not taken yet, waits, and only for
that partition. The same drains then dropped none of their records, at fan-out 1, 10 and 100,
and the writer with its producer took 2.2 % of the dispatcher's busy samples against 4.0 %
(docs/performance-history.md, "The writer, batch by batch").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from functools import partial

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder
from prometheus_client import Counter

from shared.kafka.clients import partition_for_key
from shared.model.messages import AttemptRecord, encode
from shared.ops import metrics

log = structlog.get_logger(__name__)

# A partition's records held at most, in batches not yet acknowledged: 8 of the audit producer's
# 1 MB batches. During a backlog drain on 2 loaded cores the broker acknowledged a batch in
# 0.4-0.7 s (0.04 s otherwise) while one endpoint's records came at up to 5,000 a second (the
# dispatcher's peak RSS in the drain: 86-133 MB, as before).
MAX_BYTES = 8 * 1024 * 1024
# All partitions' records held at most: the topic's 6 partitions by default, but the prod
# overlay has 12 and a deployment may have more, and the bound must not grow with them.
MAX_TOTAL_BYTES = 48 * 1024 * 1024
CLOSE_FLUSH_S = 5.0
# Between asking for the topic's partitions while the broker is away.
PARTITIONS_RETRY_S = 1.0

Failed = BaseException | None


class _Batch:
    """A batch of one partition's records and the bytes they hold until it is answered."""

    __slots__ = ("builder", "held")

    def __init__(self, builder: BatchBuilder) -> None:
        self.builder = builder
        self.held = 0

    def add(self, key: bytes, value: bytes) -> bool:
        """False once the batch is full or the producer has taken it to send."""
        if self.builder.append(timestamp=None, key=key, value=value) is None:
            return False
        self.held += len(key) + len(value)
        return True


class _Partition:
    """One partition's records, in order: appended to the batch the producer holds open for
    the partition until it is full or taken, then to the next, handed over behind it."""

    def __init__(self, writer: AttemptLog, partition: int) -> None:
        self.held = 0
        self._writer = writer
        self._partition = partition
        self._filling: _Batch | None = None
        self._unsent: deque[_Batch] = deque()
        self._has_unsent = asyncio.Event()

    def add(self, key: bytes, value: bytes) -> None:
        if self._filling is None or not self._filling.add(key, value):
            self._filling = self._writer.new_batch()
            self._filling.add(key, value)  # an empty batch takes any one record
            self._unsent.append(self._filling)
            self._has_unsent.set()
        self.held += len(key) + len(value)

    async def run(self) -> None:
        while True:
            await self._has_unsent.wait()
            self._has_unsent.clear()
            await self.send_unsent()

    async def send_unsent(self) -> None:
        while self._unsent:
            # Waits while the producer holds an earlier batch of this partition it has not
            # taken yet; records go on filling the next one meanwhile.
            await self._writer.hand_over(self, self._unsent[0], self._partition)
            self._unsent.popleft()


class AttemptLog:
    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        *,
        service: str,
        max_bytes: int = MAX_BYTES,
        max_total_bytes: int = MAX_TOTAL_BYTES,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._max_bytes = max_bytes
        self._max_total_bytes = max_total_bytes
        self._held = 0  # every partition's, and the early records'
        self._partitions: dict[int, _Partition] = {}
        self._ids: list[int] = []
        # Records given before the topic's partitions are known, held within one partition's
        # bound.
        self._early: deque[tuple[bytes, bytes]] = deque()
        self._failing = False  # logged once per run of failures, not once per record
        self._dropped_full = self._dropped(service, "full")
        self._dropped_failed = self._dropped(service, "send_failed")
        # A record that did not reach the broker is a failed produce too: it counts towards
        # the ClickhookProduceErrors alert, which reads every topic's produce errors.
        self._produce_errors = metrics.PRODUCE_ERRORS.labels(topic=topic)

    @staticmethod
    def _dropped(service: str, reason: metrics.AttemptLogDropReason) -> Counter:
        return metrics.ATTEMPT_LOG_DROPPED.labels(service=service, reason=reason)

    def record(self, record: AttemptRecord) -> None:
        """Hand a record over; it is written later, or dropped and counted."""
        key = record.endpoint_id.encode()
        value = encode(record)
        size = len(key) + len(value)
        if self._held + size > self._max_total_bytes:
            self._dropped_full.inc()
            return
        if not self._ids:
            self._hold_early(key, value, size)
            return
        partition = self._partition_of(key)
        if partition.held + size > self._max_bytes:
            self._dropped_full.inc()
            return
        partition.add(key, value)
        self._held += size

    @property
    def held_bytes(self) -> int:
        """Bytes of records handed over and not yet written or dropped."""
        return self._held

    async def run(self) -> None:
        """Write records as they come, until cancelled."""
        await self._learn_partitions()
        async with asyncio.TaskGroup() as partitions:
            for partition in self._partitions.values():
                partitions.create_task(partition.run())

    async def flush(self, timeout_s: float = CLOSE_FLUSH_S) -> None:
        """Write what waits, for at most ``timeout_s`` (at shutdown, the writer cancelled)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._learn_partitions()
                for partition in self._partitions.values():
                    await partition.send_unsent()
                await self._producer.flush()

    def new_batch(self) -> _Batch:
        return _Batch(self._producer.create_batch())

    async def hand_over(self, partition: _Partition, batch: _Batch, number: int) -> None:
        """Give a batch to the producer; what becomes of it is counted once it is answered."""
        try:
            sent = await self._producer.send_batch(batch.builder, self._topic, partition=number)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - an audit record never fails anything else
            batch.builder.close()  # later records go to a batch of their own
            self._failed(partition, batch, exc)
            return
        sent.add_done_callback(partial(self._answered, partition, batch))

    def _hold_early(self, key: bytes, value: bytes, size: int) -> None:
        # Until the partitions are known, every record held is an early one.
        if self._held + size > self._max_bytes:
            self._dropped_full.inc()
            return
        self._early.append((key, value))
        self._held += size

    async def _learn_partitions(self) -> None:
        while not self._ids:
            try:
                ids = sorted(await self._producer.partitions_for(self._topic))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - records wait meanwhile, bounded
                self._note_failing(exc)
                await asyncio.sleep(PARTITIONS_RETRY_S)
                continue
            # In aiokafka's order, from which the producer's partitioner (ours) picks.
            self._partitions = {number: _Partition(self, number) for number in ids}
            self._ids = ids
            self._place_early()

    def _place_early(self) -> None:
        """Into their partitions: within one partition's bound, they fit any of them."""
        for key, value in self._early:
            self._partition_of(key).add(key, value)
        self._early.clear()

    def _partition_of(self, key: bytes) -> _Partition:
        return self._partitions[partition_for_key(key, self._ids, self._ids)]

    def _answered(self, partition: _Partition, batch: _Batch, sent: asyncio.Future[object]) -> None:
        if sent.cancelled() or sent.exception() is not None:
            self._failed(partition, batch, None if sent.cancelled() else sent.exception())
            return
        self._release(partition, batch)
        if self._failing:
            self._failing = False
            log.info("attempt_log_recovered")

    def _release(self, partition: _Partition, batch: _Batch) -> None:
        partition.held -= batch.held
        self._held -= batch.held

    def _failed(self, partition: _Partition, batch: _Batch, exc: Failed) -> None:
        self._release(partition, batch)
        records = batch.builder.record_count()
        self._dropped_failed.inc(records)
        self._produce_errors.inc(records)
        self._note_failing(exc)

    def _note_failing(self, exc: Failed) -> None:
        if not self._failing:
            self._failing = True
            log.warning("attempt_log_failing", error=repr(exc), held_bytes=self.held_bytes)
