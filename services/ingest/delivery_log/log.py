"""The delivery log of one ingest instance: follows ``webhook.attempts``, ``webhook.dlq``,
``webhook.replays`` and the tombstones of ``webhook.endpoints`` into the index (``store``), and
answers queries.

By default every ingest replica keeps its own SQLite index, so any of them answers and none
depends on another.
The index keeps the topic positions it has read in the same transactions as its rows: a
restart on the same state directory resumes where it stopped; a fresh one (or one that finds
no usable file) builds the index from the topics, the newest hour first: it follows the
topics from an hour back, and once it has caught up with them fills the older history behind
it, an hour at a time, newest first (``fill.py``, ``history.py``), between the batches it
follows. Readiness does not wait for it: answers carry how far behind the index is and since
when it is complete (``IndexStatus``).

With ``CLICKHOOK_DELIVERY_LOG_URL`` the replicas share one PostgreSQL store (``pg_store``): the
members of one consumer group (``DELIVERY_LOG_GROUP``) each index their share of the topics,
seeking each partition they are given to the position the store holds for it; every replica
answers from the store, consumer or not, and follows ``webhook.replays`` on its own.

Click intake never depends on it. A failure of the index (a full disk, a corrupt file) never
ends the following task, so never the process: the log's routes answer 503
(``DeliveryLogUnavailable``) while it recovers by itself, evicting its oldest rows and retrying
the batch, or, when that does not help or the file is unusable, building a fresh index, with a
growing backoff between tries.
The SQLite work runs in threads (one writer, a few readers) so the event loop stays free.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import math
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import msgspec
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError

from services.ingest.api_types import IndexStatus
from services.ingest.delivery_log.fill import (
    budget_reached,
    complete_since_ms,
    evicted_through,
    loaded_state,
    next_positions,
    stored_positions,
)
from services.ingest.delivery_log.history import HistoryBatch, HistoryReader, index_consumer
from services.ingest.delivery_log.store import (
    Fetched,
    IndexFormatChanged,
    IndexFull,
    IndexQueries,
    IndexWriter,
    LogReader,
    LogWriter,
    Positions,
    PositionsMoved,
    failure_reason,
    ms_to_datetime,
)
from shared.kafka.clients import Record
from shared.kafka.metadata import partitions_when_ready
from shared.model.errors import DeliveryLogUnavailable
from shared.model.messages import AttemptRecord, ReplayJob, decode_attempt
from shared.model.replays import ReplayBook
from shared.model.topics import DELIVERY_LOG_GROUP, Topics
from shared.ops import metrics
from shared.ops.process import close_quietly
from shared.ops.settings import Settings

log = structlog.get_logger(__name__)

T = TypeVar("T")

FILE_PREFIX = "clickhook-delivery-log-"
FILE_SUFFIX = ".sqlite3"
# The file an instance resumes from, one per cluster and topic prefix (its digest); a second
# instance of the same on one directory (a development machine) takes a fresh file of its
# own, removed when it stops.
RESUMED_PREFIX = "clickhook-delivery-index-"
# After a failure of the index: the first wait before trying again, doubling up to the last.
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0
# Tries of a batch that found the index full (each after evicting) before a fresh index.
FULL_TRIES = 2
# Small fetches: the index is written a batch at a time, and what waits in aiokafka's buffers
# (decoded before it is handed over) counts against the service's memory (150 MB in all). At
# the cap (1,000 endpoints x 10,000 attempts, a million dead letters of 12 KB) a fresh index
# peaked at 162 MB in its first 100 s with 4 MiB fetches and a 16 MiB writer cache, and at
# 138 MB with these and 8 MiB, at the same rate (docs/benchmarks/delivery_log_cap.json).
FETCH_MAX_BYTES = 2 * 1024 * 1024
PARTITION_FETCH_BYTES = 512 * 1024
BATCH_RECORDS = 5000
POLL_MS = 500
# While the writer thread indexes a batch, the next one grows with what arrives meanwhile, up to
# these bounds: one fetch's worth (some 350 of the replay bench's 2 KB letters) a transaction
# left the writer's per-batch work (the commit writing each dirtied index page, the positions,
# the trims and the budget's check) the larger part of its cost while the index fell behind.
# The bytes bound holds the batch to about two fetches whatever a record's size.
BATCH_BYTES = 2 * FETCH_MAX_BYTES
# How long each look for more waits: the writer's end is seen within it.
GATHER_MS = 5
EXPIRE_EVERY_S = 60.0
READER_THREADS = 2
DETAIL_TIMEOUT_S = 5.0
# How often a replica of a shared store asks how far the store is behind the topics.
SHARED_STATUS_EVERY_S = 2.0


def _now_ms() -> int:
    return int(time.time() * 1000)


def resumed_file_name(settings: Settings) -> str:
    """The resumable index of this deployment's topics: another cluster or prefix (tests on
    one machine, a broker recreated elsewhere) never resumes from it."""
    identity = f"{settings.kafka_bootstrap}\n{settings.topic_prefix}".encode()
    return f"{RESUMED_PREFIX}{hashlib.blake2b(identity, digest_size=8).hexdigest()}{FILE_SUFFIX}"


def _claim_state_file(state_dir: Path, resumed_name: str | None) -> tuple[Path, int]:
    """The index file to use, locked while this process runs: the resumable one (if any)
    unless another live process holds it, else a fresh one. Fresh files of processes that are
    gone (their lock is free: a crash or kill -9) are removed on the way."""
    state_dir.mkdir(parents=True, exist_ok=True)
    for stale in state_dir.glob(f"{FILE_PREFIX}*{FILE_SUFFIX}"):
        with contextlib.suppress(OSError), stale.open("rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _remove_files(stale)
    if resumed_name is not None:
        resumed = state_dir / resumed_name
        descriptor = os.open(resumed, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(descriptor)
        else:
            return resumed, descriptor
    path = state_dir / f"{FILE_PREFIX}{uuid.uuid4().hex}{FILE_SUFFIX}"
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return path, descriptor


def _remove_files(path: Path) -> None:
    for name in (path.name, path.name + "-wal", path.name + "-shm"):
        path.with_name(name).unlink(missing_ok=True)


def _release_state_file(path: Path, descriptor: int, *, discard: bool) -> None:
    """Unlock the index file; a fresh one (or one to rebuild) is removed with it."""
    if discard or not path.name.startswith(RESUMED_PREFIX):
        _remove_files(path)
    os.close(descriptor)


def retry_delay_s(failures: int) -> float:
    """The wait after the ``failures``-th failure in a row (from 1)."""
    return float(min(RETRY_MAX_S, RETRY_FIRST_S * 2.0 ** (failures - 1)))


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
    def __init__(self, settings: Settings, *, expire_every_s: float = EXPIRE_EVERY_S) -> None:
        self._settings = settings
        # How often retention runs and the byte budget is measured (tests shorten it).
        self._expire_every_s = expire_every_s
        topics = Topics(settings.topic_prefix)
        self._attempts_topic = topics.attempts
        self._dlq_topic = topics.dlq
        self._replays_topic = topics.replays
        self._endpoints_topic = topics.endpoints
        self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="delivery-log-writer")
        self._reader_threads = ThreadPoolExecutor(
            READER_THREADS, thread_name_prefix="delivery-log-reader"
        )
        # Shared (PostgreSQL): the group's members index; every replica follows the replays
        # (and asks the topics' ends) with a consumer of its own.
        self._shared = bool(settings.delivery_log_url)
        # What a failed query raises, and how a failure is counted (``full``, ``corrupt`` or
        # ``error``). psycopg, some 8 MB of the process, is imported only for the shared store.
        self._query_errors: tuple[type[Exception], ...] = (sqlite3.Error,)
        self._failure_reason: Callable[[BaseException], str] = failure_reason
        if self._shared:
            from services.ingest.delivery_log import pg_store  # noqa: PLC0415 - see above

            self._query_errors = (sqlite3.Error, *pg_store.QUERY_ERRORS)
            self._failure_reason = pg_store.pg_failure_reason
        self._consumer = index_consumer(
            settings,
            "clickhook-delivery-log",
            FETCH_MAX_BYTES,
            PARTITION_FETCH_BYTES,
            group_id=topics.group(DELIVERY_LOG_GROUP) if self._shared else None,
        )
        self._replays = (
            index_consumer(
                settings, "clickhook-delivery-log", FETCH_MAX_BYTES, PARTITION_FETCH_BYTES
            )
            if self._shared
            else self._consumer
        )
        self._unpositioned: set[TopicPartition] = set()
        # Of a shared store: how far each partition is behind, as of the last look; a
        # partition this member has indexed since counts as of its own fetches (``status``).
        self._store_behind: dict[TopicPartition, int] = {}
        self._status_known = False
        self._status_at = 0.0
        # Of a shared store: the newest record time its byte budget dropped, as of the last look.
        self._store_evicted_ms: int | None = None
        self._status_task: asyncio.Future[None] | None = None
        self.attempt_reader = AttemptReader(settings, self._attempts_topic)
        self.replays = ReplayBook()
        # A fresh embedded index fills its history behind the newest hour, with a consumer of
        # its own. A shared store is filled by the group from the positions it holds: no fill,
        # and no consumer for one (a client that never starts still holds its buffers).
        self.history: HistoryReader | None = (
            None
            if self._shared
            else HistoryReader(
                settings,
                (self._attempts_topic, self._dlq_topic),
                fetch_max_bytes=FETCH_MAX_BYTES,
                partition_fetch_bytes=PARTITION_FETCH_BYTES,
            )
        )
        self._assignment: list[TopicPartition] = []
        self._positions: dict[TopicPartition, int] = {}
        self._start_ends: dict[TopicPartition, int] = {}
        self._caught_up = False
        self._writer: IndexWriter | None = None
        self._reader: IndexQueries | None = None
        self._state: tuple[Path, int] | None = None
        # Why the routes answer 503 now (None: they answer), and when to ask again.
        self._unavailable: str | None = "opening"
        self._retry_after_s = math.ceil(RETRY_FIRST_S)
        self._failures = 0

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        metrics.DELIVERY_LOG_BUDGET_BYTES.set(self._settings.delivery_log_max_bytes)
        for topic in (
            self._attempts_topic,
            self._dlq_topic,
            self._replays_topic,
            self._endpoints_topic,
        ):
            self._assignment += await partitions_when_ready(self._settings, topic)
        await self._consumer.start()
        await self.attempt_reader.start()
        if self._shared:
            await self._start_shared()
        else:
            await self._history().start(self._assignment)
            self._consumer.assign(self._assignment)
            self._start_ends = await self._consumer.end_offsets(self._assignment)
            await self._consumer.seek_to_beginning(*self._assignment)
            self._positions = await self._consumer.beginning_offsets(self._assignment)
        try:
            await self._open()
        except Exception as exc:  # noqa: BLE001 - the follower retries; intake starts regardless
            self._failed(exc)
        log.info("delivery_log_started", partitions=len(self._assignment))

    async def follow(self) -> None:
        """Index the topics as they are written, until cancelled (a supervised task). A failure
        of the index degrades the log's routes, never this task: it recovers and goes on."""
        while True:
            try:
                if self._writer is None:
                    await self._open()
                await self._follow()
            except PositionsMoved as exc:
                # Not a failure: another member indexed these partitions since (a rebalance).
                log.info("delivery_log_positions_moved", detail=str(exc))
                self._unpositioned |= set(self._positions)
            except Exception as exc:  # noqa: BLE001 - a read model never stops the service
                rebuild = self._failed(exc)
                await asyncio.sleep(self._retry_after_s)
                if self._shared:
                    await self._retry_shared(exc)
                elif rebuild:
                    await self._close_index(discard=True)
                else:
                    await self._seek_to_indexed()

    async def stop(self) -> None:
        if self._status_task is not None:
            # Waited for, not awaited: a cancel of ``stop`` itself must not be swallowed.
            self._status_task.cancel()
            await asyncio.wait([self._status_task])
        await close_quietly("delivery log consumer", self._consumer.stop())
        if self._replays is not self._consumer:
            await close_quietly("delivery log replays consumer", self._replays.stop())
        await self.attempt_reader.stop()
        if self.history is not None:
            await self.history.stop()
        self._reader_threads.shutdown(wait=True)
        await self._close_index(discard=False)
        self._writer_thread.shutdown(wait=True)

    # --- the index file ------------------------------------------------------------------------

    async def _open(self) -> None:
        """Open the index (the one a previous run left, when usable) and seek every topic
        partition to where it stopped, and the history fill to where it stood; a fresh index
        starts with the newest hour. On failure nothing stays open, and the file goes (the
        next try builds a fresh one)."""
        try:
            stored = await self._open_file()
            fresh = not any(self._key(tp) in stored for tp in self._history_partitions())
            if fresh and not self._shared:
                stored = await self._start_fresh(stored)
        except BaseException:
            await self._close_index(discard=True)
            raise
        if self._shared:
            self._unpositioned |= set(self._positions)  # sought before their next batch
        else:
            for tp in self._assignment:
                offset = stored.get(self._key(tp))
                if offset is not None:
                    self._consumer.seek(tp, offset)
                    self._positions[tp] = offset
            self._history().resume(loaded_state(stored))
        self._recovered()

    async def _start_fresh(self, stored: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        """A fresh index: where following the attempts and dead letters starts (an hour
        back) and the fill of their history, kept before any record is read, so a restart
        goes on with both instead of starting again an hour later (a gap between them)."""
        assert self._writer is not None
        history = self._history()
        heads = await history.plan(_now_ms(), self._start_ends)
        kept = [*heads.items(), *stored_positions(history.state)]
        await self._write(self._writer.save_positions, kept)
        log.info("delivery_log_newest_first", since=complete_since_ms(history.state))
        return {**stored, **dict(kept)}

    def _history(self) -> HistoryReader:
        """The fill's reader, which only the embedded index has."""
        assert self.history is not None, "a shared store has no history fill"
        return self.history

    @property
    def _filling(self) -> bool:
        """Whether the fill has history to read now (never of a shared store)."""
        return self._caught_up and self.history is not None and self.history.wanted

    def _history_partitions(self) -> list[TopicPartition]:
        return [
            tp for tp in self._assignment if tp.topic in (self._attempts_topic, self._dlq_topic)
        ]

    @staticmethod
    def _key(tp: TopicPartition) -> tuple[str, int]:
        return (tp.topic, tp.partition)

    async def _open_file(self) -> dict[tuple[str, int], int]:
        settings = self._settings
        if self._shared:
            return await self._open_shared()
        state_dir = Path(settings.state_dir)
        resumed = resumed_file_name(settings) if settings.delivery_log_resumes else None
        self._state = path, _ = _claim_state_file(state_dir, resumed)
        self._writer = writer = await self._write(
            LogWriter, path, settings.delivery_log_per_endpoint, settings.delivery_log_max_bytes
        )
        stored = await self._write(writer.positions)
        ends = self._start_ends.items()
        if any(stored.get((tp.topic, tp.partition), 0) > end for tp, end in ends):
            # The topics were recreated since: the rows are of records that are gone.
            raise IndexFormatChanged("the index has read past the topics' ends")
        self._reader = LogReader(path)
        log.info("delivery_log_opened", path=str(path), resumed=bool(stored))
        return stored

    async def _close_index(self, *, discard: bool) -> None:
        """Close the index; ``discard`` removes its file, for a fresh one from the beginning."""
        reader, self._reader = self._reader, None
        if self._status_task is not None:
            # A status refresh may be reading through this reader: its connections close after.
            await asyncio.wait([self._status_task])
        if reader is not None:
            # Queries still running on it fail, and answer 503 as any failure of the index.
            await asyncio.get_running_loop().run_in_executor(None, reader.close_all)
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(sqlite3.Error):
                await self._write(writer.close)
        state, self._state = self._state, None
        if state is not None:
            _release_state_file(*state, discard=discard)
        if self.history is not None:
            self.history.resume(None)
        if discard and self._assignment and not self._shared:
            indexed = [tp for tp in self._assignment if tp.topic != self._replays_topic]
            await self._consumer.seek_to_beginning(*indexed)
            beginnings = await self._consumer.beginning_offsets(indexed)
            self._positions.update(beginnings)
            self._caught_up = False

    # --- a shared store (PostgreSQL) --------------------------------------------------------------

    async def _start_shared(self) -> None:
        """Join the group on the indexed topics; follow the replays from their beginning."""
        indexed = [self._attempts_topic, self._dlq_topic, self._endpoints_topic]
        self._consumer.subscribe(indexed, listener=_SharedListener(self))
        replays = [tp for tp in self._assignment if tp.topic == self._replays_topic]
        await self._replays.start()
        self._replays.assign(replays)
        await self._replays.seek_to_beginning(*replays)

    async def _open_shared(self) -> dict[tuple[str, int], int]:
        from services.ingest.delivery_log.pg_store import PgReader, PgWriter  # noqa: PLC0415

        settings = self._settings
        self._writer = writer = await self._write(
            PgWriter,
            settings.delivery_log_url,
            settings.delivery_log_per_endpoint,
            settings.delivery_log_max_bytes,
            _now_ms(),
        )
        stored = await self._write(writer.positions)
        self._reader = PgReader(settings.delivery_log_url)
        log.info("delivery_log_opened", store="postgresql", resumed=bool(stored))
        return stored

    def _assigned(self, tps: set[TopicPartition]) -> None:
        self._unpositioned |= tps

    def _revoked(self, tps: set[TopicPartition]) -> None:
        for tp in tps:
            self._positions.pop(tp, None)
        self._unpositioned -= tps

    async def _follow_shared(
        self, batches: dict[TopicPartition, list[Record]]
    ) -> dict[TopicPartition, list[Record]]:
        """Apply new replay jobs; seek partitions given to this member to the positions the
        store holds (their records fetched before are dropped); refresh the status."""
        replays = await self._replays.getmany(timeout_ms=0)
        for records in replays.values():
            for record in records:
                self._apply_replay(record)
        if self._unpositioned:
            sought = await self._seek_stored()
            batches = {tp: records for tp, records in batches.items() if tp not in sought}
        self._refresh_status_aside()
        return batches

    def _refresh_status_aside(self) -> None:
        """Refresh the status beside the batches, not between them: the topics' offsets come
        through the replays consumer, whose idle fetch the broker holds for up to its wait
        (500 ms) before it answers them; asked in line, that held up every batch once every
        two seconds for most of a second (PostgreSQL indexed at half the SQLite index's rate)."""
        due = time.monotonic() - self._status_at >= SHARED_STATUS_EVERY_S
        if due and (self._status_task is None or self._status_task.done()):
            self._status_task = asyncio.ensure_future(self._refresh_quietly())

    async def _refresh_quietly(self) -> None:
        try:
            await self._refresh_shared_status()
        except Exception as exc:  # noqa: BLE001 - the next refresh tries again; a failing store fails its batches too
            # Not caught up until a look succeeds again: the last look's figures may be stale.
            self._status_known = False
            log.warning("delivery_log_status_failed", error=repr(exc))

    async def _seek_stored(self) -> set[TopicPartition]:
        """Each newly assigned partition to its stored position (its beginning without one,
        or when retention removed the records up to it)."""
        assert self._writer is not None
        tps: set[TopicPartition] = self._unpositioned & self._consumer.assignment()
        stored = await self._write(self._writer.positions)
        beginnings = await self._consumer.beginning_offsets(list(tps))
        for tp in tps:
            offset = max(stored.get((tp.topic, tp.partition), 0), beginnings[tp])
            self._consumer.seek(tp, offset)
            self._positions[tp] = offset
        self._unpositioned.clear()
        log.info("delivery_log_partitions_sought", partitions=len(tps))
        return tps

    async def _refresh_shared_status(self) -> None:
        """How far the whole group is behind: the topics' ends against the store's positions."""
        reader = self._reader
        if time.monotonic() - self._status_at < SHARED_STATUS_EVERY_S or reader is None:
            return
        self._status_at = time.monotonic()
        counted = [
            tp for tp in self._assignment if tp.topic in (self._attempts_topic, self._dlq_topic)
        ]
        ends = await self._replays.end_offsets(counted)
        beginnings = await self._replays.beginning_offsets(counted)
        stored = await self.read(reader.positions)
        self._store_evicted_ms = evicted_through(stored)
        self._store_behind = {
            tp: max(0, ends[tp] - max(stored.get((tp.topic, tp.partition), 0), beginnings[tp]))
            for tp in counted
        }
        self._status_known = True
        if not self._caught_up and self.status().caught_up:
            self._caught_up = True
            log.info("delivery_log_caught_up", store="postgresql")

    async def _retry_shared(self, exc: BaseException) -> None:
        """After a failure of the shared store: over its budget, fetch the batch again (the
        writer measures again before it); otherwise connect again. Nothing of the shared store
        is ever thrown away."""
        if isinstance(exc, IndexFull):
            await self._seek_to_indexed()
        else:
            await self._close_index(discard=False)

    async def _seek_to_indexed(self) -> None:
        """Back to the first record not indexed: what was fetched after it is fetched again."""
        for tp, offset in self._positions.items():
            self._consumer.seek(tp, offset)
        if self.history is not None:
            self.history.resume(self.history.state)

    def _failed(self, exc: BaseException) -> bool:
        """Degrade the routes; True when the next try needs a fresh index."""
        reason = self._failure_reason(exc)
        self._failures += 1
        self._unavailable = reason
        self._retry_after_s = math.ceil(retry_delay_s(self._failures))
        metrics.DELIVERY_LOG_UNAVAILABLE.set(1)
        metrics.DELIVERY_LOG_FAILURES.labels(reason=reason).inc()
        rebuild = not isinstance(exc, IndexFull) or self._failures >= FULL_TRIES
        log.error(
            "delivery_log_failed",
            reason=reason,
            error=repr(exc),
            failures=self._failures,
            retry_in_s=self._retry_after_s,
            rebuild=rebuild,
        )
        return rebuild

    def _recovered(self) -> None:
        if self._unavailable is not None and self._failures:
            log.info("delivery_log_recovered", after_failures=self._failures)
        self._unavailable = None
        self._failures = 0
        metrics.DELIVERY_LOG_UNAVAILABLE.set(0)

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
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await writing

    async def _step(
        self, writing: asyncio.Future[None] | None, expired_at: float
    ) -> tuple[asyncio.Future[None] | None, float]:
        """Fetch a batch, wait for the previous one's indexing, start this one's. Once the
        index has caught up with the topics, each step also reads a batch of the history it
        has yet to fill (after the previous one is written: the fill's state is then settled)."""
        batches = await self._consumer.getmany(
            timeout_ms=0 if self._filling else POLL_MS, max_records=BATCH_RECORDS
        )
        if writing is not None:
            await self._gather(batches, writing)
            await writing
            writing = None
        if self._shared:
            batches = await self._follow_shared(batches)
        older = None
        if self._filling:  # again: that write may have ended it
            older = await self._history().fetch(0 if batches else POLL_MS, BATCH_RECORDS)
        if batches or older is not None:
            writing = asyncio.ensure_future(self._index_both(batches, older))
        if not batches:
            await self._advance_idle_positions()
        metrics.DELIVERY_LOG_BEHIND.set(self.status().behind)
        if not self._shared and not self._caught_up and self._reached_start_ends():
            self._caught_up = True
            log.info("delivery_log_caught_up", indexed=sum(self._positions.values()))
        if time.monotonic() - expired_at > self._expire_every_s:
            expired_at = time.monotonic()
            assert self._writer is not None
            await self._write(self._writer.expire, _now_ms())
        return writing, expired_at

    async def _gather(
        self, batches: dict[TopicPartition, list[Record]], writing: asyncio.Future[None]
    ) -> None:
        """Add to ``batches`` what is fetched until ``writing`` ends or the batch is full:
        records of one partition stay in their order, so each partition's last is still the
        position its batch reaches."""
        records = sum(len(found) for found in batches.values())
        size = sum(len(r.value or b"") for found in batches.values() for r in found)
        while not writing.done() and records < BATCH_RECORDS and size < BATCH_BYTES:
            more = await self._consumer.getmany(
                timeout_ms=GATHER_MS, max_records=BATCH_RECORDS - records
            )
            for tp, found in more.items():
                batches.setdefault(tp, []).extend(found)
                records += len(found)
                size += sum(len(r.value or b"") for r in found)

    async def _index_both(
        self, batches: dict[TopicPartition, list[Record]], older: HistoryBatch | None
    ) -> None:
        if batches:
            await self._index(batches)
        if older is not None:
            await self._fill(older)

    async def _fill(self, older: HistoryBatch) -> None:
        """Index a batch of history with how far the fill got (one transaction per topic),
        and once its window is read in full, move on to the one before."""
        fetched: dict[str, list[Fetched]] = {self._attempts_topic: [], self._dlq_topic: []}
        reached: dict[str, list[tuple[tuple[str, int], int]]] = {}
        for tp, records in older.records.items():
            fetched[tp.topic] += [Fetched(r.partition, r.offset, r.value) for r in records]
        for tp, offset in older.reached.items():
            reached.setdefault(tp.topic, []).extend(next_positions([(self._key(tp), offset)]))
        await self._write_topics(fetched, reached)
        history = self._history()
        history.advance(older.reached)
        state = history.state
        if state is not None and state.window_done:
            evicted_ms = self._evicted_through_ms()
            stopped = budget_reached(state, evicted_ms)
            following = None if stopped else await history.next_window()
            assert self._writer is not None
            await self._write(self._writer.save_positions, stored_positions(following))
            history.resume(following)
            since = complete_since_ms(following, evicted_ms)
            log.info(
                "delivery_log_history_filled",
                since=since,
                complete=following is None and since is None,
                stopped_by_budget=stopped,
            )

    async def _write_topics(
        self, fetched: dict[str, list[Fetched]], reached: Mapping[str, Positions]
    ) -> None:
        """Attempts and dead letters, each topic's in one transaction with its positions."""
        writer = self._writer
        assert writer is not None
        now = _now_ms()
        if self._attempts_topic in reached:
            positions = reached[self._attempts_topic]
            await self._write(writer.add_attempts, fetched[self._attempts_topic], now, positions)
        if self._dlq_topic in reached:
            await self._write(
                writer.add_dead_letters, fetched[self._dlq_topic], reached[self._dlq_topic]
            )

    async def _index(self, batches: dict[TopicPartition, list[Record]]) -> None:
        """One batch of every partition, one transaction per topic, each with the positions
        it reached (a restart resumes from them)."""
        writer = self._writer
        assert writer is not None
        fetched: dict[str, list[Fetched]] = {self._attempts_topic: [], self._dlq_topic: []}
        deleted: list[str] = []
        reached: dict[str, list[tuple[tuple[str, int], int]]] = {}
        for tp, records in batches.items():
            reached.setdefault(tp.topic, []).append(
                ((tp.topic, tp.partition), records[-1].offset + 1)
            )
            if tp.topic == self._replays_topic:
                for record in records:
                    self._apply_replay(record)
            elif tp.topic == self._endpoints_topic:
                deleted += [
                    _tombstone_of(r) for r in records if r.value is None and r.key is not None
                ]
            else:
                fetched[tp.topic] += [Fetched(r.partition, r.offset, r.value) for r in records]
        await self._write_topics(fetched, {t: p for t, p in reached.items() if t in fetched})
        if self._endpoints_topic in reached:
            now = _now_ms()
            await self._write(writer.purge_endpoints, deleted, now, reached[self._endpoints_topic])
        for tp, records in batches.items():
            self._positions[tp] = records[-1].offset + 1
        if self._unavailable is not None:
            self._recovered()

    def _apply_replay(self, record: Record) -> None:
        """``webhook.replays`` is compacted and small: its jobs are kept in memory."""
        if record.key is None:
            return
        key = record.key.decode(errors="replace")
        if self.replays.apply(key, record.value, record.offset) == "unreadable":
            log.warning("replay_job_unreadable", key=key)

    async def _advance_idle_positions(self) -> None:
        """Idle: everything fetched is indexed. Positions, not offsets seen: compaction and
        transaction markers leave gaps. A shared store's partition may be revoked while this
        waits: it is then left to its next owner (writing it back would leave this member
        reporting a partition it no longer reads)."""
        for tp in list(self._positions):
            try:
                position = await self._consumer.position(tp)
            except IllegalStateError:
                continue
            if tp in self._positions:
                self._positions[tp] = position

    def _reached_start_ends(self) -> bool:
        return all(
            self._positions[tp] >= end
            for tp, end in self._start_ends.items()
            if tp.topic != self._endpoints_topic
        )

    def status(self) -> IndexStatus:
        """How far the index is behind the topics, as of the consumer's last fetches (of a
        shared store: the whole group's, as of the last look)."""
        behind = sum(lag for tp, lag in self._store_behind.items() if tp not in self._positions)
        assigned = self._consumer.assignment()
        for tp, indexed in self._positions.items():
            if tp.topic == self._endpoints_topic or tp not in assigned:
                # Tombstones to apply are not records missing from answers; a partition in
                # the middle of a rebalance is counted by whoever reads it next.
                continue
            highwater = self._consumer.highwater(tp)
            end = highwater if highwater is not None else self._start_ends.get(tp, 0)
            behind += max(0, end - indexed)
        if self._shared:
            caught_up = behind == 0 and self._status_known and not self._unpositioned
        else:
            caught_up = behind == 0 and self._reached_start_ends()
        since_ms = complete_since_ms(
            None if self.history is None else self.history.state, self._evicted_through_ms()
        )
        return IndexStatus(
            caught_up=caught_up,
            behind=behind,
            complete_since=None if since_ms is None else ms_to_datetime(since_ms),
        )

    def _evicted_through_ms(self) -> int | None:
        """The newest record time the byte budget dropped: the log is complete after it."""
        if self._shared:
            return self._store_evicted_ms
        return None if self._writer is None else self._writer.evicted_through_ms

    def jobs_of(self, endpoint_id: str) -> list[ReplayJob]:
        return self.replays.of_endpoint(endpoint_id)

    # --- threads -------------------------------------------------------------------------------

    async def _write(self, work: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer_thread, work, *args)

    async def read(self, work: Callable[..., T], *args: object) -> T:
        """Run a query (a method of ``reader``) in a reader thread; ``DeliveryLogUnavailable``
        while the index cannot answer."""
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._reader_threads, work, *args
            )
        except self._query_errors as exc:
            log.warning("delivery_log_query_failed", error=repr(exc))
            raise self._unavailable_error(self._failure_reason(exc)) from exc

    @property
    def reader(self) -> IndexQueries:
        """The index's queries; ``DeliveryLogUnavailable`` while it cannot answer."""
        if self._unavailable is not None or self._reader is None:
            raise self._unavailable_error(self._unavailable or "opening")
        return self._reader

    def _unavailable_error(self, reason: str) -> DeliveryLogUnavailable:
        return DeliveryLogUnavailable(reason, self._retry_after_s)


class _SharedListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """A member's share of the topics changes: the log seeks what it is given before its next
    batch, and forgets what it lost (another member writes it now; the store fences this one)."""

    def __init__(self, delivery_log: DeliveryLog) -> None:
        self._log = delivery_log

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._log._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._log._assigned(set(assigned))


def _tombstone_of(record: Record) -> str:
    """The endpoint id a tombstone of ``webhook.endpoints`` deletes."""
    assert record.key is not None
    return bytes(record.key).decode(errors="replace")
