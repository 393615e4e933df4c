"""The delivery log of one ingest instance: follows ``webhook.attempts``, ``webhook.dlq`` and
``webhook.replays`` from their beginning into the index (``store``), and answers queries.

Every ingest replica keeps its own index, so any of them answers and none depends on another;
a restart builds a fresh one from the topics (Kafka stays the only state an operator runs).
Readiness does not wait for it: answers carry how far behind the index is (``IndexStatus``).
The SQLite work runs in threads (one writer, a few readers) so the event loop stays free.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import msgspec
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.ingest.api_types import IndexStatus
from services.ingest.delivery_log.store import Fetched, LogReader, LogWriter
from shared.kafka.clients import Record
from shared.kafka.metadata import partitions_when_ready
from shared.model.messages import AttemptRecord, ReplayJob, decode_attempt
from shared.model.replays import ReplayBook
from shared.model.topics import Topics
from shared.ops import metrics
from shared.ops.process import close_quietly
from shared.ops.settings import Settings

log = structlog.get_logger(__name__)

T = TypeVar("T")

FILE_PREFIX = "clickhook-delivery-log-"
FILE_SUFFIX = ".sqlite3"
# Small fetches: the index is written a batch at a time, and what waits in aiokafka's buffers
# counts against the service's memory (150 MB in all).
FETCH_MAX_BYTES = 4 * 1024 * 1024
PARTITION_FETCH_BYTES = 1024 * 1024
BATCH_RECORDS = 5000
POLL_MS = 500
EXPIRE_EVERY_S = 60.0
READER_THREADS = 2
DETAIL_TIMEOUT_S = 5.0


def _now_ms() -> int:
    return int(time.time() * 1000)


def _claim_state_file(state_dir: Path) -> tuple[Path, int]:
    """A fresh index file of this process's own, locked while it runs. Files of processes that
    are gone (their lock is free: a crash or kill -9) are removed on the way."""
    state_dir.mkdir(parents=True, exist_ok=True)
    for stale in state_dir.glob(f"{FILE_PREFIX}*{FILE_SUFFIX}"):
        with contextlib.suppress(OSError), stale.open("rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            for path in (
                stale,
                stale.with_name(stale.name + "-wal"),
                stale.with_name(stale.name + "-shm"),
            ):
                path.unlink(missing_ok=True)
    path = state_dir / f"{FILE_PREFIX}{uuid.uuid4().hex}{FILE_SUFFIX}"
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return path, descriptor


def _remove_state_file(path: Path, descriptor: int) -> None:
    for name in (path.name, path.name + "-wal", path.name + "-shm"):
        path.with_name(name).unlink(missing_ok=True)
    os.close(descriptor)


class AttemptReader:
    """Reads single records of ``webhook.attempts`` back: what an attempt sent (its request
    headers and body) stays in the topic, not in the index."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self._topic = topic
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
            fetch_max_bytes=FETCH_MAX_BYTES,
            client_id="clickhook-delivery-log",
        )
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await close_quietly("attempt reader", self._consumer.stop())

    async def read(self, partition: int, offset: int) -> AttemptRecord | None:
        """The record at that place; None once retention removed it (or it is unreadable)."""
        tp = TopicPartition(self._topic, partition)
        async with self._lock:
            self._consumer.assign([tp])
            start = (await self._consumer.beginning_offsets([tp]))[tp]
            if offset < start:
                return None
            self._consumer.seek(tp, offset)
            try:
                async with asyncio.timeout(DETAIL_TIMEOUT_S):
                    while True:
                        batch = await self._consumer.getmany(tp, timeout_ms=POLL_MS)
                        for record in batch.get(tp, []):
                            if record.offset == offset:
                                return _decoded_attempt(record)
                            if record.offset > offset:
                                return None
            except TimeoutError:
                return None
            finally:
                self._consumer.assign([])


def _decoded_attempt(record: Record) -> AttemptRecord | None:
    if record.value is None:
        return None
    try:
        return decode_attempt(record.value)
    except msgspec.DecodeError:
        return None


class DeliveryLog:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        topics = Topics(settings.topic_prefix)
        self._attempts_topic = topics.attempts
        self._dlq_topic = topics.dlq
        self._replays_topic = topics.replays
        self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="delivery-log-writer")
        self._reader_threads = ThreadPoolExecutor(
            READER_THREADS, thread_name_prefix="delivery-log-reader"
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
            fetch_max_bytes=FETCH_MAX_BYTES,
            client_id="clickhook-delivery-log",
        )
        self.attempt_reader = AttemptReader(settings, self._attempts_topic)
        self.replays = ReplayBook()
        self._positions: dict[TopicPartition, int] = {}
        self._start_ends: dict[TopicPartition, int] = {}
        self._caught_up = False
        self._writer: LogWriter | None = None
        self._reader: LogReader | None = None
        self._state: tuple[Path, int] | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        path, descriptor = _claim_state_file(Path(self._settings.state_dir))
        self._state = (path, descriptor)
        per_endpoint = self._settings.delivery_log_per_endpoint
        self._writer = await self._write(LogWriter, path, per_endpoint)
        self._reader = LogReader(path)
        assignment: list[TopicPartition] = []
        for topic in (self._attempts_topic, self._dlq_topic, self._replays_topic):
            assignment += await partitions_when_ready(self._settings, topic)
        await self._consumer.start()
        await self.attempt_reader.start()
        self._consumer.assign(assignment)
        await self._consumer.seek_to_beginning(*assignment)
        self._start_ends = await self._consumer.end_offsets(assignment)
        self._positions = await self._consumer.beginning_offsets(assignment)
        log.info("delivery_log_started", path=str(path), partitions=len(assignment))

    async def follow(self) -> None:
        """Index the topics as they are written, until cancelled (a supervised task)."""
        await self._follow()

    async def stop(self) -> None:
        await close_quietly("delivery log consumer", self._consumer.stop())
        await self.attempt_reader.stop()
        self._reader_threads.shutdown(wait=True)
        if self._reader is not None:
            self._reader.close_all()
        if self._writer is not None:
            await self._write(self._writer.close)
        self._writer_thread.shutdown(wait=True)
        if self._state is not None:
            _remove_state_file(*self._state)

    # --- following the topics ----------------------------------------------------------------

    async def _follow(self) -> None:
        """Fetch the next batch while the writer thread indexes the previous one."""
        expired_at = time.monotonic()
        writing: asyncio.Future[None] | None = None
        try:
            while True:
                writing, expired_at = await self._step(writing, expired_at)
        finally:
            if writing is not None:
                writing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writing

    async def _step(
        self, writing: asyncio.Future[None] | None, expired_at: float
    ) -> tuple[asyncio.Future[None] | None, float]:
        """Fetch a batch, wait for the previous one's indexing, start this one's."""
        batches = await self._consumer.getmany(timeout_ms=POLL_MS, max_records=BATCH_RECORDS)
        if writing is not None:
            await writing
            writing = None
        if batches:
            writing = asyncio.ensure_future(self._index(batches))
        else:
            # Idle: everything fetched is indexed. Positions, not offsets seen: compaction and
            # transaction markers leave gaps.
            for tp in self._positions:
                self._positions[tp] = await self._consumer.position(tp)
        metrics.DELIVERY_LOG_BEHIND.set(self.status().behind)
        if not self._caught_up and self._reached_start_ends():
            self._caught_up = True
            log.info("delivery_log_caught_up", indexed=sum(self._positions.values()))
        if time.monotonic() - expired_at > EXPIRE_EVERY_S:
            expired_at = time.monotonic()
            assert self._writer is not None
            await self._write(self._writer.expire, _now_ms())
        return writing, expired_at

    async def _index(self, batches: dict[TopicPartition, list[Record]]) -> None:
        """One batch of every partition, one transaction per topic."""
        assert self._writer is not None
        attempts: list[Fetched] = []
        letters: list[Fetched] = []
        for tp, records in batches.items():
            if tp.topic == self._replays_topic:
                for record in records:
                    self._apply_replay(record)
                continue
            found = attempts if tp.topic == self._attempts_topic else letters
            found += [Fetched(r.partition, r.offset, r.value) for r in records]
        if attempts:
            await self._write(self._writer.add_attempts, attempts, _now_ms())
        if letters:
            await self._write(self._writer.add_dead_letters, letters)
        for tp, records in batches.items():
            self._positions[tp] = records[-1].offset + 1

    def _apply_replay(self, record: Record) -> None:
        """``webhook.replays`` is compacted and small: its jobs are kept in memory."""
        if record.key is None:
            return
        key = record.key.decode(errors="replace")
        if self.replays.apply(key, record.value, record.offset) == "unreadable":
            log.warning("replay_job_unreadable", key=key)

    def _reached_start_ends(self) -> bool:
        return all(self._positions[tp] >= end for tp, end in self._start_ends.items())

    def status(self) -> IndexStatus:
        """How far the index is behind the topics, as of the consumer's last fetches."""
        behind = 0
        for tp, indexed in self._positions.items():
            highwater = self._consumer.highwater(tp)
            end = highwater if highwater is not None else self._start_ends.get(tp, 0)
            behind += max(0, end - indexed)
        return IndexStatus(caught_up=behind == 0 and self._reached_start_ends(), behind=behind)

    def jobs_of(self, endpoint_id: str) -> list[ReplayJob]:
        return self.replays.of_endpoint(endpoint_id)

    # --- threads -------------------------------------------------------------------------------

    async def _write(self, work: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer_thread, work, *args)

    async def read(self, work: Callable[..., T], *args: object) -> T:
        """Run a query (a method of ``reader``) in a reader thread."""
        return await asyncio.get_running_loop().run_in_executor(self._reader_threads, work, *args)

    @property
    def reader(self) -> LogReader:
        assert self._reader is not None, "the delivery log is not started"
        return self._reader
