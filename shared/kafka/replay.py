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

One job per endpoint at a time, whoever starts it: a job claims its endpoint by a fenced
compare-and-set (``ReplayJobs.claim``), so two starts racing on two instances, or the API and
the CLI, give one job and one ``ReplayRunning``. A cancel is a record of its own
(``cancel:<job id>``), and readers merge records so that a finished job never reverts to
running (``shared.model.replays``). A job is forgotten (tombstoned) once retention has
deleted every letter it covered; the next start of its endpoint sweeps it.
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
from shared.kafka.fenced import FOLLOW_FETCH_WAIT_MS, Decision, FencedWriter
from shared.kafka.follower import TopicFollower
from shared.kafka.metadata import partitions_when_ready
from shared.kafka.window import read_to_ends
from shared.model.errors import ClickhookError
from shared.model.messages import (
    REPLAY_HEARTBEAT_MS,
    DeadLetter,
    DeadLetterHead,
    ReplayCancel,
    ReplayJob,
    ReplayState,
    decode_dead_letter,
    decode_dead_letter_head,
    encode,
)
from shared.model.replays import ReplayBook, cancel_key
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
# How long a cancelled run tries to record its end. aiokafka's send can wait forever (a
# producer stopped under it while it waited for metadata never answers), and a shutdown waits
# for its runs' ends: unwritten, the job shows as interrupted once its heartbeat is stale.
END_WRITE_TIMEOUT_S = 3.0

ProgressCallback = Callable[[ReplayJob], None]


def now_ms() -> int:
    return int(time.time() * 1000)


def dlq_partition(endpoint_id: str, partitions: list[int]) -> int:
    """The partition the producers' default partitioner (murmur2, as Kafka's Java client)
    puts an endpoint's dead letters in."""
    ordered = sorted(partitions)
    chosen: int = DefaultPartitioner()(endpoint_id.encode(), ordered, ordered)
    return chosen


class ReplayRunning(ClickhookError):
    """A job was asked to start while another of the same endpoint runs."""

    def __init__(self, running: ReplayJob) -> None:
        super().__init__(f"replay {running.id} of {running.endpoint_id} is still running")
        self.running = running


class ReplayJobs:
    """Every replay job, followed from ``webhook.replays`` (``ReplayBook``); writes go
    through it.

    A job starts by claiming its endpoint (``claim``): a compare-and-set through the topic's
    ``FencedWriter``, which writes the job only if no other job of the endpoint is running
    once every committed record has been read, so of two starts racing from two instances
    (or the CLI) exactly one commits. Heartbeats (``put``) are plain writes of the owner; a
    cancel (``request_cancel``) is a record of its own that no heartbeat overwrites."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        self._topic = Topics(settings.topic_prefix).replays
        self._producer = producer
        self._book = ReplayBook()
        self._follower = TopicFollower(
            settings,
            self._topic,
            self._apply,
            name="replay-follower",
            fetch_max_wait_ms=FOLLOW_FETCH_WAIT_MS,
        )
        self._writer = FencedWriter(
            settings, self._topic, self._follower.consumer, client_id="clickhook-replays"
        )
        self.loaded = self._follower.loaded
        self._changed = asyncio.Event()

    async def start(self) -> None:
        await self._follower.start()

    async def follow(self) -> None:
        """Keep up with the topic, until cancelled (a supervised task)."""
        await self._follower.follow()

    async def stop(self) -> None:
        await self._writer.close()
        await self._follower.stop()

    async def read_to_end(self) -> None:
        """Wait until every record committed so far is in the view."""
        await self._writer.read_to_end()

    def get(self, job_id: str) -> ReplayJob | None:
        return self._book.get(job_id)

    def of_endpoint(self, endpoint_id: str) -> list[ReplayJob]:
        """The endpoint's jobs, oldest first."""
        return self._book.of_endpoint(endpoint_id)

    def running(self, endpoint_id: str) -> ReplayJob | None:
        return self._book.running(endpoint_id, now_ms())

    async def ended(self, job_id: str, timeout_s: float) -> bool:
        """Wait until the job is no longer running; False if it still is after ``timeout_s``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while (job := self.get(job_id)) is None or job.state_at(now_ms()) == "running":
                    self._changed.clear()
                    await self._changed.wait()
                return True
        return False

    async def end_offset(self) -> int:
        """Where the topic (one partition) ends now: a claim's ``asked_at``."""
        ends = await self._follower.consumer.end_offsets(list(self._follower.consumer.assignment()))
        return max(ends.values(), default=0)

    async def claim(self, job: ReplayJob, *, asked_at: int) -> None:
        """Write a new job unless another job of its endpoint runs, or ran since the topic
        ended at ``asked_at`` (``ReplayRunning``): a start racing one that was quick to end
        is refused too. Seen here at once."""
        value = encode(job)

        def unless_running() -> Decision:
            rival = self._book.rival(job, now_ms(), asked_at)
            if rival is not None:
                raise ReplayRunning(rival)
            return value

        await self._writer.write(
            job.id, unless_running, lambda offset: self._applied(job.id, value, offset)
        )

    async def put(self, job: ReplayJob) -> None:
        """Write a job's state (its owner's heartbeat or end) and see it here at once."""
        await self._send(job.id, encode(job))

    async def request_cancel(self, job_id: str, by: str) -> None:
        """Ask the job's owner, wherever it runs, to stop at its next heartbeat."""
        cancel = ReplayCancel(job_id=job_id, requested_at_ms=now_ms(), by=by)
        await self._send(cancel_key(job_id), encode(cancel))

    async def forget_expired(self, endpoint_id: str, dlq: DlqPartition) -> None:
        """Tombstone the endpoint's jobs that no letter in the DLQ depends on any more."""
        for job in self._book.expired(endpoint_id, dlq.partition, dlq.log_start, now_ms()):
            await self._send(cancel_key(job.id), None)
            await self._send(job.id, None)
            log.info("replay_forgotten", endpoint_id=endpoint_id, job_id=job.id)

    async def _send(self, key: str, value: bytes | None) -> None:
        meta = await self._producer.send_and_wait(self._topic, key=key.encode(), value=value)
        self._applied(key, value, meta.offset)

    def _apply(self, record: Record) -> None:
        if record.key is None:
            log.warning("replay_record_without_key", offset=record.offset)
            return
        self._applied(record.key.decode(errors="replace"), record.value, record.offset)

    def _applied(self, key: str, value: bytes | None, offset: int) -> None:
        applied = self._book.apply(key, value, offset)
        if applied == "unreadable":
            log.error("replay_record_unreadable", key=key, offset=offset)
        if applied != "applied":
            return
        # Wakes every waiter at once; later waiters wait for the next change.
        self._changed.set()
        self._changed = asyncio.Event()


@dataclass(frozen=True, slots=True)
class DlqPartition:
    """Where an endpoint's dead letters are, as of a moment: the partition, where it starts
    (retention deletes from there) and ends, and the first offset at or after ``since_ms``."""

    partition: int
    log_start: int
    end: int
    first_since: int


async def dlq_partition_of(settings: Settings, endpoint_id: str, since_ms: int) -> DlqPartition:
    dlq = Topics(settings.topic_prefix).dlq
    partitions = [tp.partition for tp in await partitions_when_ready(settings, dlq)]
    partition = dlq_partition(endpoint_id, partitions)
    consumer = create_consumer(settings, group_id=None)
    await consumer.start()
    try:
        tp = TopicPartition(dlq, partition)
        starts = await consumer.beginning_offsets([tp])
        ends = await consumer.end_offsets([tp])
        found = (await consumer.offsets_for_times({tp: since_ms})).get(tp)
    finally:
        await close_quietly("replay consumer", consumer.stop())
    end = ends[tp]
    first = found.offset if found is not None else end
    return DlqPartition(partition, log_start=starts[tp], end=end, first_since=first)


async def start_job(
    settings: Settings,
    jobs: ReplayJobs,
    endpoint_id: str,
    account_id: str,
    window_ms: tuple[int, int],
    *,
    owner: str,
) -> ReplayJob:
    """Claim the endpoint for a new job of the window ``[since, until)`` (``ReplayRunning``
    if another job of it runs) and return the job, recorded, ready to run. The endpoint's
    expired jobs go: each start sweeps its own endpoint, so the jobs one endpoint keeps stay
    bounded by its starts within the DLQ's retention."""
    since_ms, until_ms = window_ms
    asked_at = await jobs.end_offset()
    dlq = await dlq_partition_of(settings, endpoint_id, since_ms)
    started_ms = now_ms()
    job = ReplayJob(
        id="rpl_" + uuid.uuid4().hex[:24],
        endpoint_id=endpoint_id,
        account_id=account_id,
        since_ms=since_ms,
        until_ms=until_ms,
        dlq_partition=dlq.partition,
        end_offset=dlq.end,
        position=dlq.first_since,
        state="running",
        started_at_ms=started_ms,
        updated_at_ms=started_ms,
        owner=owner,
    )
    await jobs.claim(job, asked_at=asked_at)
    await jobs.forget_expired(endpoint_id, dlq)
    return job


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
            await asyncio.shield(self._finish_cancelled())
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
        """The record's dead letter if it is this job's: its endpoint's, died in the window.
        Only this job's letters are decoded whole; the others' head says enough."""
        if record.value is None:
            return None
        try:
            head = decode_dead_letter_head(record.value)
            if not self._ours(head):
                return None
            return decode_dead_letter(record.value)
        except msgspec.DecodeError:
            return None  # a raw, unreadable record kept for an operator: nothing to replay

    def _ours(self, head: DeadLetterHead) -> bool:
        job = self.job
        return (
            head.endpoint_id == job.endpoint_id and job.since_ms <= head.dead_at_ms < job.until_ms
        )

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

    async def _finish_cancelled(self) -> None:
        """Record the cancel, giving up after ``END_WRITE_TIMEOUT_S``."""
        try:
            async with asyncio.timeout(END_WRITE_TIMEOUT_S):
                await self._finish("cancelled")
        except TimeoutError:
            log.warning(
                "replay_end_unwritten",
                endpoint_id=self.job.endpoint_id,
                job_id=self.job.id,
                state="cancelled",
                timeout_s=END_WRITE_TIMEOUT_S,
            )

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
    """Run a whole replay job in this process (the CLI), recorded like any other; it claims
    its endpoint as the API's do (``ReplayRunning`` if a job of it runs)."""
    jobs = ReplayJobs(settings, producer)
    await jobs.start()
    following = asyncio.create_task(jobs.follow(), name="replay-follower")
    try:
        await jobs.loaded.wait()
        window_ms = (since_ms, until_ms)
        job = await start_job(settings, jobs, endpoint_id, account_id, window_ms, owner=owner)
        return await ReplayRun(settings, producer, jobs, job, on_progress=on_progress).run()
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
        await jobs.stop()
