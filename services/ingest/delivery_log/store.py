"""The delivery log's index: an SQLite file built from the topics, written by one thread and
read by others (WAL), so the event loop never waits on it.

It is a cache, not a store: every row comes from ``webhook.attempts`` or ``webhook.dlq`` and is
found again there. It keeps the topic positions it has read in the same transactions as its
rows, so a restart resumes from them. What it keeps is bounded, per endpoint and in total:

- attempts of the last 7 days (the retention of ``webhook.attempts``), at most
  ``per_endpoint`` of each endpoint, newest first; without the request sent (headers and body,
  4 KiB each), which is read back from the topic when one attempt is shown; the receiver's
  answer at most 1 KiB;
- dead letters of the last 30 days (the retention of ``webhook.dlq``), at most ``per_endpoint``
  of each endpoint, with a compact history: each attempt's time, outcome and error, and only
  the start of the last answer (the answers themselves are in the attempts rows, while kept);
- per endpoint and minute of the last 25 hours: attempts by outcome class and a histogram of
  their durations, so the 1 h and 24 h figures stay exact whatever the cap;
- per delivery (endpoint and webhook-id), where it stands: waiting, delivered or dead (those
  that ended, at most ``per_endpoint`` of each endpoint);
- in all, at most ``max_bytes``: SQLite refuses to grow the file past it, and past 90 % of it
  the oldest rows go first, whichever endpoint they belong to, down to 80 %;
- nothing of a deleted endpoint (its tombstone purges it).

Rows are ordered by time and then by their Kafka position (partition and offset), which is the
same on every ingest replica: a cursor from one is valid on all.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

import msgspec
import structlog

from services.ingest.api_types import (
    Attempt,
    DeadLetterView,
    DeliveryState,
    DeliverySummary,
    Durations,
    HistoryAttempt,
    LastError,
    WindowStats,
)
from services.ingest.delivery_log.fill import EVICTED_STREAM, evicted_through
from shared.model.errors import ClickhookError
from shared.model.messages import (
    AttemptRecord,
    Outcome,
    ReplayJob,
    decode_attempt,
    decode_dead_letter,
)
from shared.ops import metrics

log = structlog.get_logger(__name__)

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MINUTE_MS = 60_000
ATTEMPTS_KEPT_MS = 7 * DAY_MS  # webhook.attempts' retention (shared/kafka/clients.py)
DEAD_LETTERS_KEPT_MS = 30 * DAY_MS  # webhook.dlq's retention
ROLLUPS_KEPT_MS = 25 * HOUR_MS  # the 24 h window, and an hour of clock skew
# Trim an endpoint's rows once it is this far over its cap, not at every insert.
TRIM_SLACK = 0.1
# Durations are counted in buckets a factor 2^(1/8) (9 %) wide: p50 and p99 within that.
BUCKETS_PER_DOUBLING = 8
POSITION_BITS = 40  # offsets below 2^40 (a trillion records a partition)

# Each connection's page cache counts against ingest's 150 MB. A reader answers a page of one
# endpoint (a few index pages and the rows), the operating system's file cache under it.
READER_CACHE_KIB = 2 * 1024
WRITER_CACHE_KIB = 8 * 1024

# The byte budget: past BUDGET_HIGH of it the oldest rows are evicted down to BUDGET_LOW, so a
# batch (5,000 records, a few MB) always finds room below the hard limit (max_page_count).
BUDGET_HIGH = 0.9
BUDGET_LOW = 0.8
EVICT_ROWS = 5000  # per table and round: one short transaction each
# And at most this share of the rows held per round: a small budget (a few thousand rows) loses
# its oldest, not everything at once.
EVICT_SHARE = 0.05
MIN_PAGES = 64  # a budget smaller than this is no index at all
# The most the WAL takes, on top of the budget: a batch that would take it further lands on a
# checkpointed WAL (``LogWriter._fitted``).
WAL_LIMIT_BYTES = 64 * 1024 * 1024
# The writer checkpoints once the WAL holds this much, not at SQLite's 4 MB: a batch dirties an
# index page per endpoint in it, so past a few hundred thousand rows each commit wrote more
# than 4 MB and checkpointed (copied its pages into the file and synced it) every time; with
# more commits between checkpoints an endpoint's page is copied once for all of them. Half the
# limit leaves the other half for the commit that crosses it (docs/performance-history.md, "The
# delivery log's writer on a big index"); a batch bigger than that half begins a checkpointed
# WAL instead (docs/performance-history.md, "The WAL's limit with gathered batches").
WAL_CHECKPOINT_BYTES = WAL_LIMIT_BYTES // 2
# The WAL file's header (https://www.sqlite.org/fileformat2.html#walformat): bytes 12-24 are its
# checkpoint sequence number and first salt, which change each time the WAL begins again.
WAL_HEADER_BYTES = 32
WAL_GENERATION = slice(12, 24)
# What a receiver answered, as the deliverer keeps it (shared/delivery/http_client.py); a dead
# letter keeps the first characters of its last answer only: the whole answers are in the
# attempts rows, while they are kept.
RESPONSE_BODY_CHARS = 1024
LETTER_BODY_CHARS = 256
# The layout of the file (PRAGMA user_version): a file of another one is built again.
INDEX_VERSION = 2
SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_NOTADB = 26

# Where each topic partition's next record is: ((topic, partition), offset).
Positions = Iterable[tuple[tuple[str, int], int]]
# Rows of a batch into one table (every column, in order), and what a row whose key is there
# already does (an ``ON CONFLICT`` clause): ``IndexWriter._insert``.
Insert = Callable[[str, list[tuple[Any, ...]], str], None]

SCHEMA = """
CREATE TABLE IF NOT EXISTS endpoints (
    key INTEGER PRIMARY KEY, endpoint_id TEXT NOT NULL UNIQUE, account_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS attempts (
    pos INTEGER PRIMARY KEY, ep INTEGER NOT NULL, at_ms INTEGER NOT NULL,
    event_key INTEGER NOT NULL, webhook_id TEXT NOT NULL, event_id TEXT NOT NULL,
    attempt INTEGER NOT NULL, duration_ms REAL NOT NULL, outcome TEXT NOT NULL,
    status INTEGER, error TEXT, response_body TEXT, next_at_ms INTEGER, dead_reason TEXT,
    deferred_because TEXT, breaker TEXT);
CREATE INDEX IF NOT EXISTS attempts_by_endpoint ON attempts (ep, at_ms, pos);
CREATE INDEX IF NOT EXISTS attempts_by_event ON attempts (event_key);
CREATE INDEX IF NOT EXISTS attempts_by_time ON attempts (at_ms);
CREATE TABLE IF NOT EXISTS deliveries (
    ep INTEGER NOT NULL, webhook_key INTEGER NOT NULL, at_ms INTEGER NOT NULL,
    pos INTEGER NOT NULL, state TEXT NOT NULL, PRIMARY KEY (ep, webhook_key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_by_state ON deliveries (ep, state, at_ms);
CREATE INDEX IF NOT EXISTS deliveries_by_time ON deliveries (at_ms);
CREATE TABLE IF NOT EXISTS rollups (
    ep INTEGER NOT NULL, minute INTEGER NOT NULL, kind TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (ep, minute, kind)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS durations (
    ep INTEGER NOT NULL, minute INTEGER NOT NULL, bucket INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (ep, minute, bucket)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS breakers (
    ep INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, pos INTEGER NOT NULL, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS last_errors (
    ep INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, pos INTEGER NOT NULL,
    webhook_id TEXT NOT NULL, outcome TEXT NOT NULL, status INTEGER, error TEXT);
CREATE TABLE IF NOT EXISTS dead_letters (
    pos INTEGER PRIMARY KEY, ep INTEGER NOT NULL, dead_at_ms INTEGER NOT NULL,
    webhook_key INTEGER NOT NULL, webhook_id TEXT NOT NULL, event_id TEXT NOT NULL,
    reason TEXT NOT NULL, history BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS dead_letters_by_endpoint ON dead_letters (ep, dead_at_ms, pos);
CREATE INDEX IF NOT EXISTS dead_letters_by_time ON dead_letters (dead_at_ms);
CREATE TABLE IF NOT EXISTS deleted_endpoints (
    endpoint_id TEXT PRIMARY KEY, deleted_at_ms INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS positions (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)) WITHOUT ROWID;
"""

ATTEMPT_COLUMNS = (
    "a.pos, e.endpoint_id, a.at_ms, a.webhook_id, a.event_id, a.attempt, a.duration_ms,"
    " a.outcome, a.status, a.error, a.response_body, a.next_at_ms, a.dead_reason,"
    " a.deferred_because, a.breaker"
)
K = TypeVar("K")


class Rows(Protocol):
    """What a query answers (an sqlite3 or a psycopg cursor)."""

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Database(Protocol):
    """A connection as the shared queries use it: ``?`` placeholders, tuples of values. An
    sqlite3 connection is one; ``pg_store`` adapts a psycopg one."""

    def execute(self, sql: str, args: Any = (), /) -> Rows: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> Any: ...


class StoredAttempt(msgspec.Struct, frozen=True, array_like=True):
    """One attempt of a dead letter's history as the index keeps it: what the dead letter's
    row does not already say (its ids), and at most the start of the last answer."""

    attempt: int
    at_ms: int
    duration_ms: float
    outcome: Outcome
    status: int | None
    error: str | None
    response_body: str | None


_history_encoder = msgspec.msgpack.Encoder()
_history_decoder = msgspec.msgpack.Decoder(list[StoredAttempt])


def encode_history(attempts: Sequence[AttemptRecord]) -> bytes:
    last = len(attempts) - 1
    return _history_encoder.encode(
        [
            StoredAttempt(
                attempt=a.attempt,
                at_ms=a.at_ms,
                duration_ms=a.duration_ms,
                outcome=a.outcome,
                status=a.status,
                error=a.error,
                response_body=_truncated(a.response_body, LETTER_BODY_CHARS) if n == last else None,
            )
            for n, a in enumerate(attempts)
        ]
    )


def _truncated(text: str | None, chars: int) -> str | None:
    return text[:chars] if text is not None else None


_spans_encoder = msgspec.json.Encoder()


# --- identities and positions -------------------------------------------------------------


def position(partition: int, offset: int) -> int:
    """A record's place in its topic as one integer, the same on every replica."""
    return (partition << POSITION_BITS) | offset


def split_position(pos: int) -> tuple[int, int]:
    return pos >> POSITION_BITS, pos & ((1 << POSITION_BITS) - 1)


def text_key(text: str) -> int:
    """A 64-bit key for an id (event or webhook id): an index of integers is a quarter the
    size of one of strings; queries compare the id itself as well."""
    return int.from_bytes(
        hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True
    )


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def outcome_kind(outcome: str, status: int | None) -> str:
    """How an attempt is counted: success, deferred, or the failure's status class (``5xx``)
    or, without a status, its outcome (``timeout``)."""
    if outcome in ("success", "deferred"):
        return outcome
    if status is not None:
        return f"{status // 100}xx"
    return outcome


def duration_bucket(duration_ms: float) -> int:
    if duration_ms <= 0.001:
        return -10 * BUCKETS_PER_DOUBLING
    return math.ceil(math.log2(duration_ms) * BUCKETS_PER_DOUBLING)


def bucket_upper_ms(bucket: int) -> float:
    return float(2 ** (bucket / BUCKETS_PER_DOUBLING))


def percentile_ms(histogram: Sequence[tuple[int, int]], fraction: float) -> float | None:
    """The upper bound of the bucket holding the given fraction of the counts."""
    total = sum(n for _, n in histogram)
    if total == 0:
        return None
    rank = max(1, math.ceil(total * fraction))
    seen = 0
    for bucket, n in sorted(histogram):
        seen += n
        if seen >= rank:
            return round(bucket_upper_ms(bucket), 3)
    return None  # not reached: the counts add up to total


def delivery_state(record: AttemptRecord) -> DeliveryState | None:
    if record.outcome == "success":
        return "delivered"
    if record.dead_letter_reason is not None:
        return "dead"
    if record.next_attempt_at_ms is not None:
        return "waiting"
    return None


def connect(path: Path, cache_kib: int) -> sqlite3.Connection:
    # Autocommit mode: transactions are opened explicitly around each batch. A connection is
    # used by one thread at a time, and closed only once its thread has stopped.
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    # WAL with NORMAL: a crash of the process loses nothing committed, one of the machine at
    # most the last transactions, never the file's integrity (a restart resumes from it); the
    # only fsyncs are at checkpoints.
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute(f"PRAGMA cache_size=-{cache_kib}")
    connection.execute("PRAGMA temp_store=MEMORY")
    return connection


# --- writing --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fetched:
    """A record as read from a topic: where it was, and its value."""

    partition: int
    offset: int
    value: bytes | None


@dataclass(slots=True)
class _Latest:
    at_ms: int
    pos: int
    values: tuple[Any, ...]


def _keep_latest(found: dict[K, _Latest], key: K, candidate: _Latest) -> None:
    current = found.get(key)
    if current is None or (candidate.at_ms, candidate.pos) > (current.at_ms, current.pos):
        found[key] = candidate


@dataclass(slots=True)
class _AttemptBatch:
    """One batch of attempt records, folded in memory before it is written: a busy endpoint's
    hundred records of one minute become one row update of each summary table."""

    rollup_from_ms: int
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    deliveries: dict[tuple[int, int], _Latest] = field(default_factory=dict)
    breakers: dict[int, _Latest] = field(default_factory=dict)
    errors: dict[int, _Latest] = field(default_factory=dict)
    kinds: Counter[tuple[int, int, str]] = field(default_factory=Counter)
    durations: Counter[tuple[int, int, int]] = field(default_factory=Counter)

    def add(self, ep: int, pos: int, record: AttemptRecord) -> None:
        self.rows.append(_attempt_row(pos, ep, record))
        state = delivery_state(record)
        if state is not None:
            latest = _Latest(record.at_ms, pos, (state,))
            _keep_latest(self.deliveries, (ep, text_key(record.webhook_id)), latest)
        if record.breaker is not None:
            _keep_latest(self.breakers, ep, _Latest(record.at_ms, pos, (record.breaker,)))
        if record.outcome not in ("success", "deferred"):
            error = (record.webhook_id, record.outcome, record.status, record.error)
            _keep_latest(self.errors, ep, _Latest(record.at_ms, pos, error))
        if record.at_ms >= self.rollup_from_ms:
            minute = record.at_ms // MINUTE_MS
            self.kinds[(ep, minute, outcome_kind(record.outcome, record.status))] += 1
            if record.outcome != "deferred":
                self.durations[(ep, minute, duration_bucket(record.duration_ms))] += 1

    def write(self, insert: Insert) -> None:
        # Keys in one order: two writers of a shared store (PostgreSQL) never wait on each
        # other's rows in opposite orders.
        insert("attempts", self.rows, "ON CONFLICT DO NOTHING")
        insert(
            "deliveries",
            [(*key, v.at_ms, v.pos, *v.values) for key, v in sorted(self.deliveries.items())],
            "ON CONFLICT (ep, webhook_key) DO UPDATE"
            " SET at_ms = excluded.at_ms, pos = excluded.pos, state = excluded.state"
            " WHERE (excluded.at_ms, excluded.pos) > (deliveries.at_ms, deliveries.pos)",
        )
        insert(
            "breakers",
            [(ep, v.at_ms, v.pos, *v.values) for ep, v in sorted(self.breakers.items())],
            "ON CONFLICT (ep) DO UPDATE"
            " SET at_ms = excluded.at_ms, pos = excluded.pos, state = excluded.state"
            " WHERE (excluded.at_ms, excluded.pos) > (breakers.at_ms, breakers.pos)",
        )
        insert(
            "last_errors",
            [(ep, v.at_ms, v.pos, *v.values) for ep, v in sorted(self.errors.items())],
            "ON CONFLICT (ep) DO UPDATE"
            " SET at_ms = excluded.at_ms, pos = excluded.pos, webhook_id = excluded.webhook_id,"
            " outcome = excluded.outcome, status = excluded.status, error = excluded.error"
            " WHERE (excluded.at_ms, excluded.pos) > (last_errors.at_ms, last_errors.pos)",
        )
        insert(
            "rollups",
            sorted((*key, n) for key, n in self.kinds.items()),
            "ON CONFLICT (ep, minute, kind) DO UPDATE SET n = rollups.n + excluded.n",
        )
        insert(
            "durations",
            sorted((*key, n) for key, n in self.durations.items()),
            "ON CONFLICT (ep, minute, bucket) DO UPDATE SET n = durations.n + excluded.n",
        )


class IndexFull(ClickhookError):
    """A batch did not fit: the index reached its byte budget or its disk is full. Nothing of
    the batch was written."""


class PositionsMoved(ClickhookError):
    """Another writer indexed these partitions since this one last did (a rebalance): the
    batch was not written; seek to the stored positions and go on from there. Raised by the
    shared store (``pg_store``); here so that the log catches it without importing psycopg."""


class IndexFormatChanged(ClickhookError):
    """A file left by a build that wrote another layout: it is built again."""


def is_full(exc: BaseException) -> bool:
    """SQLite's ``SQLITE_FULL`` (its page limit, or the disk), or the disk itself."""
    if isinstance(exc, sqlite3.Error):
        return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC


def failure_reason(exc: BaseException) -> str:
    """How an index failure is counted: ``full``, ``corrupt`` (rebuilt) or ``error``."""
    if isinstance(exc, IndexFull) or is_full(exc):
        return "full"
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return "corrupt" if code in (SQLITE_CORRUPT, SQLITE_NOTADB) else "error"


@dataclass(frozen=True, slots=True)
class Timed:
    """A table whose oldest rows go first when the index is over its budget."""

    table: str
    time_column: str
    key: str
    # In PostgreSQL, the span of time each of its partitions holds (0: not partitioned).
    partition_ms: int = 0


# Attempts by hour, so the byte budget drops an hour at a time; dead letters by day: 30 days
# by hour were 720 partitions, which every query the time cannot narrow plans and locks.
ATTEMPTS_TIMED = Timed("attempts", "at_ms", "pos", HOUR_MS)
LETTERS_TIMED = Timed("dead_letters", "dead_at_ms", "pos", DAY_MS)
# Everything that grows with traffic; rollups and durations are bounded by the 25 h window.
EVICTABLE = (ATTEMPTS_TIMED, LETTERS_TIMED, Timed("deliveries", "at_ms", "ep, webhook_key"))
ENDPOINT_TABLES = (
    "attempts",
    "dead_letters",
    "deliveries",
    "rollups",
    "durations",
    "breakers",
    "last_errors",
)


@dataclass(frozen=True, slots=True)
class Decoded:
    """A readable record of a batch, at its position."""

    pos: int
    record: Any


class IndexWriter:
    """What both stores do with a batch (decode, fold, write in one transaction with the
    positions reached, keep each endpoint's newest rows); the stores differ in how endpoints
    get their keys, how a transaction runs, and how they stay within their bounds. Used by one
    thread only."""

    # Deletes of an endpoint's rows past its newest ``per_endpoint`` (ep, ep, limit).
    attempt_trim: str
    letter_trim: str
    delivery_trim: str

    def __init__(self, db: Database, per_endpoint: int) -> None:
        self._db = db
        self._per_endpoint = per_endpoint
        self._attempt_counts: Counter[int] = Counter()
        self._letter_counts: Counter[int] = Counter()
        self._delivery_counts: Counter[int] = Counter()
        self.unreadable = 0
        # The newest record time the byte budget dropped, as this writer last wrote or read it
        # (``fill.complete_since_ms``); None: it never dropped any.
        self.evicted_through_ms: int | None = None

    # --- what each store does its own way --------------------------------------------------

    def _transaction(self, write: Callable[[], None]) -> None:
        raise NotImplementedError

    def _fitted(self, write: Callable[[], None]) -> None:
        """Write a batch in one transaction (the SQLite store makes room when it is full)."""
        self._transaction(write)

    def _prepare(
        self, endpoints: set[tuple[str, str]], timed: Timed, times: set[int]
    ) -> Callable[[int], bool]:
        """Before a batch's transaction: what it needs in place (endpoint keys, partitions).
        Returns whether a record of a time is kept (in PostgreSQL, not one whose partition
        retention or the budget dropped); asked within the transaction."""
        raise NotImplementedError

    def _endpoint_key(self, endpoint_id: str, account_id: str) -> int | None:
        """The endpoint's key; None for a deleted endpoint, whose records are not kept."""
        raise NotImplementedError

    def _stored_key(self, endpoint_id: str) -> int | None:
        raise NotImplementedError

    def _forget_endpoints(self) -> None:
        """After a purge (or a rolled-back batch): endpoint keys as committed."""
        raise NotImplementedError

    def _count_new(self, eps: Iterable[int]) -> None:
        """Per-endpoint row counts of endpoints not counted yet (the trims work from them)."""

    def _unseen(self, fetched: Iterable[Fetched], positions: Positions) -> list[Fetched]:
        """The records not indexed yet (a shared store skips what another writer did)."""
        return list(fetched)

    def _insert(self, table: str, rows: list[tuple[Any, ...]], on_conflict: str) -> None:
        """A batch's rows into ``table``, in their order: one statement a row, which SQLite
        runs in process (the PostgreSQL store copies them in instead)."""
        if rows:
            marks = ",".join("?" * len(rows[0]))
            self._db.executemany(f"INSERT INTO {table} VALUES ({marks}) {on_conflict}", rows)  # noqa: S608 - our own tables and clauses

    def _save_positions(self, positions: Positions) -> None:
        self._db.executemany(
            "INSERT INTO positions VALUES (?,?,?) ON CONFLICT (topic, partition)"
            " DO UPDATE SET next_offset = excluded.next_offset",
            [(topic, partition, offset) for (topic, partition), offset in positions],
        )

    def _mark_evicted(self, through_ms: int) -> None:
        """In the transaction that drops rows for the budget: the newest record time dropped
        (never moved back; another writer of a shared store may have dropped newer ones)."""
        self._db.execute(
            "INSERT INTO positions VALUES (?, 0, ?) ON CONFLICT (topic, partition) DO UPDATE"
            " SET next_offset = CASE WHEN excluded.next_offset > positions.next_offset"
            " THEN excluded.next_offset ELSE positions.next_offset END",
            (EVICTED_STREAM, through_ms),
        )

    def _evicted(self, through_ms: int) -> None:
        """Once the transaction that dropped records up to ``through_ms`` is committed."""
        self.evicted_through_ms = max(through_ms, self.evicted_through_ms or through_ms)

    def _forget_old_evictions(self, now_ms: int) -> None:
        """Within ``expire``: once every topic's retention has passed what the budget dropped,
        nothing the topics keep is missing."""
        cutoff = now_ms - DEAD_LETTERS_KEPT_MS
        self._db.execute(
            "DELETE FROM positions WHERE topic = ? AND next_offset < ?", (EVICTED_STREAM, cutoff)
        )
        if self.evicted_through_ms is not None and self.evicted_through_ms < cutoff:
            self.evicted_through_ms = None

    def keep_within_budget(self) -> None:
        raise NotImplementedError

    def expire(self, now_ms: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # --- shared -----------------------------------------------------------------------------

    def positions(self) -> dict[tuple[str, int], int]:
        """Where each topic partition's next record is, as of the last batch written."""
        rows = self._db.execute("SELECT topic, partition, next_offset FROM positions")
        return {(topic, partition): offset for topic, partition, offset in rows.fetchall()}

    def save_positions(self, positions: Positions) -> None:
        """Positions on their own, in one transaction: where a fresh index starts following
        the topics and filling their history (``fill.py``), before it reads a record."""
        rows = list(positions)
        self._transaction(lambda: self._save_positions(rows))

    def purge_endpoints(
        self, endpoint_ids: Iterable[str], now_ms: int, positions: Positions = ()
    ) -> None:
        """Forget deleted endpoints (their tombstones in ``webhook.endpoints``): every row, and
        every record of theirs still to come (a rebuild reads their history again)."""
        ids = list(endpoint_ids)

        def write() -> None:
            for endpoint_id in ids:
                key = self._stored_key(endpoint_id)
                if key is not None:
                    for table in ENDPOINT_TABLES:
                        self._db.execute(f"DELETE FROM {table} WHERE ep = ?", (key,))  # noqa: S608 - constant table names
                    self._db.execute("DELETE FROM endpoints WHERE key = ?", (key,))
                self._db.execute(
                    "INSERT INTO deleted_endpoints VALUES (?, ?) ON CONFLICT (endpoint_id)"
                    " DO UPDATE SET deleted_at_ms = excluded.deleted_at_ms",
                    (endpoint_id, now_ms),
                )
            self._save_positions(positions)

        self._transaction(write)
        self._forget_endpoints()

    def add_attempts(
        self, fetched: Iterable[Fetched], now_ms: int, positions: Positions = ()
    ) -> int:
        """Index attempt records; returns how many. Unreadable ones are counted and left in
        the topic (they are never deleted from it). Raises ``IndexFull`` (nothing written)
        when the batch does not fit."""
        positions = list(positions)
        decoded = self._decoded(self._unseen(fetched, positions), decode_attempt)
        endpoints = {(d.record.endpoint_id, d.record.account_id) for d in decoded}
        kept = self._prepare(endpoints, ATTEMPTS_TIMED, {d.record.at_ms for d in decoded})
        batches: list[_AttemptBatch] = []

        def write() -> None:
            batch = _AttemptBatch(rollup_from_ms=now_ms - ROLLUPS_KEPT_MS)
            for item in decoded:
                record: AttemptRecord = item.record
                ep = self._endpoint_key(record.endpoint_id, record.account_id)
                if ep is not None and kept(record.at_ms):
                    batch.add(ep, item.pos, record)
            batch.write(self._insert)
            self._save_positions(positions)
            batches.clear()
            batches.append(batch)

        self._fitted(write)
        (batch,) = batches
        self._count_new({row[1] for row in batch.rows} | {ep for ep, _ in batch.deliveries})
        for row in batch.rows:
            self._attempt_counts[row[1]] += 1
        for ep, _ in batch.deliveries:
            self._delivery_counts[ep] += 1  # at most: some only updated a row
        self._trim(self._attempt_counts, self.attempt_trim)
        self._trim(self._delivery_counts, self.delivery_trim)
        self.keep_within_budget()
        return len(batch.rows)

    def add_dead_letters(self, fetched: Iterable[Fetched], positions: Positions = ()) -> int:
        positions = list(positions)
        decoded = self._decoded(self._unseen(fetched, positions), _indexed_letter)
        endpoints = {(d.record.endpoint_id, d.record.account_id) for d in decoded}
        kept = self._prepare(endpoints, LETTERS_TIMED, {d.record.dead_at_ms for d in decoded})
        rows: list[tuple[Any, ...]] = []

        def write() -> None:
            rows.clear()
            for item in decoded:
                letter: IndexedLetter = item.record
                ep = self._endpoint_key(letter.endpoint_id, letter.account_id)
                if ep is not None and kept(letter.dead_at_ms):
                    rows.append(_letter_row(item.pos, ep, letter))
            self._insert("dead_letters", rows, "ON CONFLICT DO NOTHING")
            self._save_positions(positions)

        self._fitted(write)
        self._count_new({row[1] for row in rows})
        for row in rows:
            self._letter_counts[row[1]] += 1
        self._trim(self._letter_counts, self.letter_trim)
        self.keep_within_budget()
        return len(rows)

    def _decoded(self, fetched: Iterable[Fetched], decode: Callable[[bytes], Any]) -> list[Decoded]:
        found: list[Decoded] = []
        for item in fetched:
            record = self._decode(item, decode)
            if record is not None:
                found.append(Decoded(position(item.partition, item.offset), record))
        return found

    def _decode(self, item: Fetched, decode: Callable[[bytes], Any]) -> Any:
        if item.value is None:
            return None
        try:
            return decode(item.value)
        except (msgspec.DecodeError, UnicodeDecodeError):
            self.unreadable += 1
            metrics.DELIVERY_LOG_UNREADABLE.inc()
            return None

    def _trim(self, counts: Counter[int], trim: str) -> None:
        """Keep each endpoint's newest ``per_endpoint`` rows (``trim`` deletes the rest)."""
        limit = self._per_endpoint
        over = [ep for ep, n in counts.items() if n > limit * (1 + TRIM_SLACK)]
        for ep in over:
            self._db.execute(trim, (ep, ep, limit))  # one statement: its own transaction
            counts[ep] = limit


def _every(_: int) -> bool:
    return True


class LogWriter(IndexWriter):
    """The embedded index: an SQLite file within a byte budget."""

    attempt_trim = (
        "DELETE FROM attempts WHERE ep = ? AND pos IN (SELECT pos FROM attempts WHERE ep = ?"
        " ORDER BY at_ms DESC, pos DESC LIMIT -1 OFFSET ?)"
    )
    letter_trim = (
        "DELETE FROM dead_letters WHERE ep = ? AND pos IN (SELECT pos FROM dead_letters"
        " WHERE ep = ? ORDER BY dead_at_ms DESC, pos DESC LIMIT -1 OFFSET ?)"
    )
    # Deliveries still waiting in a retry tier are all kept (``waiting`` counts them); the ones
    # that ended only matter for the endpoint's newest dead letters.
    delivery_trim = (
        "DELETE FROM deliveries WHERE ep = ? AND state != 'waiting' AND webhook_key IN"
        " (SELECT webhook_key FROM deliveries WHERE ep = ? AND state != 'waiting'"
        " ORDER BY at_ms DESC LIMIT -1 OFFSET ?)"
    )

    def __init__(self, path: Path, per_endpoint: int, max_bytes: int) -> None:
        db = connect(path, WRITER_CACHE_KIB)
        super().__init__(db, per_endpoint)
        self._sqlite = db
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version not in (0, INDEX_VERSION):
            db.close()
            raise IndexFormatChanged(f"index version {version}, this build writes {INDEX_VERSION}")
        db.executescript(SCHEMA)
        db.execute(f"PRAGMA user_version={INDEX_VERSION}")
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
        # The hard limit: SQLite refuses to grow the file past it (SQLITE_FULL), so the file
        # never outgrows the budget whatever the eviction below does.
        self.max_pages = max(MIN_PAGES, max_bytes // page_size)
        db.execute(f"PRAGMA max_page_count={self.max_pages}")
        # 0: the WAL file is cut back to the first commit each time the WAL begins again after a
        # checkpoint, so its size is what was written since, not the most it ever held
        # (https://www.sqlite.org/pragma.html#pragma_journal_size_limit). Until the next commit
        # it keeps the frames just checkpointed: an over-estimate, which only checkpoints sooner.
        db.execute("PRAGMA journal_size_limit=0")
        db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_BYTES // page_size}")
        self._wal = path.with_name(path.name + "-wal")
        # The most WAL a batch's commit wrote on this connection, as measured (``_fitted``).
        self._largest_batch = 0
        self.page_size: int = page_size
        self._endpoint_keys: dict[str, int] = {}
        self._next_key = 1
        self._deleted: set[str] = set()
        self._forget_endpoints()
        self._recount()
        self.evicted_through_ms = evicted_through(self.positions())
        self._checkpoint()  # what a crash left: the first batch's size is not known yet

    def close(self) -> None:
        self._sqlite.close()

    def _checkpoint(self) -> None:
        """A passive checkpoint (it never waits for readers), so that the next write begins
        the WAL again instead of adding to what it holds. Run before writes that may take more
        than half of ``WAL_LIMIT_BYTES``: a purge rewrites a page for nearly each row of the
        endpoint (its rows lie among other endpoints'), some 50 MB at 10,000 attempts; an
        eviction round's rows are all over the endpoint, event and delivery indexes, some 37 MB
        at a million attempts."""
        self._sqlite.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def purge_endpoints(
        self, endpoint_ids: Iterable[str], now_ms: int, positions: Positions = ()
    ) -> None:
        """As the base's, on a checkpointed WAL (``_checkpoint``)."""
        self._checkpoint()
        super().purge_endpoints(endpoint_ids, now_ms, positions)

    # --- endpoints ---------------------------------------------------------------------------

    def _forget_endpoints(self) -> None:
        """The endpoint keys as committed (again after a batch was rolled back)."""
        rows = self._db.execute("SELECT endpoint_id, key FROM endpoints").fetchall()
        self._endpoint_keys = dict(rows)
        self._next_key = max(self._endpoint_keys.values(), default=0) + 1
        deleted = self._db.execute("SELECT endpoint_id FROM deleted_endpoints").fetchall()
        self._deleted = {endpoint_id for (endpoint_id,) in deleted}

    def _prepare(
        self, endpoints: set[tuple[str, str]], timed: Timed, times: set[int]
    ) -> Callable[[int], bool]:
        return _every  # every row goes in; ``expire`` drops what retention no longer covers

    def _stored_key(self, endpoint_id: str) -> int | None:
        return self._endpoint_keys.get(endpoint_id)

    def _endpoint_key(self, endpoint_id: str, account_id: str) -> int | None:
        if endpoint_id in self._deleted:
            return None
        key = self._endpoint_keys.get(endpoint_id)
        if key is None:
            key = self._next_key
            self._next_key += 1
            self._db.execute(
                "INSERT INTO endpoints (key, endpoint_id, account_id) VALUES (?, ?, ?)",
                (key, endpoint_id, account_id),
            )
            self._endpoint_keys[endpoint_id] = key
        return key

    # --- batches -----------------------------------------------------------------------------

    def _fitted(self, write: Callable[[], None]) -> None:
        """Write a batch; when it does not fit, evict the oldest and try once more. Below the
        budget the disk itself may be full: then what the index holds now is what fits.

        The WAL checkpoints at ``WAL_CHECKPOINT_BYTES``, so a batch may land on a WAL holding
        nearly that much; on a big index a batch of 5,000 writes 17-26 MB or more (a page per
        endpoint and per random key it touches). When what the WAL holds and the largest batch
        so far would pass ``WAL_LIMIT_BYTES``, the batch begins a checkpointed WAL instead
        (a passive checkpoint: it never waits for readers; one reading through the commit keeps
        the WAL from beginning again, and the commit is then appended)."""
        before = self._wal_state()
        if before[0] + self._largest_batch > WAL_LIMIT_BYTES:
            self._checkpoint()
        try:
            self._transaction(write)
        except IndexFull:
            budget = self.max_pages * self.page_size
            self.make_room(int(BUDGET_LOW * min(budget, self.used_bytes())))
            self._transaction(write)  # IndexFull again: the caller backs off
            return  # the rounds of eviction in between: no measure of the batch
        self._largest_batch = max(self._largest_batch, self._wal_written(before))

    def _wal_state(self) -> tuple[int, bytes]:
        """The WAL file's size, and what in its header changes each time it begins again."""
        try:
            with self._wal.open("rb") as wal:
                return os.fstat(wal.fileno()).st_size, wal.read(WAL_HEADER_BYTES)[WAL_GENERATION]
        except FileNotFoundError:
            return 0, b""

    def _wal_written(self, before: tuple[int, bytes]) -> int:
        """Bytes of WAL the last commit wrote: the file's growth, or, when the WAL began again
        with it (its header changed), the whole file (cut back to it: journal_size_limit 0)."""
        size, generation = self._wal_state()
        return size if generation != before[1] else size - before[0]

    def _transaction(self, write: Callable[[], None]) -> None:
        """One transaction; on any failure nothing of it stays, in the file or in memory."""
        db = self._sqlite
        db.execute("BEGIN")
        try:
            write()
            db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._forget_endpoints()
            if is_full(exc):
                raise IndexFull(str(exc)) from exc
            raise

    def _recount(self) -> None:
        """The per-endpoint row counts the trims work from, after rows went another way."""

        def counted(sql: str) -> Counter[int]:
            return Counter(dict(self._db.execute(sql).fetchall()))

        self._attempt_counts = counted("SELECT ep, COUNT(*) FROM attempts GROUP BY ep")
        self._letter_counts = counted("SELECT ep, COUNT(*) FROM dead_letters GROUP BY ep")
        self._delivery_counts = counted("SELECT ep, COUNT(*) FROM deliveries GROUP BY ep")

    # --- the byte budget ---------------------------------------------------------------------

    def used_bytes(self) -> int:
        """Bytes of the file holding rows (free pages are reused before the file grows)."""
        (pages,) = self._db.execute("PRAGMA page_count").fetchone()
        (free,) = self._db.execute("PRAGMA freelist_count").fetchone()
        used = (pages - free) * self.page_size
        metrics.DELIVERY_LOG_INDEX_BYTES.set(used)
        return int(used)

    def keep_within_budget(self) -> None:
        """Past ``BUDGET_HIGH`` of the budget, evict the oldest history down to ``BUDGET_LOW``:
        room for the next batches before SQLite would refuse one."""
        if self.used_bytes() > BUDGET_HIGH * self.max_pages * self.page_size:
            self.make_room(int(BUDGET_LOW * self.max_pages * self.page_size))

    def make_room(self, target_bytes: int) -> int:
        """Evict the oldest rows across endpoints until at most ``target_bytes`` hold rows;
        returns how many rows went."""
        evicted = 0
        if self.used_bytes() > target_bytes:
            self._checkpoint()  # later rounds follow the autocheckpoint a big one crosses
        while self.used_bytes() > target_bytes:
            gone = self._evict_oldest(self._eviction_round())
            if gone == 0:
                break  # nothing left to evict: the rest is endpoints and the 25 h figures
            evicted += gone
        if evicted:
            metrics.DELIVERY_LOG_EVICTED.inc(evicted)
            log.info("delivery_log_evicted", rows=evicted, used_bytes=self.used_bytes())
            self._recount()
        return evicted

    def _eviction_round(self) -> int:
        """Rows per table to evict in one round, from the counts kept in memory."""
        counts = (self._attempt_counts, self._letter_counts, self._delivery_counts)
        held = sum(sum(c.values()) for c in counts)
        return max(1, min(EVICT_ROWS, int(held * EVICT_SHARE)))

    def _evict_oldest(self, rows: int) -> int:
        """Up to ``rows`` of each table, all older than the ``rows``-th oldest of any: the
        oldest history goes first, whichever endpoint and table it is in."""
        cutoffs = [c for c in (self._cutoff(t, rows) for t in EVICTABLE) if c is not None]
        if not cutoffs:
            return 0
        cutoff = min(cutoffs)
        before = self._sqlite.total_changes

        def write() -> None:
            for timed in EVICTABLE:
                self._db.execute(
                    f"DELETE FROM {timed.table} WHERE ({timed.key}) IN (SELECT {timed.key}"  # noqa: S608 - constants
                    f" FROM {timed.table} WHERE {timed.time_column} <= ?"
                    f" ORDER BY {timed.time_column} LIMIT ?)",
                    (cutoff, rows),
                )
            # Every row older than the cutoff is gone, of every table (each has fewer than
            # ``rows`` of them); of its time, maybe not all.
            self._mark_evicted(cutoff)

        self._transaction(write)
        self._evicted(cutoff)
        return self._sqlite.total_changes - before

    def _cutoff(self, timed: Timed, rows: int) -> int | None:
        """The time of the table's ``rows``-th oldest row (its newest when it has fewer)."""
        column, table = timed.time_column, timed.table
        found = self._db.execute(
            f"SELECT {column} FROM {table} ORDER BY {column} LIMIT 1 OFFSET ?",  # noqa: S608 - constants
            (rows - 1,),
        ).fetchone()
        if found is None:
            found = self._db.execute(f"SELECT MAX({column}) FROM {table}").fetchone()  # noqa: S608 - constants
        return None if found[0] is None else int(found[0])

    def expire(self, now_ms: int) -> None:
        """Drop what the topics' retention and the 24 h window no longer cover."""
        db = self._db
        first_minute = (now_ms - ROLLUPS_KEPT_MS) // MINUTE_MS

        def write() -> None:
            db.execute("DELETE FROM attempts WHERE at_ms < ?", (now_ms - ATTEMPTS_KEPT_MS,))
            db.execute("DELETE FROM deliveries WHERE at_ms < ?", (now_ms - ATTEMPTS_KEPT_MS,))
            cutoff = now_ms - DEAD_LETTERS_KEPT_MS
            db.execute("DELETE FROM dead_letters WHERE dead_at_ms < ?", (cutoff,))
            # No record of an endpoint deleted before that is left in any topic.
            db.execute("DELETE FROM deleted_endpoints WHERE deleted_at_ms < ?", (cutoff,))
            db.execute("DELETE FROM rollups WHERE minute < ?", (first_minute,))
            db.execute("DELETE FROM durations WHERE minute < ?", (first_minute,))
            self._forget_old_evictions(now_ms)

        self._transaction(write)
        self._recount()
        self.used_bytes()


class IndexedLetter(NamedTuple):
    """Of a dead letter, what its row holds, taken out as soon as the letter is decoded: the
    letter itself (its event, its history's records) is then freed at once. A batch's thousand
    letters kept whole until its transaction were walked by every young collection of the
    cyclic GC until promoted: 30-33 us of the writer a letter against 19-22 us at d7d6b0b,
    19 us with the GC off (docs/performance-history.md, "The replay's duration")."""

    endpoint_id: str
    account_id: str
    dead_at_ms: int
    webhook_id: str
    event_id: str
    reason: str
    history: bytes


def _indexed_letter(raw: bytes) -> IndexedLetter:
    letter = decode_dead_letter(raw)
    envelope = letter.envelope
    return IndexedLetter(
        envelope.endpoint_id,
        envelope.account_id,
        letter.dead_at_ms,
        envelope.webhook_id,
        envelope.event_id,
        letter.reason,
        encode_history(envelope.attempts),
    )


def _letter_row(pos: int, ep: int, letter: IndexedLetter) -> tuple[Any, ...]:
    return (
        pos,
        ep,
        letter.dead_at_ms,
        text_key(letter.webhook_id),
        letter.webhook_id,
        letter.event_id,
        letter.reason,
        letter.history,
    )


def _attempt_row(pos: int, ep: int, record: AttemptRecord) -> tuple[Any, ...]:
    return (
        pos,
        ep,
        record.at_ms,
        text_key(record.event_id),
        record.webhook_id,
        record.event_id,
        record.attempt,
        record.duration_ms,
        record.outcome,
        record.status,
        record.error,
        _truncated(record.response_body, RESPONSE_BODY_CHARS),
        record.next_attempt_at_ms,
        record.dead_letter_reason,
        record.deferred_because,
        record.breaker,
    )


# --- reading --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttemptFilter:
    """What ``GET …/attempts`` asks for; ``before`` is the cursor: (at_ms, pos) of the last
    attempt of the previous page."""

    status: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    event_id: str | None = None
    before: tuple[int, int] | None = None


def _status_condition(status: str) -> tuple[str, tuple[Any, ...]]:
    if status == "success":
        return "a.outcome = 'success'", ()
    if status == "deferred":
        return "a.outcome = 'deferred'", ()
    if status == "failure":
        return "a.outcome NOT IN ('success', 'deferred')", ()
    if status.endswith("xx"):
        low = int(status[0]) * 100
        return "a.status BETWEEN ? AND ?", (low, low + 99)
    return "a.status = ?", (int(status),)


def _attempt(row: tuple[Any, ...]) -> Attempt:
    pos, endpoint_id, at_ms, webhook_id, event_id, number, duration_ms = row[:7]
    outcome, status, error, response_body, next_at_ms, dead_reason, deferred, breaker = row[7:]
    return Attempt(
        id=attempt_id(pos),
        webhook_id=webhook_id,
        event_id=event_id,
        endpoint_id=endpoint_id,
        attempt=number,
        at=ms_to_datetime(at_ms),
        outcome=outcome,
        status=status,
        duration_ms=duration_ms,
        error=error,
        response_body=response_body,
        next_attempt_at=ms_to_datetime(next_at_ms) if next_at_ms is not None else None,
        dead_letter_reason=dead_reason,
        deferred_because=deferred,
        breaker=breaker,
    )


ATTEMPT_ID_PREFIX = "att_"
DEAD_LETTER_ID_PREFIX = "dlq_"


def attempt_id(pos: int) -> str:
    partition, offset = split_position(pos)
    return f"{ATTEMPT_ID_PREFIX}{partition}_{offset}"


def dead_letter_id(pos: int) -> str:
    partition, offset = split_position(pos)
    return f"{DEAD_LETTER_ID_PREFIX}{partition}_{offset}"


def parse_record_id(text: str, prefix: str) -> tuple[int, int] | None:
    """(partition, offset) of an ``att_…``/``dlq_…`` id; None when it is not one."""
    partition, sep, offset = text.removeprefix(prefix).partition("_")
    if not text.startswith(prefix) or not sep or not partition.isdigit() or not offset.isdigit():
        return None
    if int(partition) >= 2**23 or int(offset) >= 2**POSITION_BITS:
        return None
    return int(partition), int(offset)


def _jobs_condition(jobs: Sequence[ReplayJob], spans_covering: str) -> tuple[str, tuple[Any, ...]]:
    """SQL true for a dead letter that one of ``jobs`` replayed (``ReplayJob.covers``).

    The jobs travel as one JSON array in one bound variable, tested by the store's own
    ``spans_covering`` (each database spells JSON tables its own way): a variable per job would
    fail past SQLite's limit (32,766) on an endpoint replayed that many times."""
    if not jobs:
        return "FALSE", ()
    spans = [
        (
            position(job.dlq_partition, 0),
            position(job.dlq_partition, job.position),
            job.since_ms,
            job.until_ms,
        )
        for job in jobs
    ]
    return spans_covering, (_spans_encoder.encode(spans).decode(),)


def covering_job(jobs: Sequence[ReplayJob], pos: int, dead_at_ms: int) -> ReplayJob | None:
    partition, offset = split_position(pos)
    for job in jobs:
        if job.dlq_partition == partition and job.covers(offset, dead_at_ms):
            return job
    return None


@dataclass(frozen=True, slots=True)
class Page:
    """A query of one table's rows newest first (by time, then position): ``select`` (its
    table under ``alias``) where every condition holds; all its rows are in
    ``[since_ms, until_ms)`` (None: unbounded)."""

    select: str
    timed: Timed
    alias: str
    conditions: list[str]
    args: list[Any]
    since_ms: int | None = None
    until_ms: int | None = None

    def sql(self, *more: str) -> str:
        """The query, with ``more`` conditions, its limit the last placeholder."""
        column, pos = f"{self.alias}.{self.timed.time_column}", f"{self.alias}.{self.timed.key}"
        return (
            f"{self.select} WHERE {' AND '.join([*self.conditions, *more])}"
            f" ORDER BY {column} DESC, {pos} DESC LIMIT ?"
        )


def _earliest(*times: int | None) -> int | None:
    return min((t for t in times if t is not None), default=None)


class IndexQueries:
    """Queries on the index, the same SQL on both stores; every method runs in a reader
    thread, on that thread's connection (``_db``)."""

    # True for a dead letter ``d`` inside one of the spans [first pos, end pos, since ms,
    # until ms] of the JSON array bound to its one placeholder (``_jobs_condition``).
    SPANS_COVERING = (
        "EXISTS (SELECT 1 FROM json_each(?) j"
        " WHERE d.pos >= json_extract(j.value, '$[0]') AND d.pos < json_extract(j.value, '$[1]')"
        " AND d.dead_at_ms >= json_extract(j.value, '$[2]')"
        " AND d.dead_at_ms < json_extract(j.value, '$[3]'))"
    )

    def _db(self) -> Database:
        raise NotImplementedError

    def close_all(self) -> None:
        """Once no reader thread runs any more."""
        raise NotImplementedError

    def positions(self) -> dict[tuple[str, int], int]:
        """Where the writers have got to in each topic partition."""
        rows = self._db().execute("SELECT topic, partition, next_offset FROM positions")
        return {(topic, partition): offset for topic, partition, offset in rows.fetchall()}

    def _newest(self, page: Page, limit: int) -> list[Any]:
        """The first ``limit`` rows of ``page``, newest first."""
        return self._db().execute(page.sql(), (*page.args, limit)).fetchall()

    def _endpoint_key(self, endpoint_id: str) -> int | None:
        row = (
            self._db()
            .execute("SELECT key FROM endpoints WHERE endpoint_id = ?", (endpoint_id,))
            .fetchone()
        )
        return None if row is None else int(row[0])

    def attempts(self, endpoint_id: str, where: AttemptFilter, limit: int) -> list[Attempt]:
        """The endpoint's attempts, newest first; ``limit`` of them at most."""
        ep = self._endpoint_key(endpoint_id)
        if ep is None:
            return []
        conditions = ["a.ep = ?"]
        args: list[Any] = [ep]
        if where.since_ms is not None:
            conditions.append("a.at_ms >= ?")
            args.append(where.since_ms)
        if where.until_ms is not None:
            conditions.append("a.at_ms < ?")
            args.append(where.until_ms)
        if where.before is not None:
            # The first term bounds the index range; the second breaks ties on the position.
            conditions.append("a.at_ms <= ? AND (a.at_ms, a.pos) < (?, ?)")
            args += [where.before[0], *where.before]
        if where.event_id is not None:
            conditions.append("a.event_key = ? AND a.event_id = ?")
            args += [text_key(where.event_id), where.event_id]
        if where.status is not None:
            condition, values = _status_condition(where.status)
            conditions.append(condition)
            args += values
        page = Page(
            f"SELECT {ATTEMPT_COLUMNS} FROM attempts a JOIN endpoints e ON e.key = a.ep",  # noqa: S608 - constant columns
            ATTEMPTS_TIMED,
            "a",
            conditions,
            args,
            since_ms=where.since_ms,
            until_ms=_earliest(
                where.until_ms, None if where.before is None else where.before[0] + 1
            ),
        )
        return [_attempt(row) for row in self._newest(page, limit)]

    def attempt(self, endpoint_id: str, pos: int) -> Attempt | None:
        row = (
            self._db()
            .execute(
                f"SELECT {ATTEMPT_COLUMNS} FROM attempts a JOIN endpoints e ON e.key = a.ep"  # noqa: S608 - constant columns
                " WHERE a.pos = ? AND e.endpoint_id = ?",
                (pos, endpoint_id),
            )
            .fetchone()
        )
        return None if row is None else _attempt(row)

    def event_attempts(
        self, event_id: str, account_id: str | None, before: tuple[int, int] | None, limit: int
    ) -> list[Attempt]:
        """One event's attempts across endpoints (of one account, unless None: admin)."""
        conditions = ["a.event_key = ?", "a.event_id = ?"]
        args: list[Any] = [text_key(event_id), event_id]
        if account_id is not None:
            conditions.append("e.account_id = ?")
            args.append(account_id)
        if before is not None:
            conditions.append("(a.at_ms, a.pos) < (?, ?)")
            args += before
        sql = (
            f"SELECT {ATTEMPT_COLUMNS} FROM attempts a JOIN endpoints e ON e.key = a.ep"  # noqa: S608 - conditions are constants, values bound
            f" WHERE {' AND '.join(conditions)} ORDER BY a.at_ms DESC, a.pos DESC LIMIT ?"
        )
        return [_attempt(row) for row in self._db().execute(sql, (*args, limit)).fetchall()]

    def window(self, ep: int, since_ms: int) -> WindowStats:
        db = self._db()
        first_minute = since_ms // MINUTE_MS
        kinds = dict(
            db.execute(
                "SELECT kind, CAST(SUM(n) AS BIGINT) FROM rollups"
                " WHERE ep = ? AND minute >= ? GROUP BY kind",
                (ep, first_minute),
            ).fetchall()
        )
        histogram = db.execute(
            "SELECT bucket, CAST(SUM(n) AS BIGINT) FROM durations"
            " WHERE ep = ? AND minute >= ? GROUP BY bucket",
            (ep, first_minute),
        ).fetchall()
        successes = kinds.pop("success", 0)
        deferred = kinds.pop("deferred", 0)
        failed = sum(kinds.values())
        attempts = successes + failed
        return WindowStats(
            attempts=attempts,
            successes=successes,
            failures=dict(sorted(kinds.items())),
            deferred=deferred,
            success_rate=round(successes / attempts, 4) if attempts else None,
            duration=Durations(
                p50_ms=percentile_ms(histogram, 0.5), p99_ms=percentile_ms(histogram, 0.99)
            ),
        )

    def health(
        self, endpoint_id: str, jobs: Sequence[ReplayJob], now_ms: int
    ) -> tuple[WindowStats, WindowStats, DeliverySummary]:
        """The last hour's and day's figures, and the endpoint's state now."""
        ep = self._endpoint_key(endpoint_id)
        if ep is None:
            ep = -1  # nothing indexed yet: every figure is zero
        last_hour = self.window(ep, now_ms - HOUR_MS + MINUTE_MS)
        last_day = self.window(ep, now_ms - DAY_MS + MINUTE_MS)
        db = self._db()
        breaker = db.execute("SELECT state FROM breakers WHERE ep = ?", (ep,)).fetchone()
        (waiting,) = db.execute(
            "SELECT COUNT(*) FROM deliveries WHERE ep = ? AND state = 'waiting'", (ep,)
        ).fetchone()
        replayed, args = _jobs_condition(jobs, self.SPANS_COVERING)
        (dead_open,) = db.execute(
            f"SELECT COUNT(*) FROM dead_letters d WHERE d.ep = ? AND NOT {replayed}",  # noqa: S608 - built from constants, values bound
            (ep, *args),
        ).fetchone()
        summary = DeliverySummary(
            attempts_24h=last_day.attempts,
            success_rate_24h=last_day.success_rate,
            breaker=breaker[0] if breaker else None,
            waiting=waiting,
            dead_letters_open=dead_open,
            last_error=self._last_error(ep),
        )
        return last_hour, last_day, summary

    def _last_error(self, ep: int) -> LastError | None:
        """The endpoint's latest failed attempt, and when it recovered: the first success
        after it. ``last_errors`` holds the latest failure, so any success after it means the
        latest attempt succeeded."""
        db = self._db()
        error = db.execute(
            "SELECT at_ms, pos, webhook_id, outcome, status, error FROM last_errors WHERE ep = ?",
            (ep,),
        ).fetchone()
        if error is None:
            return None
        at_ms, pos = error[0], error[1]
        # The first term bounds the index range (ep, at_ms, pos); the second breaks ties.
        recovered = db.execute(
            "SELECT at_ms FROM attempts WHERE ep = ? AND at_ms >= ? AND (at_ms, pos) > (?, ?)"
            " AND outcome = 'success' ORDER BY at_ms, pos LIMIT 1",
            (ep, at_ms, at_ms, pos),
        ).fetchone()
        return LastError(
            at=ms_to_datetime(at_ms),
            webhook_id=error[2],
            outcome=error[3],
            status=error[4],
            error=error[5],
            recovered_at=None if recovered is None else ms_to_datetime(recovered[0]),
        )

    def dead_letters(
        self,
        endpoint_id: str,
        jobs: Sequence[ReplayJob],
        before: tuple[int, int] | None,
        limit: int,
    ) -> list[tuple[DeadLetterView, int, int]]:
        """The endpoint's dead letters, newest first, each with (dead_at_ms, pos)."""
        ep = self._endpoint_key(endpoint_id)
        if ep is None:
            return []
        conditions = ["d.ep = ?"]
        args: list[Any] = [ep]
        if before is not None:
            conditions.append("d.dead_at_ms <= ? AND (d.dead_at_ms, d.pos) < (?, ?)")
            args += [before[0], *before]
        page = Page(
            "SELECT d.pos, d.dead_at_ms, d.webhook_key, d.webhook_id, d.event_id, d.reason,"
            " d.history, s.state, s.at_ms FROM dead_letters d LEFT JOIN deliveries s"
            " ON s.ep = d.ep AND s.webhook_key = d.webhook_key",
            LETTERS_TIMED,
            "d",
            conditions,
            args,
            until_ms=None if before is None else before[0] + 1,
        )
        rows = self._newest(page, limit)
        found: list[tuple[DeadLetterView, int, int]] = []
        for pos, dead_at_ms, _, webhook_id, event_id, reason, history, state, state_at in rows:
            job = covering_job(jobs, pos, dead_at_ms)
            later: DeliveryState = state if state is not None and state_at > dead_at_ms else "dead"
            stored = _history_decoder.decode(history)
            answers = self._answers(ep, event_id, webhook_id, stored)
            view = DeadLetterView(
                id=dead_letter_id(pos),
                webhook_id=webhook_id,
                event_id=event_id,
                reason=reason,
                dead_at=ms_to_datetime(dead_at_ms),
                attempts=[_history(a, answers) for a in stored],
                replayed=job is not None,
                replay_id=job.id if job is not None else None,
                delivery=later,
            )
            found.append((view, dead_at_ms, pos))
        return found

    def _answers(
        self, ep: int, event_id: str, webhook_id: str, history: Sequence[StoredAttempt]
    ) -> dict[int, str]:
        """What the receiver answered to each attempt of a delivery's ``history``, from the
        attempts rows still indexed: a dead letter does not keep its own copy (see
        ``encode_history``). Found by the event's index (``_answer_span``: and, in PostgreSQL,
        within the history's span of time)."""
        if not history:
            return {}
        span, bounds = self._answer_span(history)
        rows = self._db().execute(
            "SELECT attempt, response_body FROM attempts WHERE event_key = ? AND ep = ?"  # noqa: S608 - constant conditions, values bound
            f" AND webhook_id = ?{span} AND outcome != 'deferred' AND response_body IS NOT NULL",
            (text_key(event_id), ep, webhook_id, *bounds),
        )
        return dict(rows.fetchall())

    def _answer_span(self, history: Sequence[StoredAttempt]) -> tuple[str, tuple[int, ...]]:
        """More conditions of ``_answers`` and their values: none in SQLite. With bounds on
        ``at_ms``, SQLite's planner (no statistics) takes the endpoint's index over the
        event's and reads up to all of a busy endpoint's rows for each dead letter."""
        return "", ()


class LogReader(IndexQueries):
    """The SQLite index's queries: one read-only connection per reader thread."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _db(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "db", None)
        if connection is None:
            connection = connect(self._path, READER_CACHE_KIB)
            connection.execute("PRAGMA query_only=1")
            self._local.db = connection
            with self._lock:
                self._opened.append(connection)
        return connection

    def close_all(self) -> None:
        with self._lock:
            for connection in self._opened:
                connection.close()
            self._opened.clear()


def _history(stored: StoredAttempt, answers: dict[int, str]) -> HistoryAttempt:
    return HistoryAttempt(
        attempt=stored.attempt,
        at=ms_to_datetime(stored.at_ms),
        outcome=stored.outcome,
        status=stored.status,
        duration_ms=stored.duration_ms,
        error=stored.error,
        response_body=answers.get(stored.attempt, stored.response_body),
    )
