"""The consume loop both workers share: many records in flight, watermark commits.

Records are handled concurrently; per partition only the watermark (lowest offset still in
flight) is committed, so a crash at any instant re-reads, and never skips, unfinished work.
On revoke the in-flight work of the lost partitions is awaited and committed before the
rebalance goes on; on stop, fetching ends and in-flight work drains within a grace period.

A record may have to wait before it starts (a retry tier's envelope before its due time,
``not_before_ms``). Its partition's records are in (nearly) due order, so the worker holds
that head and the records fetched behind it, and pauses the partition until the head is due;
then it starts what is due and fetches on from where it was. (Seeking back to the head and
dropping the rest at every head, as before, made the retry service fetch and parse each record
many times over while a tier drained.)

Held records count against the bound as running ones do: held + running never exceeds
``max_in_flight``, however many partitions wait (the retry service reads 11 or more tiers of
6 to 12 partitions each). What keeps a bound full of held records from starving due work is
that only partitions whose head falls due within ``PARK_AFTER_S`` hold any: a head due later
is not kept at all, only its due time, with the partition paused and positioned at it, and the
partition is fetched again ``PARK_AFTER_S`` before that time (so the head is there when it
falls due). Behind a head that is held, too, only what falls due within ``PARK_AFTER_S`` of
it is kept: the rest is dropped, with the partition positioned at the first of it, and
fetched again once what is held has started. (Keeping all that was fetched behind the head
let one tier's records, due seconds later, fill the bound, and another tier's head, due
sooner, was fetched only once they had started down to the resume share: the bench's 3 s
tier's p99 lateness went from 53 to 255 ms.) Every held record therefore starts, or is
dropped to be fetched again, within about twice ``PARK_AFTER_S``, and the room it took is
given back; a waiting partition costs no memory however long it waits, and any number of
them fit in any bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from shared.kafka.clients import Record, finished_above_commits
from shared.kafka.undecodable import UndecodableBatch, collecting
from shared.model.watermark import PartitionWatermark, encode_finished

log = structlog.get_logger(__name__)

Handler = Callable[[Record], Awaitable[None]]
# Records a batch that could not be decoded (it is skipped either way).
UndecodableHandler = Callable[[UndecodableBatch], Awaitable[None]]
# When a record may start (unix ms); None: at once.
NotBefore = Callable[[Record], int | None]
# Told, once per loop, which partitions wait for their head record.
HeldReport = Callable[[Collection[TopicPartition]], None]

# What a worker finished since its last commit is done again after a kill -9. At 0.5 s the
# retry service's kill in the ledger e2e repeated 433 deliveries made in its last 0.25 s; at
# 0.1 s, 8-180 (six runs). A commit names only partitions whose offset or finished set moved.
COMMIT_INTERVAL_S = 0.1
HANDLER_RETRY_MAX_S = 30.0
IDLE_POLL_MS = 500
DRAIN_TIMEOUT_FINISH_S = 5.0
# Fetching resumes once in-flight work is down to this share of the bound: resuming at the
# first free slot would pause and resume (and re-fetch) after every finished record.
RESUME_AT_SHARE = 0.75
# A head due later than this is not held: only its due time is kept, and its partition is
# fetched again this long before it; behind a held head, records due more than this after it
# are not held either (everything held is thus due, and gives its room back, soon).
PARK_AFTER_S = 1.0
# Held records are started in steps of this much: records falling due a few milliseconds
# apart go out together, one wake-up for several, at most this much after their due time.
# (Waking for each one cost the retry service twice the CPU per redelivery of a backlog.)
HELD_STEP_MS = 50


@dataclass(slots=True)
class _Held:
    """A paused partition waiting for its head: the head first, then what was fetched
    behind it; nothing when the head is due later than ``PARK_AFTER_S`` (parked: the
    partition is positioned at the head, to fetch it again shortly before it is due)."""

    records: deque[Record]
    due_ms: int

    @property
    def wake_ms(self) -> int:
        """When the worker next looks at this partition: the head's due time, or, parked,
        early enough to have fetched the head again by then."""
        if self.records:
            return self.due_ms
        return self.due_ms - int(PARK_AFTER_S * 1000)


def _now_ms() -> int:
    return int(time.time() * 1000)


class PartitionWorker:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        handler: Handler,
        *,
        max_in_flight: int,
        drain_grace_s: float,
        not_before_ms: NotBefore | None = None,
        on_held: HeldReport | None = None,
        on_drain_timeout: Callable[[], None] | None = None,
        on_undecodable: UndecodableHandler | None = None,
    ) -> None:
        # A skipped batch is finished at its last offset at once: with held records below it,
        # that would commit past them.
        assert not (on_undecodable and not_before_ms), "undecodable batches with holds"
        self._consumer = consumer
        self._handler = handler
        self._max_in_flight = max_in_flight
        self._drain_grace_s = drain_grace_s
        self._not_before_ms = not_before_ms
        self._on_held = on_held
        self._on_drain_timeout = on_drain_timeout
        self._on_undecodable = on_undecodable
        self._held: dict[TopicPartition, _Held] = {}
        self._held_records = 0  # the records in ``_held``: they count against the bound
        self._watermarks: dict[TopicPartition, PartitionWatermark] = {}
        self._committed: dict[TopicPartition, OffsetAndMetadata] = {}
        # Offsets the partition's previous owner finished above its commit: not done again.
        self._finished_before: dict[TopicPartition, set[int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._tasks_by_tp: dict[TopicPartition, set[asyncio.Task[None]]] = {}
        self._backpressure = False
        self._room = asyncio.Event()
        self._resume_at = int(max_in_flight * RESUME_AT_SHARE)
        self._stopping = False
        self._committing: asyncio.Task[None] | None = None
        self._commit_lock = asyncio.Lock()
        self.listener = _Listener(self)

    @property
    def occupancy(self) -> int:
        """Records held or running: never above ``max_in_flight``."""
        return self._occupied()

    async def run(self, stop: asyncio.Event) -> None:
        last_commit = time.monotonic()
        while not stop.is_set():
            if self._saturated():
                await self._wait_for_room(self._poll_timeout_ms() / 1000)
            # Also when saturated: held records may be what fills the bound, and starting
            # them as they fall due is what frees it.
            self._release_held()
            self._apply_backpressure()
            if self._on_held is not None:
                self._on_held(self._held.keys())
            # Saturated, poll without waiting: polling keeps the consumer in its group, and
            # the waiting was done in ``_wait_for_room``, which wakes as soon as work finishes.
            timeout_ms = 0 if self._backpressure else self._poll_timeout_ms()
            # Never more records than there is room for: the bound is what caps memory (held
            # records included) and what the per-endpoint queues are sized against. With no
            # room every partition is paused, and the poll only keeps the consumer in its group.
            room = max(1, self._max_in_flight - self._occupied())
            with collecting() as undecodable:
                batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=room)
            for tp, records in batches.items():
                self._take(tp, records)
            for batch in undecodable:
                self._take_undecodable(batch)
            if time.monotonic() - last_commit >= COMMIT_INTERVAL_S and self._commit_done():
                # Beside the loop, not awaited in it: the loop waited out the commit's round
                # trip every interval, and the records fetched meanwhile with it (at 200
                # clicks/s, the slowest percent of deliveries).
                self._committing = asyncio.create_task(self.commit())
                last_commit = time.monotonic()
        if self._committing is not None:
            await self._committing
        await self.drain()

    def _commit_done(self) -> bool:
        """No commit of the loop's under way; one that ended raises here what it raised."""
        if self._committing is None:
            return True
        if not self._committing.done():
            return False
        self._committing.result()
        return True

    async def drain(self) -> None:
        """Let in-flight work finish within the grace period, then commit what is done.

        Work still running when the grace period ends is first asked to finish at once
        (``on_drain_timeout``: the dispatcher defers its deliveries to the first retry tier), so
        that it, too, can be committed; whatever does not finish even then is left uncommitted
        and read again.
        """
        self._stopping = True
        if self._tasks:
            log.info("draining", in_flight=len(self._tasks), grace_s=self._drain_grace_s)
            await asyncio.wait(set(self._tasks), timeout=self._drain_grace_s)
        if self._tasks and self._on_drain_timeout is not None:
            log.info("drain_timed_out", in_flight=len(self._tasks))
            self._on_drain_timeout()
            await asyncio.wait(set(self._tasks), timeout=DRAIN_TIMEOUT_FINISH_S)
        for task in set(self._tasks):
            task.cancel()
        await self.commit()

    async def commit(self, partitions: set[TopicPartition] | None = None) -> None:
        # One at a time (the loop's, a revoke's, the drain's): each reads the watermarks once
        # the one before it has recorded what it committed, so none sends older offsets
        # after newer ones.
        async with self._commit_lock:
            await self._commit(partitions)

    async def _commit(self, partitions: set[TopicPartition] | None) -> None:
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp, watermark in self._watermarks.items():
            if partitions is not None and tp not in partitions:
                continue
            offset = watermark.committable()
            if offset is None:
                continue
            meta = OffsetAndMetadata(offset, encode_finished(offset, watermark.finished_above()))
            if meta != self._committed.get(tp):
                offsets[tp] = meta
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on; the new owner re-reads from the last commit (at-least-once).
            log.warning("commit_rejected", error=str(exc))
            return
        except KafkaError as exc:
            log.warning("commit_failed", error=str(exc))
            return
        self._committed.update(offsets)

    def _take(self, tp: TopicPartition, records: list[Record]) -> None:
        now_ms = _now_ms()
        for index, record in enumerate(records):
            due_ms = self._due_ms(record)
            if due_ms is not None and due_ms > now_ms:
                self._hold(tp, self._due_soon(tp, records, index, due_ms, now_ms), due_ms)
                return
            self._start(tp, record)

    def _due_soon(
        self, tp: TopicPartition, records: list[Record], head: int, head_due_ms: int, now_ms: int
    ) -> deque[Record]:
        """The head and the records behind it up to the first that falls due more than
        ``PARK_AFTER_S`` after it; the partition is positioned at that one, to fetch it and
        what follows again once the ones kept have started. (Measured from the head's due
        time, not from now: a head fetched a second before it is due keeps what falls due
        right behind it, which would otherwise be fetched only once the head had started.)"""
        if head_due_ms - now_ms > PARK_AFTER_S * 1000:
            # Parked: ``_hold`` keeps none of it (all of it, should the head be nearer by then).
            return deque(records[head:])
        horizon_ms = head_due_ms + int(PARK_AFTER_S * 1000)
        for index in range(head + 1, len(records)):
            due_ms = self._due_ms(records[index])
            if due_ms is not None and due_ms > horizon_ms:
                self._consumer.seek(tp, records[index].offset)
                return deque(records[head:index])
        return deque(records[head:])

    def _start(self, tp: TopicPartition, record: Record) -> None:
        self._start_work(tp, record.offset, functools.partial(self._handler, record))

    def _take_undecodable(self, batch: UndecodableBatch) -> None:
        """Recorded as work at the batch's last offset, so that the commit passes the batch
        only once it is recorded (again, after a crash, rather than never)."""
        if self._on_undecodable is not None:
            tp = TopicPartition(batch.topic, batch.partition)
            self._start_work(tp, batch.last_offset, functools.partial(self._on_undecodable, batch))

    def _start_work(
        self, tp: TopicPartition, offset: int, work: Callable[[], Awaitable[None]]
    ) -> None:
        watermark = self._watermarks.setdefault(tp, PartitionWatermark())
        finished_before = self._finished_before.get(tp)
        if finished_before and offset in finished_before:
            finished_before.discard(offset)
            watermark.start(offset)
            watermark.finish(offset)
            return
        watermark.start(offset)
        task = asyncio.create_task(self._handle(tp, watermark, offset, work))
        partition_tasks = self._tasks_by_tp.setdefault(tp, set())
        self._tasks.add(task)
        partition_tasks.add(task)
        task.add_done_callback(functools.partial(self._finished, partition_tasks))

    def _due_ms(self, record: Record) -> int | None:
        return None if self._not_before_ms is None else self._not_before_ms(record)

    def _hold(self, tp: TopicPartition, records: deque[Record], due_ms: int) -> None:
        """Keep the partition's head, and what came behind it, paused until it is due; when
        that is far off, keep nothing but the due time."""
        self._consumer.pause(tp)
        if due_ms - _now_ms() > PARK_AFTER_S * 1000:
            # All of it is fetched again shortly before the head is due.
            self._consumer.seek(tp, records[0].offset)
            records = deque()
        self._set_held(tp, _Held(records, due_ms))

    def _set_held(self, tp: TopicPartition, held: _Held) -> None:
        self._forget_held(tp)
        self._held[tp] = held
        self._held_records += len(held.records)

    def _forget_held(self, tp: TopicPartition) -> deque[Record]:
        held = self._held.pop(tp, None)
        if held is None:
            return deque()
        self._held_records -= len(held.records)
        return held.records

    def _occupied(self) -> int:
        """Records held or running: what the bound caps."""
        return len(self._tasks) + self._held_records

    def _release_held(self) -> None:
        """Start the held records that are due; a partition with nothing left held, or
        parked and soon due, is fetched again, from where it was."""
        if not self._held:
            return
        now_ms = _now_ms()
        for tp, held in list(self._held.items()):
            if held.wake_ms > now_ms:
                continue
            records = self._forget_held(tp)
            while records:
                due_ms = self._due_ms(records[0])
                if due_ms is not None and due_ms > now_ms:
                    self._hold(tp, records, due_ms)
                    break
                if len(self._tasks) >= self._max_in_flight:
                    self._hold(tp, records, now_ms)  # due, but no room: the next turn
                    break
                self._start(tp, records.popleft())
            if tp not in self._held and not self._backpressure:
                self._consumer.resume(tp)

    def _finished(self, partition_tasks: set[asyncio.Task[None]], task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        partition_tasks.discard(task)
        if self._occupied() <= self._resume_at:
            self._room.set()

    async def _wait_for_room(self, timeout_s: float) -> None:
        self._room.clear()
        if self._occupied() <= self._resume_at:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._room.wait()

    async def _handle(
        self,
        tp: TopicPartition,
        watermark: PartitionWatermark,
        offset: int,
        work: Callable[[], Awaitable[None]],
    ) -> None:
        delay_s = 0.5
        while True:
            try:
                await work()
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                # Usually the broker is unreachable for a hand-off: keep the record unfinished
                # (so its offset is not committed) and try again until it succeeds or we stop.
                log.exception(
                    "record_handler_failed",
                    topic=tp.topic,
                    partition=tp.partition,
                    offset=offset,
                )
                if self._stopping:
                    return
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, HANDLER_RETRY_MAX_S)
        watermark.finish(offset)

    def _saturated(self) -> bool:
        """Full at the bound; once full, until work is down to the resume share."""
        if self._backpressure:
            return self._occupied() > self._resume_at
        return self._occupied() >= self._max_in_flight

    def _apply_backpressure(self) -> None:
        saturated = self._saturated()
        if saturated == self._backpressure:
            return
        self._backpressure = saturated
        assignment = self._consumer.assignment()
        if saturated:
            self._consumer.pause(*assignment)
        else:
            self._consumer.resume(*(tp for tp in assignment if tp not in self._held))
        log.debug("backpressure", on=saturated, in_flight=len(self._tasks), held=self._held_records)

    def _poll_timeout_ms(self) -> int:
        if not self._held:
            return IDLE_POLL_MS
        wakeup_ms = min(held.wake_ms for held in self._held.values()) - _now_ms()
        return max(HELD_STEP_MS, min(IDLE_POLL_MS, wakeup_ms))

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        log.info("partitions_revoked", **_described(revoked))
        for tp in revoked:
            # Never started, so never committed: the next owner reads them again. Dropped
            # before the wait below: the loop runs on meanwhile, and a held record it started
            # then would run past the commit and be done again by the next owner.
            self._forget_held(tp)
        lost = {tp for tp in revoked if tp in self._watermarks}
        pending = {task for tp in lost for task in self._tasks_by_tp.get(tp, ())}
        if pending:
            log.info("revoke_waiting", partitions=len(lost), in_flight=len(pending))
            await asyncio.wait(pending, timeout=self._drain_grace_s)
        await self.commit(lost)
        for tp in lost:
            self._watermarks.pop(tp, None)
            self._committed.pop(tp, None)
            self._tasks_by_tp.pop(tp, None)
            self._finished_before.pop(tp, None)

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        # A rebalance is when consuming stops: its start and end say how long that was.
        log.info("partitions_assigned", **_described(assigned))
        # A rebalance clears aiokafka's pauses: re-apply backpressure on the next poll.
        self._backpressure = False
        for tp in assigned:
            self._forget_held(tp)  # read again from the committed offset
        for tp in assigned:
            self._committed.pop(tp, None)
        try:
            self._finished_before = await finished_above_commits(self._consumer, assigned)
        except KafkaError as exc:
            # Without them, those records are simply done again (at-least-once).
            log.warning("finished_offsets_unknown", error=str(exc))
            self._finished_before = {}
            return
        if self._finished_before:
            count = sum(len(offsets) for offsets in self._finished_before.values())
            log.info("skipping_finished_records", partitions=len(assigned), records=count)


def _described(partitions: set[TopicPartition]) -> dict[str, object]:
    """A rebalance's partitions for a log line: how many, of which topics."""
    return {"partitions": len(partitions), "topics": sorted({tp.topic for tp in partitions})}


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: PartitionWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        try:
            await self._worker._on_revoked(set(revoked))
        except Exception:
            # The rebalance must go on regardless; uncommitted work is re-read (at-least-once).
            log.exception("revoke_handling_failed")

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._worker._on_assigned(set(assigned))
