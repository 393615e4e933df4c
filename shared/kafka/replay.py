"""Replay: one endpoint's dead letters back into delivery, as a job recorded in Kafka.

A job streams the endpoint's partition of ``webhook.dlq`` (letters are keyed by endpoint id,
so all of one endpoint's are in one partition) from the first letter that died in its window
to the partition's end as it was when the job started. Each open letter goes to the first
retry tier, due at once, with its webhook-id and its history, marked with the job's id (a fresh
chance: the endpoint's breaker is reset when the first one arrives). A letter an earlier job
covered is skipped, so replaying a window twice does not deliver it twice.

The job's state lives in the compacted ``webhook.replays`` topic (``ReplayJob``), written as
it goes (at least every ``REPLAY_HEARTBEAT_MS``): every instance and the CLI see the same
progress, a job whose process died shows as ``interrupted``, and letters are marked replayed
only once their hand-off was acknowledged. Memory stays flat whatever the size of the topic:
letters are read and sent in batches, never gathered.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import structlog
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from shared.kafka.clients import Record, create_consumer
from shared.kafka.follower import TopicFollower
from shared.kafka.metadata import partitions_when_ready
from shared.kafka.window import read_to_ends
from shared.model.messages import (
    REPLAY_HEARTBEAT_MS,
    DeadLetter,
    ReplayJob,
    ReplayState,
    decode_dead_letter,
    decode_replay,
    encode,
)
from shared.model.topics import HEADER_DUE_AT_MS, Topics
from shared.ops import metrics
from shared.ops.process import close_quietly
from shared.ops.settings import Settings

log = structlog.get_logger(__name__)

SEND_BATCH = 500  # hand-offs sent before their acknowledgements are awaited together
# A webhook-id dead-lettered twice in a window (its click was published twice) is replayed
# once if the two letters lie within this many letters of each other.
DEDUPE_WINDOW = 65_536
YIELD_EVERY = 200  # letters read between two turns given to the rest of the event loop

ProgressCallback = Callable[[ReplayJob], None]


def now_ms() -> int:
    return int(time.time() * 1000)


def dlq_partition(endpoint_id: str, partitions: list[int]) -> int:
    """The partition the producers' default partitioner (murmur2, as Kafka's Java client)
    puts an endpoint's dead letters in."""
    ordered = sorted(partitions)
    chosen: int = DefaultPartitioner()(endpoint_id.encode(), ordered, ordered)
    return chosen


class ReplayJobs:
    """Every replay job, followed from ``webhook.replays``; writes go through it."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        self._topic = Topics(settings.topic_prefix).replays
        self._producer = producer
        self._jobs: dict[str, ReplayJob] = {}
        self._offsets: dict[str, int] = {}
        self._follower = TopicFollower(settings, self._topic, self._apply, name="replay-follower")
        self.loaded = self._follower.loaded
        self._changed = asyncio.Event()

    async def start(self) -> None:
        await self._follower.start()

    async def follow(self) -> None:
        """Keep up with the topic, until cancelled (a supervised task)."""
        await self._follower.follow()

    async def stop(self) -> None:
        await self._follower.stop()

    def get(self, job_id: str) -> ReplayJob | None:
        return self._jobs.get(job_id)

    def of_endpoint(self, endpoint_id: str) -> list[ReplayJob]:
        """The endpoint's jobs, oldest first."""
        jobs = [job for job in self._jobs.values() if job.endpoint_id == endpoint_id]
        return sorted(jobs, key=lambda job: job.started_at_ms)

    async def ended(self, job_id: str, timeout_s: float) -> bool:
        """Wait until the job is no longer running; False if it still is after ``timeout_s``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while (job := self._jobs.get(job_id)) is None or job.state_at(
                    now_ms()
                ) == "running":
                    self._changed.clear()
                    await self._changed.wait()
                return True
        return False

    def running(self, endpoint_id: str) -> ReplayJob | None:
        at_ms = now_ms()
        return next(
            (j for j in self.of_endpoint(endpoint_id) if j.state_at(at_ms) == "running"), None
        )

    async def put(self, job: ReplayJob) -> None:
        """Write a job's state and see it here at once."""
        meta = await self._producer.send_and_wait(
            self._topic, key=job.id.encode(), value=encode(job)
        )
        self._remember(job, meta.offset)

    def _apply(self, record: Record) -> None:
        if record.value is None:
            return
        try:
            job = decode_replay(record.value)
        except msgspec.DecodeError as exc:
            log.error("replay_record_unreadable", offset=record.offset, error=str(exc))  # noqa: TRY400
            return
        self._remember(job, record.offset)

    def _remember(self, job: ReplayJob, offset: int) -> None:
        # A write seen here first (read-your-writes) is not undone by its older records.
        if self._offsets.get(job.id, -1) < offset:
            self._offsets[job.id] = offset
            self._jobs[job.id] = job
            # Wakes every waiter at once; later waiters wait for the next change.
            self._changed.set()
            self._changed = asyncio.Event()


async def new_job(
    settings: Settings,
    endpoint_id: str,
    account_id: str,
    since_ms: int,
    until_ms: int,
    *,
    owner: str,
) -> ReplayJob:
    """A job's first state: the window, and where the endpoint's letters are."""
    dlq = Topics(settings.topic_prefix).dlq
    partitions = [tp.partition for tp in await partitions_when_ready(settings, dlq)]
    partition = dlq_partition(endpoint_id, partitions)
    consumer = create_consumer(settings, group_id=None)
    await consumer.start()
    try:
        tp = TopicPartition(dlq, partition)
        ends = await consumer.end_offsets([tp])
        found = (await consumer.offsets_for_times({tp: since_ms})).get(tp)
    finally:
        await close_quietly("replay consumer", consumer.stop())
    end = ends[tp]
    started_ms = now_ms()
    return ReplayJob(
        id="rpl_" + uuid.uuid4().hex[:24],
        endpoint_id=endpoint_id,
        account_id=account_id,
        since_ms=since_ms,
        until_ms=until_ms,
        dlq_partition=partition,
        end_offset=end,
        position=found.offset if found is not None else end,
        state="running",
        started_at_ms=started_ms,
        updated_at_ms=started_ms,
        owner=owner,
    )


@dataclass(slots=True)
class _Batch:
    sends: list[asyncio.Future[object]]
    last_offset: int | None = None


class ReplayRun:
    """Runs one job to an end state, writing its progress to ``webhook.replays``."""

    def __init__(
        self,
        settings: Settings,
        producer: AIOKafkaProducer,
        jobs: ReplayJobs,
        job: ReplayJob,
        *,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self._settings = settings
        self._producer = producer
        self._jobs = jobs
        self.job = job
        self._on_progress = on_progress
        topics = Topics(settings.topic_prefix)
        self._dlq = TopicPartition(topics.dlq, job.dlq_partition)
        self._first_tier = topics.retry(settings.retry_schedule_s[0])
        # Jobs of this endpoint that came before: the letters they covered are not sent again.
        self._earlier = [j for j in jobs.of_endpoint(job.endpoint_id) if j.id != job.id]
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._batch = _Batch([])
        self._written_at_ms = 0

    async def run(self) -> ReplayJob:
        """Run to an end state; a cancellation is recorded, then passed on."""
        try:
            await self._progress(force=True)
            stopped = await self._scan()
            await self._flush()
        except asyncio.CancelledError:
            await asyncio.shield(self._finish("cancelled"))
            raise
        except Exception as exc:
            log.exception("replay_failed", endpoint_id=self.job.endpoint_id, job_id=self.job.id)
            await self._finish("failed", f"{type(exc).__name__}: {exc}")
        else:
            await self._finish("cancelled" if stopped else "completed")
        return self.job

    async def _scan(self) -> bool:
        """Read the window's letters and send the open ones; True when asked to cancel."""
        job = self.job
        if job.position >= job.end_offset:
            return False
        consumer = create_consumer(self._settings, group_id=None)
        await consumer.start()
        try:
            consumer.assign([self._dlq])
            consumer.seek(self._dlq, job.position)
            read = 0
            async for record in read_to_ends(consumer, {self._dlq: job.end_offset}):
                if record.offset >= job.end_offset:
                    break
                await self._take(record)
                read += 1
                if read % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # an API's requests may share this event loop
                if await self._progress():
                    return True
        finally:
            await close_quietly("replay consumer", consumer.stop())
        return False

    async def _take(self, record: Record) -> None:
        letter = self._letter(record)
        if letter is not None:
            await self._replay(letter, record.offset)
        self._batch.last_offset = record.offset
        if len(self._batch.sends) >= SEND_BATCH:
            await self._flush()

    def _letter(self, record: Record) -> DeadLetter | None:
        """The record's dead letter if it is this job's: its endpoint's, died in the window."""
        if record.value is None:
            return None
        try:
            letter = decode_dead_letter(record.value)
        except msgspec.DecodeError:
            return None  # a raw, unreadable record kept for an operator: nothing to replay
        job = self.job
        if letter.envelope.endpoint_id != job.endpoint_id:
            return None
        if not job.since_ms <= letter.dead_at_ms < job.until_ms:
            return None
        return letter

    async def _replay(self, letter: DeadLetter, offset: int) -> None:
        job = self.job
        webhook_id = letter.envelope.webhook_id
        if webhook_id in self._recent or any(
            j.covers(offset, letter.dead_at_ms) for j in self._earlier
        ):
            self.job = msgspec.structs.replace(
                job, matched=job.matched + 1, already_replayed=job.already_replayed + 1
            )
            return
        self._recent[webhook_id] = None
        if len(self._recent) > DEDUPE_WINDOW:
            self._recent.popitem(last=False)
        due_ms = now_ms()
        queued = msgspec.structs.replace(
            letter.envelope,
            tier=-1,
            due_at_ms=due_ms,
            deferrals=0,
            replay_id=job.id,
            busy_since_ms=None,  # a replay is a fresh start: its waits count from now
        )
        self._batch.sends.append(
            await self._producer.send(
                self._first_tier,
                key=queued.endpoint_id.encode(),
                value=encode(queued),
                headers=[(HEADER_DUE_AT_MS, str(due_ms).encode())],
            )
        )
        self.job = msgspec.structs.replace(job, matched=job.matched + 1)

    async def _flush(self) -> None:
        """Await the batch's acknowledgements; only then do its letters count as replayed."""
        batch, self._batch = self._batch, _Batch([])
        await asyncio.gather(*batch.sends)
        job = self.job
        position = job.position if batch.last_offset is None else batch.last_offset + 1
        self.job = msgspec.structs.replace(
            job, position=position, replayed=job.replayed + len(batch.sends)
        )
        metrics.REPLAYED.inc(len(batch.sends))

    async def _progress(self, *, force: bool = False) -> bool:
        """Write the job's state when a heartbeat is due; True when a cancel was asked for."""
        at_ms = now_ms()
        if not force and at_ms - self._written_at_ms < REPLAY_HEARTBEAT_MS:
            return False
        latest = self._jobs.get(self.job.id)
        if latest is not None and latest.cancel_requested:
            return True
        self.job = msgspec.structs.replace(self.job, updated_at_ms=at_ms)
        await self._jobs.put(self.job)
        self._written_at_ms = at_ms
        if self._on_progress is not None:
            self._on_progress(self.job)
        return False

    async def _finish(self, state: ReplayState, error: str | None = None) -> None:
        at_ms = now_ms()
        self.job = msgspec.structs.replace(
            self.job,
            state=state,
            error=error,
            updated_at_ms=at_ms,
            finished_at_ms=at_ms,
            position=self.job.end_offset if state == "completed" else self.job.position,
        )
        await self._jobs.put(self.job)
        if self._on_progress is not None:
            self._on_progress(self.job)
        log.info(
            "replay_finished",
            endpoint_id=self.job.endpoint_id,
            job_id=self.job.id,
            state=state,
            matched=self.job.matched,
            replayed=self.job.replayed,
            already_replayed=self.job.already_replayed,
        )


async def run_replay(
    settings: Settings,
    producer: AIOKafkaProducer,
    endpoint_id: str,
    account_id: str,
    *,
    since_ms: int,
    until_ms: int,
    on_progress: ProgressCallback | None = None,
    owner: str = "cli",
) -> ReplayJob:
    """Run a whole replay job in this process (the CLI), recorded like any other."""
    jobs = ReplayJobs(settings, producer)
    await jobs.start()
    following = asyncio.create_task(jobs.follow(), name="replay-follower")
    try:
        await jobs.loaded.wait()
        job = await new_job(settings, endpoint_id, account_id, since_ms, until_ms, owner=owner)
        return await ReplayRun(settings, producer, jobs, job, on_progress=on_progress).run()
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
        await jobs.stop()
