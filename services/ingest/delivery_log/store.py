"""The delivery log's index: an SQLite file rebuilt from the topics, written by one thread and
read by others (WAL), so the event loop never waits on it.

It is a cache, not a store: every row comes from ``webhook.attempts`` or ``webhook.dlq`` and is
found again there after a restart, so nothing is synced to disk. What it keeps is bounded:

- attempts of the last 7 days (the retention of ``webhook.attempts``), at most
  ``per_endpoint`` of each endpoint, newest first; without the request sent (headers and body,
  4 KiB each), which is read back from the topic when one attempt is shown;
- dead letters of the last 30 days (the retention of ``webhook.dlq``), at most ``per_endpoint``
  of each endpoint, with their attempt history;
- per endpoint and minute of the last 25 hours: attempts by outcome class and a histogram of
  their durations, so the 1 h and 24 h figures stay exact whatever the cap;
- per delivery (endpoint and webhook-id), where it stands: waiting, delivered or dead.

Rows are ordered by time and then by their Kafka position (partition and offset), which is the
same on every ingest replica: a cursor from one is valid on all.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

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
from shared.model.messages import (
    AttemptRecord,
    ReplayJob,
    decode_attempt,
    decode_dead_letter,
    encode,
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

READER_CACHE_KIB = 8 * 1024
WRITER_CACHE_KIB = 16 * 1024

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
CREATE TABLE IF NOT EXISTS deliveries (
    ep INTEGER NOT NULL, webhook_key INTEGER NOT NULL, at_ms INTEGER NOT NULL,
    pos INTEGER NOT NULL, state TEXT NOT NULL, PRIMARY KEY (ep, webhook_key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_by_state ON deliveries (ep, state);
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
"""

ATTEMPT_COLUMNS = (
    "a.pos, e.endpoint_id, a.at_ms, a.webhook_id, a.event_id, a.attempt, a.duration_ms,"
    " a.outcome, a.status, a.error, a.response_body, a.next_at_ms, a.dead_reason,"
    " a.deferred_because, a.breaker"
)
K = TypeVar("K")
_history_decoder = msgspec.json.Decoder(list[AttemptRecord])
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
    # A cache rebuilt from Kafka on every start: a crash may lose it whole, so never fsync.
    connection.execute("PRAGMA synchronous=OFF")
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

    def write(self, db: sqlite3.Connection) -> None:
        db.executemany(
            "INSERT OR IGNORE INTO attempts VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", self.rows
        )
        db.executemany(
            "INSERT INTO deliveries VALUES (?,?,?,?,?) ON CONFLICT (ep, webhook_key) DO UPDATE"
            " SET at_ms = excluded.at_ms, pos = excluded.pos, state = excluded.state"
            " WHERE (excluded.at_ms, excluded.pos) > (deliveries.at_ms, deliveries.pos)",
            [(*key, v.at_ms, v.pos, *v.values) for key, v in self.deliveries.items()],
        )
        db.executemany(
            "INSERT INTO breakers VALUES (?,?,?,?) ON CONFLICT (ep) DO UPDATE"
            " SET at_ms = excluded.at_ms, pos = excluded.pos, state = excluded.state"
            " WHERE (excluded.at_ms, excluded.pos) > (breakers.at_ms, breakers.pos)",
            [(ep, v.at_ms, v.pos, *v.values) for ep, v in self.breakers.items()],
        )
        db.executemany(
            "INSERT INTO last_errors VALUES (?,?,?,?,?,?,?) ON CONFLICT (ep) DO UPDATE"
            " SET at_ms = excluded.at_ms, pos = excluded.pos, webhook_id = excluded.webhook_id,"
            " outcome = excluded.outcome, status = excluded.status, error = excluded.error"
            " WHERE (excluded.at_ms, excluded.pos) > (last_errors.at_ms, last_errors.pos)",
            [(ep, v.at_ms, v.pos, *v.values) for ep, v in self.errors.items()],
        )
        db.executemany(
            "INSERT INTO rollups VALUES (?,?,?,?) ON CONFLICT (ep, minute, kind)"
            " DO UPDATE SET n = n + excluded.n",
            [(*key, n) for key, n in self.kinds.items()],
        )
        db.executemany(
            "INSERT INTO durations VALUES (?,?,?,?) ON CONFLICT (ep, minute, bucket)"
            " DO UPDATE SET n = n + excluded.n",
            [(*key, n) for key, n in self.durations.items()],
        )


class LogWriter:
    """Indexes batches of records; used by one thread only."""

    def __init__(self, path: Path, per_endpoint: int) -> None:
        self._db = connect(path, WRITER_CACHE_KIB)
        self._db.executescript(SCHEMA)
        self._per_endpoint = per_endpoint
        self._endpoint_keys: dict[str, int] = {}
        self._attempt_counts: Counter[int] = Counter()
        self._letter_counts: Counter[int] = Counter()
        self.unreadable = 0

    def close(self) -> None:
        self._db.close()

    def _endpoint_key(self, endpoint_id: str, account_id: str) -> int:
        key = self._endpoint_keys.get(endpoint_id)
        if key is None:
            key = len(self._endpoint_keys) + 1
            self._db.execute(
                "INSERT INTO endpoints (key, endpoint_id, account_id) VALUES (?, ?, ?)",
                (key, endpoint_id, account_id),
            )
            self._endpoint_keys[endpoint_id] = key
        return key

    def add_attempts(self, fetched: Iterable[Fetched], now_ms: int) -> int:
        """Index attempt records; returns how many. Unreadable ones are counted and left in
        the topic (they are never deleted from it)."""
        batch = _AttemptBatch(rollup_from_ms=now_ms - ROLLUPS_KEPT_MS)
        self._db.execute("BEGIN")
        try:
            for item in fetched:
                record = self._decode(item, decode_attempt)
                if record is not None:
                    ep = self._endpoint_key(record.endpoint_id, record.account_id)
                    batch.add(ep, position(item.partition, item.offset), record)
            batch.write(self._db)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        for row in batch.rows:
            self._attempt_counts[row[1]] += 1
        self._trim(self._attempt_counts, "attempts", "at_ms")
        return len(batch.rows)

    def add_dead_letters(self, fetched: Iterable[Fetched]) -> int:
        rows: list[tuple[Any, ...]] = []
        self._db.execute("BEGIN")
        try:
            for item in fetched:
                letter = self._decode(item, decode_dead_letter)
                if letter is None:
                    continue
                envelope = letter.envelope
                ep = self._endpoint_key(envelope.endpoint_id, envelope.account_id)
                rows.append(
                    (
                        position(item.partition, item.offset),
                        ep,
                        letter.dead_at_ms,
                        text_key(envelope.webhook_id),
                        envelope.webhook_id,
                        envelope.event_id,
                        letter.reason,
                        encode(envelope.attempts),
                    )
                )
            self._db.executemany(
                "INSERT OR IGNORE INTO dead_letters VALUES (?,?,?,?,?,?,?,?)", rows
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        for row in rows:
            self._letter_counts[row[1]] += 1
        self._trim(self._letter_counts, "dead_letters", "dead_at_ms")
        return len(rows)

    def _decode(self, item: Fetched, decode: Any) -> Any:
        if item.value is None:
            return None
        try:
            return decode(item.value)
        except (msgspec.DecodeError, UnicodeDecodeError):
            self.unreadable += 1
            metrics.DELIVERY_LOG_UNREADABLE.inc()
            return None

    def _trim(self, counts: Counter[int], table: str, time_column: str) -> None:
        """Keep each endpoint's newest ``per_endpoint`` rows of ``table``."""
        limit = self._per_endpoint
        over = [ep for ep, n in counts.items() if n > limit * (1 + TRIM_SLACK)]
        for ep in over:
            self._db.execute(
                f"DELETE FROM {table} WHERE pos IN (SELECT pos FROM {table} WHERE ep = ?"  # noqa: S608 - table and column are constants
                f" ORDER BY {time_column} DESC, pos DESC LIMIT -1 OFFSET ?)",
                (ep, limit),
            )
            counts[ep] = limit

    def expire(self, now_ms: int) -> None:
        """Drop what the topics' retention and the 24 h window no longer cover."""
        db = self._db
        db.execute("BEGIN")
        try:
            db.execute("DELETE FROM attempts WHERE at_ms < ?", (now_ms - ATTEMPTS_KEPT_MS,))
            db.execute("DELETE FROM deliveries WHERE at_ms < ?", (now_ms - ATTEMPTS_KEPT_MS,))
            cutoff = now_ms - DEAD_LETTERS_KEPT_MS
            db.execute("DELETE FROM dead_letters WHERE dead_at_ms < ?", (cutoff,))
            first_minute = (now_ms - ROLLUPS_KEPT_MS) // MINUTE_MS
            db.execute("DELETE FROM rollups WHERE minute < ?", (first_minute,))
            db.execute("DELETE FROM durations WHERE minute < ?", (first_minute,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._attempt_counts = Counter(
            dict(db.execute("SELECT ep, COUNT(*) FROM attempts GROUP BY ep").fetchall())
        )
        self._letter_counts = Counter(
            dict(db.execute("SELECT ep, COUNT(*) FROM dead_letters GROUP BY ep").fetchall())
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
        record.response_body,
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


def _jobs_condition(jobs: Sequence[ReplayJob]) -> tuple[str, tuple[Any, ...]]:
    """SQL true for a dead letter that one of ``jobs`` replayed (``ReplayJob.covers``).

    The jobs travel as one JSON array in one bound variable: a variable per job would fail
    past SQLite's limit (32,766) on an endpoint replayed that many times."""
    if not jobs:
        return "0", ()
    spans = [
        (
            position(job.dlq_partition, 0),
            position(job.dlq_partition, job.position),
            job.since_ms,
            job.until_ms,
        )
        for job in jobs
    ]
    covered = (
        "EXISTS (SELECT 1 FROM json_each(?) j"
        " WHERE d.pos >= json_extract(j.value, '$[0]') AND d.pos < json_extract(j.value, '$[1]')"
        " AND d.dead_at_ms >= json_extract(j.value, '$[2]')"
        " AND d.dead_at_ms < json_extract(j.value, '$[3]'))"
    )
    return covered, (_spans_encoder.encode(spans).decode(),)


def covering_job(jobs: Sequence[ReplayJob], pos: int, dead_at_ms: int) -> ReplayJob | None:
    partition, offset = split_position(pos)
    for job in jobs:
        if job.dlq_partition == partition and job.covers(offset, dead_at_ms):
            return job
    return None


class LogReader:
    """Queries on the index; every method runs in a reader thread, one connection each."""

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
        """Once no reader thread runs any more."""
        with self._lock:
            for connection in self._opened:
                connection.close()
            self._opened.clear()

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
        sql = (
            f"SELECT {ATTEMPT_COLUMNS} FROM attempts a JOIN endpoints e ON e.key = a.ep"  # noqa: S608 - conditions are constants, values bound
            f" WHERE {' AND '.join(conditions)} ORDER BY a.at_ms DESC, a.pos DESC LIMIT ?"
        )
        rows = self._db().execute(sql, (*args, limit)).fetchall()
        return [_attempt(row) for row in rows]

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
                "SELECT kind, SUM(n) FROM rollups WHERE ep = ? AND minute >= ? GROUP BY kind",
                (ep, first_minute),
            ).fetchall()
        )
        histogram = db.execute(
            "SELECT bucket, SUM(n) FROM durations WHERE ep = ? AND minute >= ? GROUP BY bucket",
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
        replayed, args = _jobs_condition(jobs)
        (dead_open,) = db.execute(
            f"SELECT COUNT(*) FROM dead_letters d WHERE d.ep = ? AND NOT {replayed}",  # noqa: S608 - built from constants, values bound
            (ep, *args),
        ).fetchone()
        error = db.execute(
            "SELECT at_ms, webhook_id, outcome, status, error FROM last_errors WHERE ep = ?",
            (ep,),
        ).fetchone()
        summary = DeliverySummary(
            attempts_24h=last_day.attempts,
            success_rate_24h=last_day.success_rate,
            breaker=breaker[0] if breaker else None,
            waiting=waiting,
            dead_letters_open=dead_open,
            last_error=None
            if error is None
            else LastError(
                at=ms_to_datetime(error[0]),
                webhook_id=error[1],
                outcome=error[2],
                status=error[3],
                error=error[4],
            ),
        )
        return last_hour, last_day, summary

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
        db = self._db()
        conditions = "d.ep = ?"
        args: list[Any] = [ep]
        if before is not None:
            conditions += " AND d.dead_at_ms <= ? AND (d.dead_at_ms, d.pos) < (?, ?)"
            args += [before[0], *before]
        rows = db.execute(
            "SELECT d.pos, d.dead_at_ms, d.webhook_key, d.webhook_id, d.event_id, d.reason,"  # noqa: S608 - constant conditions, values bound
            " d.history, s.state, s.at_ms FROM dead_letters d LEFT JOIN deliveries s"
            " ON s.ep = d.ep AND s.webhook_key = d.webhook_key"
            f" WHERE {conditions} ORDER BY d.dead_at_ms DESC, d.pos DESC LIMIT ?",
            (*args, limit),
        ).fetchall()
        found: list[tuple[DeadLetterView, int, int]] = []
        for pos, dead_at_ms, _, webhook_id, event_id, reason, history, state, state_at in rows:
            job = covering_job(jobs, pos, dead_at_ms)
            later: DeliveryState = state if state is not None and state_at > dead_at_ms else "dead"
            view = DeadLetterView(
                id=dead_letter_id(pos),
                webhook_id=webhook_id,
                event_id=event_id,
                reason=reason,
                dead_at=ms_to_datetime(dead_at_ms),
                attempts=[_history(a) for a in _history_decoder.decode(history)],
                replayed=job is not None,
                replay_id=job.id if job is not None else None,
                delivery=later,
            )
            found.append((view, dead_at_ms, pos))
        return found


def _history(record: AttemptRecord) -> HistoryAttempt:
    return HistoryAttempt(
        attempt=record.attempt,
        at=ms_to_datetime(record.at_ms),
        outcome=record.outcome,
        status=record.status,
        duration_ms=record.duration_ms,
        error=record.error,
        response_body=record.response_body,
    )
