"""The delivery log in PostgreSQL (``CLICKHOOK_DELIVERY_LOG_URL``): one store for every ingest
replica, written by the members of one consumer group, read by all.

The same rows, the same queries and the same answers as the SQLite index (``store``): what
differs is how the store stays bounded and how several writers share it.

- Attempts are partitioned by hour of their record time, dead letters by day (declarative
  range partitions on ``at_ms`` and ``dead_at_ms``; ``Timed.partition_ms``, one code path for
  both): retention drops a partition once all of it is past (attempts after 7 days, dead
  letters after 30, as the topics keep them), never a slow ``DELETE``. Partitions are made
  ahead (``HOURS_AHEAD``) and, for a record outside them, before its batch. Dead letters by
  hour were 720 partitions: every query the time cannot narrow (the trims, counts, lookups by
  id) planned 140 to 190 ms and locked each partition and its indexes (about 2,170 locks,
  where PostgreSQL's default lock table holds 6,400 for all sessions), for small rows the
  budget drops last anyway. By day (32 partitions) the same queries plan in 1 to 2 ms and lock
  98 relations; attempts' (172 hours) 4 to 14 ms and 690 (measured, PostgreSQL 15).
- Bytes: each endpoint keeps its newest ``per_endpoint`` rows, so the store holds at most
  endpoints x per_endpoint rows of each kind; and past 90 % of ``CLICKHOOK_DELIVERY_LOG_MAX_BYTES``
  (all its tables, indexes included, as PostgreSQL counts them) the oldest partitions go first,
  down to 80 %, by their end whichever table they are of (the oldest history first, as the
  SQLite index evicts); never the partition holding the current time (the current hour of
  attempts, the current day of dead letters), nor one that ended within ``BUDGET_GRACE_MS``.
  A budget that holds what is kept per endpoint and two hours of records always finds one to
  drop (by day, a store writing 43 M records a day went full three hours into each day with
  the default budget, until midnight).
- A store made by day (``{table}_dYYYYMMDD``, before hours) is read as it is: its days are
  dropped as hours are (past retention, or for the budget), and hours are made only where no
  day covers them (PostgreSQL refuses overlapping partitions).
- Pages newest first are asked a slice of time at a time (``slices``: from the partition
  holding the last hour on, then a day at a time), until full: PostgreSQL plans only the
  partitions a slice meets, and planning is what a query over every partition costs.
  Measured (PostgreSQL 15, 2,000 rows an hour over 200 endpoints, a page of 50, warm
  connection): attempts at 170 hours 11 to 12.5 ms in one query (9 to 16 ms of planning),
  2.6 to 3.3 ms in slices (9 slices: its whole history); dead letters at 720 hours (when they
  were by hour) 136 to 153 ms in one query, in slices 8.7 ms for an endpoint with rows every
  hour and 70 to 77 ms for one whose only rows were in the oldest hour, or none. By day a
  slice of dead letters is one partition, 31 or 32 slices their whole history.
  Queries with no time to bound them still plan every partition: an attempt by id 15 ms and
  an event's attempts 21 ms at 170 hours.
- Idempotent by topic, partition and offset: rows are keyed by their position, inserted with
  ``ON CONFLICT DO NOTHING``; the positions reached are written in the same transaction as the
  rows, and only by the writer that read them last (``PositionsMoved`` otherwise), so a record
  is counted once in the per-minute figures even across a rebalance.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import structlog
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from services.ingest.delivery_log.fill import EVICTED_STREAM
from services.ingest.delivery_log.store import (
    ATTEMPTS_KEPT_MS,
    ATTEMPTS_TIMED,
    BUDGET_HIGH,
    BUDGET_LOW,
    DAY_MS,
    DEAD_LETTERS_KEPT_MS,
    HOUR_MS,
    LETTERS_TIMED,
    MINUTE_MS,
    ROLLUPS_KEPT_MS,
    Fetched,
    IndexFull,
    IndexQueries,
    IndexWriter,
    Page,
    Positions,
    PositionsMoved,
    Rows,
    StoredAttempt,
    Timed,
    failure_reason,
)
from shared.model.errors import ClickhookError
from shared.ops import metrics

log = structlog.get_logger(__name__)

# Hours of partitions made before records need them, so batches never wait on DDL (7 to 9 ms
# a partition, measured): the expiry timer (every minute) makes each hour of attempts, and each
# day of dead letters, three hours before its first record, so one that did not run for two
# hours still left it made.
HOURS_AHEAD = 3
AHEAD_MS = HOURS_AHEAD * HOUR_MS
# How long the expiry's DDL (making partitions ahead, dropping them) waits for the lock on the
# parent table: ACCESS EXCLUSIVE, so while it waits behind a long query, every reader and
# writer waits behind it. Past this it gives up until the next expiry (a minute on).
DDL_LOCK_TIMEOUT = "2s"
# The budget never drops a partition that ended less than this ago, as the current one.
BUDGET_GRACE_MS = 10 * 60_000
# A wait for a lock given up: ``lock_timeout`` (the table's or the partitions lock), or the
# connection's ``statement_timeout`` where no lock timeout was set.
LOCK_WAITED_OUT = (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled)
# A store that does not answer within this degrades the routes instead of holding requests.
CONNECT_TIMEOUT_S = 3
QUERY_TIMEOUT_MS = 10_000
POOL_TIMEOUT_S = 3.0
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS endpoints (
    key BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    endpoint_id TEXT NOT NULL UNIQUE, account_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS attempts (
    pos BIGINT NOT NULL, ep BIGINT NOT NULL, at_ms BIGINT NOT NULL,
    event_key BIGINT NOT NULL, webhook_id TEXT NOT NULL, event_id TEXT NOT NULL,
    attempt INTEGER NOT NULL, duration_ms DOUBLE PRECISION NOT NULL, outcome TEXT NOT NULL,
    status INTEGER, error TEXT, response_body TEXT, next_at_ms BIGINT, dead_reason TEXT,
    deferred_because TEXT, breaker TEXT, PRIMARY KEY (at_ms, pos)) PARTITION BY RANGE (at_ms);
CREATE INDEX IF NOT EXISTS attempts_by_endpoint ON attempts (ep, at_ms, pos);
CREATE INDEX IF NOT EXISTS attempts_by_event ON attempts (event_key);
CREATE TABLE IF NOT EXISTS deliveries (
    ep BIGINT NOT NULL, webhook_key BIGINT NOT NULL, at_ms BIGINT NOT NULL,
    pos BIGINT NOT NULL, state TEXT NOT NULL, PRIMARY KEY (ep, webhook_key));
CREATE INDEX IF NOT EXISTS deliveries_by_state ON deliveries (ep, state, at_ms);
CREATE INDEX IF NOT EXISTS deliveries_by_time ON deliveries (at_ms);
CREATE TABLE IF NOT EXISTS rollups (
    ep BIGINT NOT NULL, minute BIGINT NOT NULL, kind TEXT NOT NULL, n BIGINT NOT NULL,
    PRIMARY KEY (ep, minute, kind));
CREATE TABLE IF NOT EXISTS durations (
    ep BIGINT NOT NULL, minute BIGINT NOT NULL, bucket INTEGER NOT NULL, n BIGINT NOT NULL,
    PRIMARY KEY (ep, minute, bucket));
CREATE TABLE IF NOT EXISTS breakers (
    ep BIGINT PRIMARY KEY, at_ms BIGINT NOT NULL, pos BIGINT NOT NULL, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS last_errors (
    ep BIGINT PRIMARY KEY, at_ms BIGINT NOT NULL, pos BIGINT NOT NULL,
    webhook_id TEXT NOT NULL, outcome TEXT NOT NULL, status INTEGER, error TEXT);
CREATE TABLE IF NOT EXISTS dead_letters (
    pos BIGINT NOT NULL, ep BIGINT NOT NULL, dead_at_ms BIGINT NOT NULL,
    webhook_key BIGINT NOT NULL, webhook_id TEXT NOT NULL, event_id TEXT NOT NULL,
    reason TEXT NOT NULL, history BYTEA NOT NULL, PRIMARY KEY (dead_at_ms, pos))
    PARTITION BY RANGE (dead_at_ms);
CREATE INDEX IF NOT EXISTS dead_letters_by_endpoint ON dead_letters (ep, dead_at_ms, pos);
CREATE TABLE IF NOT EXISTS deleted_endpoints (
    endpoint_id TEXT PRIMARY KEY, deleted_at_ms BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS positions (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset BIGINT NOT NULL,
    PRIMARY KEY (topic, partition));
CREATE TABLE IF NOT EXISTS layout (version INTEGER NOT NULL);
"""
# Partitioned tables, and how long their partitions are kept.
PARTITIONED = ((ATTEMPTS_TIMED, ATTEMPTS_KEPT_MS), (LETTERS_TIMED, DEAD_LETTERS_KEPT_MS))
KEPT_MS = dict(PARTITIONED)
# After the newest partition, pages are asked a day at a time: the planning of 24 partitions of
# attempts (1 to 2 ms), or one of dead letters, for each.
SLICE_MS = DAY_MS
# The tables batches write, each with a staging table of this session's own (``_insert``).
STAGED = (
    "attempts",
    "deliveries",
    "breakers",
    "last_errors",
    "rollups",
    "durations",
    "dead_letters",
)
# A per-schema lock, so that replicas making or dropping partitions take turns.
PARTITIONS_LOCK = "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.partitions'))"


# A batch's endpoints, table and record times (``PgWriter._prepare``).
Prepared = tuple[set[tuple[str, str]], Timed, set[int]]


# What a failed query of the store raises.
QUERY_ERRORS = (psycopg.Error,)


def pg_failure_reason(exc: BaseException) -> str:
    """As ``store.failure_reason``, with PostgreSQL's full disk ``full``."""
    if isinstance(exc, psycopg.errors.DiskFull):
        return "full"
    return failure_reason(exc)


class StoreLayoutChanged(ClickhookError):
    """The database holds the delivery log of another layout version."""


@functools.lru_cache(maxsize=256)
def pg_sql(sql: str) -> str:
    """The shared queries' ``?`` placeholders as psycopg's ``%s`` (none holds a ``%``)."""
    assert "%" not in sql
    return sql.replace("?", "%s")


class PgDatabase:
    """A psycopg connection that takes the shared queries as they are written."""

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self.connection = connection

    def execute(self, sql: str, args: Any = (), /) -> Rows:
        return self.connection.execute(pg_sql(sql), args)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> Any:
        cursor = self.connection.cursor()
        cursor.executemany(pg_sql(sql), list(rows))
        return cursor


def open_connection(url: str) -> psycopg.Connection[Any]:
    """Autocommit (transactions are explicit), bounded waits: a store that hangs fails. The
    URL's own ``options`` (a search_path naming the deployment's schema) are kept."""
    params = conninfo_to_dict(url)
    options = f"{params.get('options') or ''} -c statement_timeout={QUERY_TIMEOUT_MS}"
    params.update(
        options=options.strip(),
        connect_timeout=params.get("connect_timeout") or CONNECT_TIMEOUT_S,
        application_name="clickhook-delivery-log",
    )
    return psycopg.connect(make_conninfo("", **params), autocommit=True)


def _now_ms() -> int:
    return int(time.time() * 1000)


def staging(table: str) -> str:
    return f"staged_{table}"


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# How partitions are named by the span of time they hold (marker, start, its digits): attempts
# by hour, dead letters by day (and attempts too in a store made before hours).
NAMINGS = {HOUR_MS: ("h", "%Y%m%d%H", 10), DAY_MS: ("d", "%Y%m%d", 8)}


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition of a table: the record times it holds, ``[start_ms, end_ms)``."""

    name: str
    start_ms: int
    end_ms: int

    @property
    def hours(self) -> range:
        return range(self.start_ms // HOUR_MS, self.end_ms // HOUR_MS)


def start_of(ms: int, span_ms: int) -> int:
    """The start of the span (an hour, a day) holding ``ms``."""
    return ms // span_ms * span_ms


def hours_from(start_ms: int, span_ms: int) -> set[int]:
    return set(range(start_ms // HOUR_MS, (start_ms + span_ms) // HOUR_MS))


def partition_name(table: str, start_ms: int, span_ms: int) -> str:
    marker, pattern, _ = NAMINGS[span_ms]
    return f"{table}_{marker}{EPOCH + timedelta(milliseconds=start_ms):{pattern}}"


def partition_of(table: str, name: str) -> Partition | None:
    """The times a partition of ``table`` holds, from its name (an hour or a day); None for
    another table's."""
    for span_ms, (marker, pattern, length) in NAMINGS.items():
        prefix = f"{table}_{marker}"
        digits = name.removeprefix(prefix)
        if name.startswith(prefix) and digits.isdigit() and len(digits) == length:
            start = datetime.strptime(digits, pattern).replace(tzinfo=UTC)
            start_ms = int((start - EPOCH).total_seconds()) * 1000
            return Partition(name, start_ms, start_ms + span_ms)
    return None


def covered_hours(partitions: Iterable[Partition]) -> set[int]:
    return {hour for partition in partitions for hour in partition.hours}


class PgWriter(IndexWriter):
    """Writes batches to the shared store; one per ingest replica that is a member of the
    consumer group, each with its own connection."""

    attempt_trim = (
        "DELETE FROM attempts WHERE ep = ? AND (at_ms, pos) IN (SELECT at_ms, pos FROM attempts"
        " WHERE ep = ? ORDER BY at_ms DESC, pos DESC OFFSET ?)"
    )
    letter_trim = (
        "DELETE FROM dead_letters WHERE ep = ? AND (dead_at_ms, pos) IN (SELECT dead_at_ms, pos"
        " FROM dead_letters WHERE ep = ? ORDER BY dead_at_ms DESC, pos DESC OFFSET ?)"
    )
    delivery_trim = (
        "DELETE FROM deliveries WHERE ep = ? AND state != 'waiting' AND webhook_key IN"
        " (SELECT webhook_key FROM deliveries WHERE ep = ? AND state != 'waiting'"
        " ORDER BY at_ms DESC OFFSET ?)"
    )

    def __init__(
        self,
        url: str,
        per_endpoint: int,
        max_bytes: int,
        now_ms: int,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self._connection = open_connection(url)
        # The current time, in ms (tests set it: what the current hour is must not turn).
        self._clock = clock
        super().__init__(PgDatabase(self._connection), per_endpoint)
        self._max_bytes = max_bytes
        # Over the whole budget with no hour left to drop: batches are refused until there is
        # room (measured again before each).
        self._over_budget = False
        self._keys: dict[str, int] = {}
        self._deleted: set[str] = set()
        self._deleted_seen_ms = -1
        # The hours each partitioned table has partitions for, as this writer last saw them;
        # and the time its records are kept from (retention).
        self._hours: dict[str, set[int]] = {}
        self._kept_from: dict[str, int] = {}
        # The last batch's ``_prepare``, done again if a partition vanished (``_fitted``).
        self._prepared: Prepared = (set(), ATTEMPTS_TIMED, set())
        # What this writer last read or wrote of each partition's position: the fence.
        self._known: dict[tuple[str, int], int] = {}
        # Each staged table's column types, for the binary COPY.
        self._column_types: dict[str, list[str]] = {}
        # The statements that move the batch's staged rows into their tables (``_insert``).
        self._staged: list[str] = []
        try:
            self._create_schema()
            self._create_staging()
            self.expire(now_ms)
        except BaseException:
            self._connection.close()
            raise

    def close(self) -> None:
        self._connection.close()

    def _create_schema(self) -> None:
        with self._connection.transaction():
            self._db.execute(PARTITIONS_LOCK)
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self._connection.execute(statement)
            found = self._db.execute("SELECT version FROM layout").fetchone()
            if found is None:
                self._db.execute("INSERT INTO layout VALUES (?)", (SCHEMA_VERSION,))
            elif found[0] != SCHEMA_VERSION:
                raise StoreLayoutChanged(f"layout {found[0]}, this build writes {SCHEMA_VERSION}")

    def _create_staging(self) -> None:
        """A temporary table of each one batches write, emptied at every commit: once per
        session, outside any batch (a rolled-back batch would take its creation with it)."""
        for table in STAGED:
            self._connection.execute(
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging(table)} (LIKE {table})"
                " ON COMMIT DELETE ROWS"
            )
            self._column_types[table] = [
                name
                for (name,) in self._db.execute(
                    "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
                    " WHERE attrelid = CAST(? AS regclass) AND attnum > 0 AND NOT attisdropped"
                    " ORDER BY attnum",
                    (table,),
                ).fetchall()
            ]

    def _insert(self, table: str, rows: list[tuple[Any, ...]], on_conflict: str) -> None:
        """A batch's rows into ``table`` in two statements whatever their number: ``COPY``
        into the staging table, then (``_insert_staged``) one ``INSERT … SELECT`` with the
        conflict clause (the rows' order kept: a freshly emptied heap reads back in the order
        it was written).
        One statement a row cost the server a parse, a plan and an executor start each.
        A batch writes each table once, so the staging table is empty until its commit
        empties it again (in place: ``TRUNCATE`` would give it a new file every batch)."""
        if not rows:
            return
        cursor = self._connection.cursor()
        with cursor.copy(f"COPY {staging(table)} FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(self._column_types[table])
            for row in rows:
                copy.write_row(row)
        self._staged.append(f"INSERT INTO {table} SELECT * FROM {staging(table)} {on_conflict}")  # noqa: S608 - our own tables and clauses

    def _insert_staged(self) -> None:
        """The batch's ``INSERT … SELECT``s in one round trip (no parameters: one simple query
        of several statements), at the end of its transaction."""
        staged, self._staged = self._staged, []
        if staged:
            self._connection.execute(";".join(staged), prepare=False)

    # --- transactions and positions -----------------------------------------------------------

    def _transaction(self, write: Callable[[], None]) -> None:
        self._pending: dict[tuple[str, int], int] = {}
        try:
            with self._connection.transaction():
                write()
                self._insert_staged()
        except BaseException:
            self._staged.clear()
            self._forget_endpoints()
            raise
        self._known.update(self._pending)

    def positions(self) -> dict[tuple[str, int], int]:
        stored = super().positions()
        self._known = dict(stored)
        return stored

    def _save_positions(self, positions: Positions) -> None:
        """The positions reached, only where they still are what this writer last saw: a
        writer that lost its partitions in a rebalance writes nothing more of them."""
        for key, offset in sorted(positions):
            topic, partition = key
            expected = self._known.get(key)
            if expected is None:
                saved = self._connection.execute(
                    "INSERT INTO positions VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    (topic, partition, offset),
                )
            else:
                saved = self._connection.execute(
                    "UPDATE positions SET next_offset = %s WHERE topic = %s AND partition = %s"
                    " AND next_offset = %s",
                    (offset, topic, partition, expected),
                )
            if saved.rowcount != 1:
                self._known.pop(key, None)
                raise PositionsMoved(f"{topic}[{partition}] was indexed by another writer")
            self._pending[key] = offset

    def _unseen(self, fetched: Iterable[Fetched], positions: Positions) -> list[Fetched]:
        """Records below the stored position of their partition were indexed already (by
        this writer before a restart, or by another before a rebalance): the per-minute
        figures count each record once."""
        topics = {topic for (topic, _), _ in positions}
        if len(topics) != 1:
            return list(fetched)
        (topic,) = topics
        known = self._known
        return [item for item in fetched if item.offset >= known.get((topic, item.partition), 0)]

    # --- endpoints ------------------------------------------------------------------------------

    def _prepare(
        self, endpoints: set[tuple[str, str]], timed: Timed, times: set[int]
    ) -> Callable[[int], bool]:
        """Keys for new endpoints (outside the batch's transaction: two writers meeting on
        one never wait for each other's batch), the deletions other replicas applied, and the
        partitions the batch's records fall in: all but those retention dropped, or the
        budget (made again, they would undo its eviction: ``_kept``)."""
        self._prepared = (endpoints, timed, times)
        self._refresh_deleted()
        for endpoint_id, account_id in sorted(endpoints):
            if endpoint_id not in self._keys and endpoint_id not in self._deleted:
                self._keys[endpoint_id] = self._assign_key(endpoint_id, account_id)
        self._refresh_evicted()
        table, span = timed.table, timed.partition_ms
        if table not in self._hours:
            self._hours[table] = covered_hours(self._partitions(table))
        # The first partition kept: older records would land in one already dropped.
        kept_from = start_of(self._clock() - KEPT_MS[timed], span)
        self._kept_from[table] = kept_from
        evicted = self.evicted_through_ms
        starts = {
            start_of(t, span) for t in times if t >= kept_from and (evicted is None or t > evicted)
        }
        self._ensure(timed, starts, wait=True)
        return functools.partial(self._kept, table)

    def _kept(self, table: str, at_ms: int) -> bool:
        """Whether a record is written: not one older than the retention, nor one at or before
        the budget's eviction (``evicted_through_ms``) whose partition is gone (its records
        are then skipped as older ones: ``complete_since`` says the log is incomplete there)."""
        if at_ms < self._kept_from[table]:
            return False
        evicted = self.evicted_through_ms
        return evicted is None or at_ms > evicted or at_ms // HOUR_MS in self._hours[table]

    def _refresh_evicted(self) -> None:
        """What the budget dropped, as the store has it: moved by another writer, the
        partitions this one knows are read again (it dropped some of them)."""
        through = self._stored_evicted()
        if through != self.evicted_through_ms:
            self._hours.clear()
        self.evicted_through_ms = through

    def _stored_evicted(self) -> int | None:
        """Its one row, not ``fill.evicted_through(self.positions())``: asked before every
        batch."""
        found = self._db.execute(
            "SELECT next_offset FROM positions WHERE topic = ? AND partition = 0",
            (EVICTED_STREAM,),
        ).fetchone()
        return None if found is None else int(found[0])

    def _assign_key(self, endpoint_id: str, account_id: str) -> int:
        self._db.execute(
            "INSERT INTO endpoints (endpoint_id, account_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (endpoint_id, account_id),
        )
        (key,) = self._db.execute(
            "SELECT key FROM endpoints WHERE endpoint_id = ?", (endpoint_id,)
        ).fetchone()
        return int(key)

    def _refresh_deleted(self) -> None:
        rows = self._db.execute(
            "SELECT endpoint_id, deleted_at_ms FROM deleted_endpoints WHERE deleted_at_ms > ?",
            (self._deleted_seen_ms,),
        ).fetchall()
        for endpoint_id, deleted_at_ms in rows:
            self._deleted.add(endpoint_id)
            self._keys.pop(endpoint_id, None)
            self._deleted_seen_ms = max(self._deleted_seen_ms, deleted_at_ms)

    def _endpoint_key(self, endpoint_id: str, account_id: str) -> int | None:
        return None if endpoint_id in self._deleted else self._keys.get(endpoint_id)

    def _stored_key(self, endpoint_id: str) -> int | None:
        found = self._db.execute(
            "SELECT key FROM endpoints WHERE endpoint_id = ?", (endpoint_id,)
        ).fetchone()
        return None if found is None else int(found[0])

    def _forget_endpoints(self) -> None:
        self._keys.clear()
        self._deleted.clear()
        self._deleted_seen_ms = -1

    def _count_new(self, eps: Iterable[int]) -> None:
        """Rows already stored of endpoints this writer has not counted yet (other writers
        and earlier runs wrote them): one index scan each, once."""
        new = sorted(set(eps) - set(self._attempt_counts))
        if not new:
            return
        for table, counts in (
            ("attempts", self._attempt_counts),
            ("dead_letters", self._letter_counts),
            ("deliveries", self._delivery_counts),
        ):
            rows = self._db.execute(
                f"SELECT ep, COUNT(*) FROM {table} WHERE ep = ANY(?) GROUP BY ep",  # noqa: S608 - constant tables
                (new,),
            ).fetchall()
            found = dict(rows)
            for ep in new:
                counts[ep] = max(counts[ep], int(found.get(ep, 0)))

    # --- partitions -----------------------------------------------------------------------------

    def _partitions(self, table: str) -> list[Partition]:
        """The table's partitions, oldest first."""
        rows = self._db.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = CAST(? AS regclass)",
            (table,),
        ).fetchall()
        found = (partition_of(table, name) for (name,) in rows)
        return sorted((p for p in found if p is not None), key=lambda p: p.start_ms)

    def _ensure(self, timed: Timed, starts: set[int], *, wait: bool) -> None:
        """A partition of ``timed`` from each of ``starts`` (its span of time each), but for
        the hours partitions cover already: PostgreSQL refuses overlapping ranges. Where some
        hours of a span are covered (attempts' days of a store made by day hold whole spans;
        dead letters' hours of a build that made them by hour do not), the others get a
        partition each. ``wait``: a batch needs them (else see ``_lock_partitions``)."""
        table, span = timed.table, timed.partition_ms
        wanted = {hour for start in starts for hour in hours_from(start, span)}
        if wanted <= self._hours.get(table, set()):
            return
        with self._connection.transaction():
            self._lock_partitions(wait=wait)
            covered = covered_hours(self._partitions(table))
            # Never one all at or before what the budget dropped, as of now (under the lock
            # the budget drops by): another writer may have dropped it since ``_prepare``.
            evicted = self._stored_evicted()
            starts = {start for start in starts if evicted is None or start + span > evicted + 1}
            wanted = {hour for start in starts for hour in hours_from(start, span)}
            for start in sorted(starts):
                hours = hours_from(start, span)
                if hours.isdisjoint(covered):
                    self._create(table, start, span)
                else:
                    for hour in sorted(hours - covered):
                        self._create(table, hour * HOUR_MS, HOUR_MS)
            self._hours[table] = covered | wanted

    def _create(self, table: str, start_ms: int, span_ms: int) -> None:
        self._connection.execute(
            f"CREATE TABLE IF NOT EXISTS {partition_name(table, start_ms, span_ms)} PARTITION OF"
            f" {table} FOR VALUES FROM ({start_ms}) TO ({start_ms + span_ms})"
        )

    def _drop(
        self, table: str, partitions: Iterable[Partition], *, for_budget: bool = False
    ) -> int:
        """Drop whole partitions, those still there (another writer may have dropped some):
        in one transaction of the partitions lock, waiting ``DDL_LOCK_TIMEOUT`` at most for
        readers (``psycopg.errors.LockNotAvailable``: nothing dropped). ``for_budget``: ones
        retention still covers, so the log is complete only after the newest of them
        (``fill.complete_since_ms``); returns the rows they held, counted before the drop."""
        wanted = sorted(partitions, key=lambda p: p.start_ms)
        # Counted before the lock: a whole day of an upgraded store takes seconds to count, and
        # other replicas' DDL would wait on it. Rows a batch adds meanwhile go uncounted.
        held = {p.name: self._count(p) for p in wanted} if for_budget else {}
        dropped: list[Partition] = []
        with self._connection.transaction():
            self._lock_partitions(wait=False)
            for partition in wanted:
                (found,) = self._db.execute("SELECT to_regclass(?)", (partition.name,)).fetchone()
                if found is None:
                    continue
                self._connection.execute(f"DROP TABLE {partition.name}")
                dropped.append(partition)
            if for_budget and dropped:
                self._mark_evicted(dropped[-1].end_ms - 1)
        for partition in wanted:
            self._hours.get(table, set()).difference_update(partition.hours)
        if for_budget and dropped:
            self._evicted(dropped[-1].end_ms - 1)
        self._attempt_counts.clear()  # counted again as endpoints come by
        self._letter_counts.clear()
        self._delivery_counts.clear()
        return sum(held.get(p.name, 0) for p in dropped)

    def _count(self, partition: Partition) -> int:
        """The rows of a partition, however long counting takes (0: already dropped)."""
        with self._connection.transaction():
            self._connection.execute("SET LOCAL statement_timeout = 0")
            (found,) = self._db.execute("SELECT to_regclass(?)", (partition.name,)).fetchone()
            if found is None:
                return 0
            (rows,) = self._db.execute(
                f"SELECT COUNT(*) FROM {partition.name}"  # noqa: S608 - our own names
            ).fetchone()
        return int(rows)

    def _lock_partitions(self, *, wait: bool) -> None:
        """Within a transaction: this schema's partitions lock; unless ``wait``, DDL waits
        ``DDL_LOCK_TIMEOUT`` at most for the parent table's lock. DDL takes it ACCESS
        EXCLUSIVE: waiting behind a long query, it would queue every reader and writer
        behind itself."""
        if not wait:
            # First: it bounds the wait for the partitions lock too (another replica's DDL).
            self._connection.execute(f"SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'")
        self._db.execute(PARTITIONS_LOCK)

    # --- bounds -----------------------------------------------------------------------------------

    def expire(self, now_ms: int) -> None:
        """Drop the partitions retention no longer covers, make the next ones, and prune the
        small tables; then keep within the byte budget."""
        for timed, kept_ms in PARTITIONED:
            existing = self._partitions(timed.table)
            self._hours[timed.table] = covered_hours(existing)
            # A partition goes once all of it is older than the retention.
            expired = [p for p in existing if p.end_ms <= now_ms - kept_ms]
            span = timed.partition_ms
            ahead = set(range(start_of(now_ms, span), now_ms + AHEAD_MS + 1, span))
            try:
                if expired:
                    self._drop(timed.table, expired)
                    log.info(
                        "delivery_log_partitions_dropped", table=timed.table, count=len(expired)
                    )
                self._ensure(timed, ahead, wait=False)
            except LOCK_WAITED_OUT:
                # A long query holds the table: the next expiry (a minute on) tries again.
                log.warning("delivery_log_partitions_deferred", table=timed.table)
        first_minute = (now_ms - ROLLUPS_KEPT_MS) // MINUTE_MS

        def write() -> None:
            db = self._db
            db.execute("DELETE FROM deliveries WHERE at_ms < ?", (now_ms - ATTEMPTS_KEPT_MS,))
            cutoff = now_ms - DEAD_LETTERS_KEPT_MS
            db.execute("DELETE FROM deleted_endpoints WHERE deleted_at_ms < ?", (cutoff,))
            db.execute("DELETE FROM rollups WHERE minute < ?", (first_minute,))
            db.execute("DELETE FROM durations WHERE minute < ?", (first_minute,))
            # Rows another writer wrote for an endpoint while it was purged: no answer shows
            # them (they join no endpoint); the one-row tables would keep them forever.
            for table in ("breakers", "last_errors"):
                db.execute(f"DELETE FROM {table} WHERE ep NOT IN (SELECT key FROM endpoints)")  # noqa: S608 - constant tables
            self._forget_old_evictions(now_ms)

        self._transaction(write)
        self.keep_within_budget(now_ms)

    def used_bytes(self) -> int:
        """Bytes of the store's tables in its schema, indexes and TOAST included."""
        used = self._table_bytes(partitions_too=True)
        metrics.DELIVERY_LOG_INDEX_BYTES.set(used)
        return used

    def _state_bytes(self) -> int:
        """Bytes of the tables no partition drop shrinks: kept per endpoint (deliveries, at most
        ``per_endpoint`` each; breakers, last errors) and per endpoint and minute over the 24 h
        window (rollups, durations). They grow with the endpoints, not with time, and take
        their share of the budget first."""
        return self._table_bytes(partitions_too=False)

    def _table_bytes(self, *, partitions_too: bool) -> int:
        (used,) = self._db.execute(
            "SELECT CAST(COALESCE(SUM(pg_total_relation_size(c.oid)), 0) AS BIGINT)"
            " FROM pg_class c WHERE c.relnamespace = CAST(current_schema() AS regnamespace)"
            " AND c.relkind = 'r' AND (? OR NOT c.relispartition)",
            (partitions_too,),
        ).fetchone()
        return int(used)

    def _fitted(self, write: Callable[[], None]) -> None:
        """Write a batch, unless the store is over its whole budget (``IndexFull``, nothing
        written): as a full SQLite index, the log's routes answer 503 until there is room."""
        if self._over_budget:
            self.keep_within_budget(self._clock())
        if self._over_budget:
            raise IndexFull(
                f"the store holds {self.used_bytes():,} bytes, over its budget of"
                f" {self._max_bytes:,}, {self._state_bytes():,} of them kept per endpoint"
                " (no partition to drop); only the current hour (and day) is left to drop"
            )
        try:
            self._transaction(write)
        except psycopg.errors.CheckViolation:
            # "No partition of relation … found for row": one this writer knew of was dropped
            # since (by another, for the budget or with a clock ahead). Read them again, make
            # what is missing (never what the budget dropped: those records are skipped), and
            # write the batch once more.
            endpoints, timed, times = self._prepared
            log.warning("delivery_log_partition_gone", table=timed.table)
            self._hours.clear()
            self._prepare(endpoints, timed, times)
            self._transaction(write)

    def keep_within_budget(self, now_ms: int | None = None) -> None:
        """Past ``BUDGET_HIGH`` of the budget, drop the oldest partitions down to
        ``BUDGET_LOW``, whichever table they are of, by their end: the oldest history first, as
        the SQLite index evicts (by their end, an hour of attempts goes before the day of dead
        letters it is the last hour of). The partition holding the current time (or that
        ended within ``BUDGET_GRACE_MS``) is never dropped (the
        current hour of attempts, the current day of dead letters), so a store still over the
        whole budget takes no more batches. Measured on the expiry timer (and before each batch
        while over), not after every batch: PostgreSQL counts sizes in whole pages anyway."""
        if now_ms is None:
            return
        if self.used_bytes() <= BUDGET_HIGH * self._max_bytes:
            self._over_budget = False
            return
        state = self._state_bytes()
        target = budget_target(state, self._max_bytes)
        if target > BUDGET_LOW * self._max_bytes:
            # No partition drop makes the room these tables take: history goes only down to
            # under 90 % (or the whole budget), not all of it. The budget is too small.
            log.warning(
                "delivery_log_budget_too_small",
                per_endpoint_bytes=state,
                budget_bytes=self._max_bytes,
            )
        oldest_first = sorted(
            ((partition, timed.table) for timed, _ in PARTITIONED
             for partition in self._partitions(timed.table)),
            key=lambda found: found[0].end_ms,
        )  # fmt: skip
        try:
            for partition, table in oldest_first:
                # Or just ended: consumers behind by minutes are still writing its tail.
                current = partition.end_ms > now_ms - BUDGET_GRACE_MS
                if current or self.used_bytes() <= target:
                    break
                rows = self._drop(table, [partition], for_budget=True)
                metrics.DELIVERY_LOG_EVICTED.inc(rows)
                log.warning(
                    "delivery_log_evicted", table=table, partition=partition.name, rows=rows
                )
        except LOCK_WAITED_OUT:
            # A long query holds the table: the next measure (a minute on, or the next batch
            # while over) tries again.
            log.warning("delivery_log_eviction_deferred", used_bytes=self.used_bytes())
        used = self.used_bytes()
        over = used > self._max_bytes
        if over and not self._over_budget:
            log.warning(
                "delivery_log_over_budget",
                used_bytes=used,
                per_endpoint_bytes=state,  # no partition drop changes it
                budget_bytes=self._max_bytes,
            )
        self._over_budget = over


def budget_target(state_bytes: int, max_bytes: int) -> float:
    """What the budget drops history down to: 80 % of it, or, when the tables no drop shrinks
    already take that, 90 % or the whole budget, the first they leave room under (dropping
    every partition but the current ones would make no room for them either)."""
    return next(
        (
            share * max_bytes
            for share in (BUDGET_LOW, BUDGET_HIGH)
            if state_bytes < share * max_bytes
        ),
        float(max_bytes),
    )


def slices(
    now_ms: int, timed: Timed, since_ms: int | None, until_ms: int | None
) -> list[tuple[int | None, int | None]]:
    """Time ranges ``[low, high)`` (None: unbounded), newest first, that together hold every
    time: from the start of the partition holding the time an hour ago on (attempts: the last
    hour; dead letters: today, or from yesterday in the first hour of a day), then a day at a
    time back past the retention, then anything older; only those that meet
    ``[since_ms, until_ms)``. Each slice of dead letters is one partition of theirs."""
    first = start_of(now_ms - HOUR_MS, timed.partition_ms)
    edges = range(first, now_ms - KEPT_MS[timed] - SLICE_MS, -SLICE_MS)
    ranges = [(edges[0], None), *zip(edges[1:], edges[:-1], strict=True), (None, edges[-1])]
    return [
        (low, high)
        for low, high in ranges
        if (low is None or until_ms is None or low < until_ms)
        and (high is None or since_ms is None or high > since_ms)
    ]


class PgReader(IndexQueries):
    """The shared queries, one connection per reader thread (as the SQLite readers); a
    connection that broke (PostgreSQL restarted) is opened again by the next query.

    A page newest first is asked a slice of time at a time (``slices``), newest first, until
    it is full: PostgreSQL then plans only the partitions of that slice. One query over all
    of them costs its planning for each (170 partitions of attempts, an hour each; 32 of dead
    letters, a day each), and an endpoint's newest rows are mostly in its newest hours."""

    SPANS_COVERING = (
        "EXISTS (SELECT 1 FROM jsonb_array_elements(?::jsonb) j"
        " WHERE d.pos >= (j->>0)::bigint AND d.pos < (j->>1)::bigint"
        " AND d.dead_at_ms >= (j->>2)::bigint AND d.dead_at_ms < (j->>3)::bigint)"
    )

    def __init__(self, url: str, clock: Callable[[], int] = _now_ms) -> None:
        self._url = url
        self._clock = clock
        self._local = threading.local()
        self._opened: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()

    def _newest(self, page: Page, limit: int) -> list[Any]:
        column = f"{page.alias}.{page.timed.time_column}"
        rows: list[Any] = []
        for low, high in slices(self._clock(), page.timed, page.since_ms, page.until_ms):
            bounds = [(f"{column} >= ?", low), (f"{column} < ?", high)]
            more = [(condition, ms) for condition, ms in bounds if ms is not None]
            sql = page.sql(*(condition for condition, _ in more))
            args = (*page.args, *(ms for _, ms in more), limit - len(rows))
            rows += self._db().execute(sql, args).fetchall()
            if len(rows) >= limit:
                break
        return rows

    def _answer_span(self, history: Sequence[StoredAttempt]) -> tuple[str, tuple[int, ...]]:
        """Within the history's span of time: PostgreSQL reads the partitions of those hours
        only, not all of them."""
        times = [stored.at_ms for stored in history]
        return " AND at_ms >= ? AND at_ms <= ?", (min(times), max(times))

    def _db(self) -> PgDatabase:
        db: PgDatabase | None = getattr(self._local, "db", None)
        if db is None or db.connection.closed or db.connection.broken:
            db = PgDatabase(open_connection(self._url))
            self._local.db = db
            with self._lock:
                self._opened.append(db.connection)
        return db

    def close_all(self) -> None:
        with self._lock:
            for connection in self._opened:
                connection.close()
            self._opened.clear()
