"""The delivery log's index on its own (SQLite in a temporary directory, no broker): caps,
percentiles, cursors and record ids."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.delivery_log.api import decode_cursor, encode_cursor
from services.ingest.delivery_log.store import (
    ATTEMPT_ID_PREFIX,
    WAL_CHECKPOINT_BYTES,
    WAL_LIMIT_BYTES,
    AttemptFilter,
    Fetched,
    IndexFull,
    LogReader,
    LogWriter,
    attempt_id,
    bucket_upper_ms,
    duration_bucket,
    parse_record_id,
    percentile_ms,
    position,
)
from shared.model.messages import encode
from tests.support.attempts import attempt, dead_letter, now_ms, replay_job
from tests.support.index_files import fill_to_the_limit


@pytest.fixture(name="index")
def fixture_index(tmp_path: Path) -> tuple[LogWriter, LogReader]:
    path = tmp_path / "log.sqlite3"
    return LogWriter(path, per_endpoint=100, max_bytes=64 << 20), LogReader(path)


def fetched(offset: int, value: bytes, partition: int = 0) -> Fetched:
    return Fetched(partition, offset, value)


def test_an_endpoint_keeps_only_its_newest_attempts(index: tuple[LogWriter, LogReader]) -> None:
    writer, reader = index
    base = now_ms() - 60_000
    records = [encode(attempt("ep_1", f"evt_{i}", at_ms=base + i)) for i in range(150)]
    other = [encode(attempt("ep_2", f"evt_{i}", at_ms=base + i)) for i in range(5)]
    writer.add_attempts([fetched(i, v) for i, v in enumerate(records + other)], now_ms())

    kept = reader.attempts("ep_1", AttemptFilter(), 1000)
    assert [a.event_id for a in kept] == [f"evt_{i}" for i in reversed(range(50, 150))]
    assert len(reader.attempts("ep_2", AttemptFilter(), 1000)) == 5


def test_the_day_figures_count_every_attempt_whatever_the_cap(
    index: tuple[LogWriter, LogReader],
) -> None:
    writer, reader = index
    now = now_ms()
    records = [encode(attempt("ep_1", f"evt_{i}", at_ms=now - 1_000)) for i in range(150)]
    writer.add_attempts([fetched(i, v) for i, v in enumerate(records)], now)
    _, day, _ = reader.health("ep_1", [], now)
    assert day.attempts == 150


def test_unreadable_records_are_counted_and_skipped(index: tuple[LogWriter, LogReader]) -> None:
    writer, reader = index
    good = encode(attempt("ep_1", "evt_ok"))
    assert writer.add_attempts([fetched(0, b"{not json"), fetched(1, good)], now_ms()) == 1
    assert writer.unreadable == 1
    assert [a.event_id for a in reader.attempts("ep_1", AttemptFilter(), 10)] == ["evt_ok"]


def test_expire_drops_what_the_topic_no_longer_holds(index: tuple[LogWriter, LogReader]) -> None:
    writer, reader = index
    now = now_ms()
    old = encode(attempt("ep_1", "evt_old", at_ms=now - 8 * 86_400_000))
    new = encode(attempt("ep_1", "evt_new", at_ms=now - 1_000))
    writer.add_attempts([fetched(0, old), fetched(1, new)], now)
    writer.expire(now)
    assert [a.event_id for a in reader.attempts("ep_1", AttemptFilter(), 10)] == ["evt_new"]


def test_percentiles_come_from_the_bucket_holding_the_rank() -> None:
    durations = [10.0] * 98 + [900.0, 15_000.0]
    histogram: dict[int, int] = {}
    for duration in durations:
        bucket = duration_bucket(duration)
        histogram[bucket] = histogram.get(bucket, 0) + 1
    pairs = list(histogram.items())
    p50 = percentile_ms(pairs, 0.5)
    p99 = percentile_ms(pairs, 0.99)
    assert p50 is not None
    assert 10.0 <= p50 <= 10.0 * 2 ** (1 / 8)
    assert p99 is not None
    assert 900.0 <= p99 <= 900.0 * 2 ** (1 / 8)
    assert percentile_ms([], 0.5) is None


@given(st.floats(min_value=0.002, max_value=3_600_000.0))
def test_a_duration_is_at_most_its_buckets_upper_bound_and_above_the_one_before(
    duration: float,
) -> None:
    bucket = duration_bucket(duration)
    assert bucket_upper_ms(bucket - 1) < duration * (1 + 1e-9)
    assert duration <= bucket_upper_ms(bucket) * (1 + 1e-9)


@given(st.integers(min_value=0, max_value=2**22), st.integers(min_value=0, max_value=2**40 - 1))
def test_record_ids_round_trip(partition: int, offset: int) -> None:
    text = attempt_id(position(partition, offset))
    assert parse_record_id(text, ATTEMPT_ID_PREFIX) == (partition, offset)


@pytest.mark.parametrize("text", ["att_", "att_1", "att_x_1", "att_1_-1", "dlq_1_1", "1_1"])
def test_malformed_record_ids_are_none(text: str) -> None:
    assert parse_record_id(text, ATTEMPT_ID_PREFIX) is None


@given(st.integers(min_value=0, max_value=2**50), st.integers(min_value=0, max_value=2**62))
def test_cursors_round_trip(at_ms: int, pos: int) -> None:
    assert decode_cursor(encode_cursor(at_ms, pos)) == (at_ms, pos)


# --- the byte budget (issue 23) ---------------------------------------------------------------

BUDGET = 1 << 20
PAGE_1K = "<html>" + "x" * 1018


def attempts_of(endpoints: list[str], first: int, count: int, base_ms: int) -> list[Fetched]:
    """``count`` failed attempts with 1 KiB answers, one millisecond apart, round robin."""
    return [
        fetched(n, encode(attempt(endpoints[n % len(endpoints)], f"evt_{n}", at_ms=base_ms + n,
                                  outcome="http_5xx", status=502, response_body=PAGE_1K)))
        for n in range(first, first + count)
    ]  # fmt: skip


def test_the_writer_checkpoints_past_sqlites_default_and_within_the_wal_limit(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log.sqlite3"
    writer, reader = LogWriter(path, per_endpoint=100_000, max_bytes=64 << 20), LogReader(path)
    wal = path.with_name(path.name + "-wal")
    sqlite_default = 1000 * writer.page_size
    base = now_ms() - 3_600_000
    endpoints = [f"ep_{n}" for n in range(50)]
    written = 0
    while wal.stat().st_size <= sqlite_default:
        writer.add_attempts(attempts_of(endpoints, written, 500, base), now_ms())
        written += 500
    # Not copied into the file after every commit past 4 MB, and readable all the same.
    assert reader.attempts("ep_0", AttemptFilter(), 1)[0].event_id == f"evt_{written - 50}"
    assert WAL_CHECKPOINT_BYTES < WAL_LIMIT_BYTES
    (pages,) = writer._sqlite.execute("PRAGMA wal_autocheckpoint").fetchone()
    assert pages * writer.page_size == WAL_CHECKPOINT_BYTES
    writer.close()


def test_an_endpoint_purged_at_its_cap_keeps_the_wal_within_its_limit(tmp_path: Path) -> None:
    """Deleting an endpoint rewrites a page for nearly each of its rows (they lie among other
    endpoints'): some 50 MB at 10,000 attempts. Its commit must not land on a WAL already
    holding up to WAL_CHECKPOINT_BYTES, or the WAL passes the limit the budget promises."""
    path = tmp_path / "log.sqlite3"
    writer = LogWriter(path, per_endpoint=10_000, max_bytes=1 << 30)
    wal = path.with_name(path.name + "-wal")
    endpoints = [f"ep_{n}" for n in range(4)]
    base = now_ms() - 3_600_000
    for first in range(0, 40_000, 2000):
        writer.add_attempts(attempts_of(endpoints, first, 2000, base), now_ms())
    # The WAL short of its checkpoint by less than the commit to come, as it is once in every
    # WAL_CHECKPOINT_BYTES (the fill's commits are far smaller than the 4 MB it stops short).
    writer._sqlite.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    filler, written = ["ep_filler"], 40_000
    while wal.stat().st_size < WAL_CHECKPOINT_BYTES - (4 << 20):
        writer.add_attempts(attempts_of(filler, written, 20, base), now_ms())
        written += 20
    assert wal.stat().st_size < WAL_CHECKPOINT_BYTES  # not checkpointed yet
    writer.purge_endpoints(["ep_0"], now_ms())
    assert wal.stat().st_size <= WAL_LIMIT_BYTES
    writer.close()


def test_an_eviction_round_on_a_big_index_keeps_the_wal_within_its_limit(
    tmp_path: Path,
) -> None:
    """A round evicts the oldest 5,000 rows of each table, whose index entries lie all over
    the endpoint, event and delivery indexes: some 37 MB of pages at a million attempts in
    4 KiB pages, 42 MB here (400,000 rows in 64 KiB pages, built in SQL to be quick). It must
    not land on a WAL about to be checkpointed."""
    path = tmp_path / "log.sqlite3"
    writer, rows, base = big_index(path), BIG_ROWS, now_ms() - 3_600_000
    wal = path.with_name(path.name + "-wal")
    db = writer._sqlite
    # The WAL short of its checkpoint by less than the commit to come, as it is once in every
    # WAL_CHECKPOINT_BYTES (the fill's commits are far smaller than the 4 MB it stops short).
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    written = rows
    while wal.stat().st_size < WAL_CHECKPOINT_BYTES - (4 << 20):
        writer.add_attempts(attempts_of(["ep_filler"], written, 20, base), now_ms())
        written += 20
    assert wal.stat().st_size < WAL_CHECKPOINT_BYTES  # not checkpointed yet
    assert writer.make_room(writer.used_bytes() - 1) > 0
    assert wal.stat().st_size <= WAL_LIMIT_BYTES
    writer.close()


BIG_ROWS, BIG_ENDPOINTS = 400_000, 1000


def big_index(path: Path, rows: int = BIG_ROWS) -> LogWriter:
    """``rows`` attempts and their deliveries over BIG_ENDPOINTS (ep_1 …), an hour and more
    old, in 64 KiB pages: each page a commit dirties weighs as 16 of 4 KiB, as on an index
    many times bigger. Built in SQL to be quick."""
    with contextlib.closing(sqlite3.connect(path)) as made:
        made.execute("PRAGMA page_size=65536")
        made.execute("VACUUM")
    writer = LogWriter(path, per_endpoint=10_000, max_bytes=1 << 30)
    endpoints, base = BIG_ENDPOINTS, now_ms() - 3_600_000
    db = writer._sqlite
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO endpoints VALUES (?, ?, 'acc_1')",
        [(key, f"ep_{key}") for key in range(1, endpoints + 1)],
    )
    numbers = f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})"
    db.execute(
        f"{numbers} INSERT INTO attempts SELECT i, i % {endpoints} + 1, {base - rows} + i,"
        " random(), 'wh_' || i, 'evt_' || i, 1, 1.0, 'http_5xx', 502, NULL, 'x', NULL, NULL,"
        " NULL, NULL FROM n"
    )
    db.execute(
        f"{numbers} INSERT OR IGNORE INTO deliveries SELECT i % {endpoints} + 1, random(),"
        f" {base - rows} + i, i, 'dead' FROM n"
    )
    db.execute("COMMIT")
    writer._forget_endpoints()
    writer._recount()
    return writer


def test_gathered_batches_on_a_big_index_keep_the_wal_within_its_limit(tmp_path: Path) -> None:
    """A batch as the log gathers them (5,000 attempts, here over 1,000 endpoints) dirties a
    page per endpoint and per random key it touches: 17 MB of WAL at 300,000 attempts in 4 KiB
    pages, 26 MB at a million, more at the cap; 40 MB here (800,000 in 64 KiB pages). On a WAL
    short of its checkpoint (up to WAL_CHECKPOINT_BYTES) it would pass WAL_LIMIT_BYTES: the
    writer, having measured such a batch, checkpoints before it instead."""
    path = tmp_path / "log.sqlite3"
    rows, base = 800_000, now_ms() - 3_600_000
    writer, wal = big_index(path, rows), path.with_name(path.name + "-wal")
    endpoints = [f"ep_{key}" for key in range(1, BIG_ENDPOINTS + 1)]
    written, sizes = rows, []
    for _ in range(3):
        writer.add_attempts(attempts_of(endpoints, written, 5000, base), now_ms())
        written += 5000
        sizes.append(wal.stat().st_size)
        # Then small batches until the WAL nears its checkpoint, as it does once in every
        # WAL_CHECKPOINT_BYTES (begun again on a truncated file: what it holds is its size).
        writer._sqlite.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for _ in range(40):
            if wal.stat().st_size >= WAL_CHECKPOINT_BYTES - (3 << 20):
                break
            writer.add_attempts(attempts_of(["ep_filler"], written, 20, base), now_ms())
            written += 20
            sizes.append(wal.stat().st_size)
    # The first batch, on an empty WAL, is more than the room it would find on a full one.
    assert sizes[0] > WAL_LIMIT_BYTES - WAL_CHECKPOINT_BYTES + (3 << 20)
    assert max(sizes) <= WAL_LIMIT_BYTES
    writer.close()


def test_a_reader_through_the_checkpoint_before_a_batch_neither_blocks_nor_loses_it(
    tmp_path: Path,
) -> None:
    """The checkpoint is passive: a reader's snapshot keeps the WAL from beginning again, and
    the batch is appended to it instead of waiting."""
    path = tmp_path / "log.sqlite3"
    writer, reader = LogWriter(path, per_endpoint=100, max_bytes=64 << 20), LogReader(path)
    base = now_ms() - 3_600_000
    writer.add_attempts(attempts_of(["ep_1"], 0, 10, base), now_ms())
    reading = sqlite3.connect(path, isolation_level=None, timeout=0)
    reading.execute("BEGIN")
    assert reading.execute("SELECT COUNT(*) FROM attempts").fetchone() == (10,)
    writer._largest_batch = WAL_LIMIT_BYTES  # every batch now checkpoints first
    writer.add_attempts(attempts_of(["ep_1"], 10, 10, base), now_ms())
    assert reading.execute("SELECT COUNT(*) FROM attempts").fetchone() == (10,)
    reading.execute("COMMIT")
    reading.close()
    assert len(reader.attempts("ep_1", AttemptFilter(), 100)) == 20
    writer.close()


def test_the_wal_file_holds_what_was_written_since_it_began_again(tmp_path: Path) -> None:
    """Its size is then what the WAL holds (journal_size_limit 0), not the most it ever held:
    a checkpoint and one small batch leave it small."""
    path = tmp_path / "log.sqlite3"
    writer = LogWriter(path, per_endpoint=100_000, max_bytes=64 << 20)
    wal = path.with_name(path.name + "-wal")
    endpoints, base, written = [f"ep_{n}" for n in range(50)], now_ms() - 3_600_000, 0
    while wal.stat().st_size < 4 << 20:
        writer.add_attempts(attempts_of(endpoints, written, 500, base), now_ms())
        written += 500
    writer._checkpoint()
    writer.add_attempts(attempts_of(endpoints, written, 1, base), now_ms())
    assert wal.stat().st_size < 1 << 20
    writer.close()


@pytest.fixture(name="budgeted")
def fixture_budgeted(tmp_path: Path) -> tuple[LogWriter, LogReader, Path]:
    path = tmp_path / "log.sqlite3"
    return LogWriter(path, per_endpoint=100_000, max_bytes=BUDGET), LogReader(path), path


def test_filled_past_its_budget_the_index_keeps_the_newest_within_it(
    budgeted: tuple[LogWriter, LogReader, Path],
) -> None:
    writer, reader, path = budgeted
    endpoints = ["ep_1", "ep_2", "ep_3"]
    base = now_ms() - 3_600_000
    total = 3000  # about 4 MB of rows: four times the budget
    for first in range(0, total, 100):
        writer.add_attempts(attempts_of(endpoints, first, 100, base), now_ms())
        assert writer.used_bytes() <= BUDGET
        assert path.stat().st_size <= BUDGET

    kept = {a.event_id for ep in endpoints for a in reader.attempts(ep, AttemptFilter(), 100_000)}
    assert 0 < len(kept) < total
    oldest_kept = min(int(e.removeprefix("evt_")) for e in kept)
    assert kept == {f"evt_{n}" for n in range(oldest_kept, total)}, "the oldest went first"
    assert len(kept) >= 400, "each round evicts a share of the rows held, never all of them"
    # The log is complete exactly after the newest attempt evicted (evt_{n} at base + n),
    # and a restart knows it.
    assert writer.evicted_through_ms == base + oldest_kept - 1
    writer.close()
    assert LogWriter(path, 100_000, BUDGET).evicted_through_ms == base + oldest_kept - 1
    for n, ep in enumerate(endpoints):
        newest = reader.attempts(ep, AttemptFilter(), 1)[0]
        assert newest.event_id == f"evt_{total - len(endpoints) + n}"
        assert newest.response_body == PAGE_1K


def test_a_batch_that_finds_the_disk_full_evicts_the_oldest_and_fits(
    budgeted: tuple[LogWriter, LogReader, Path],
) -> None:
    writer, reader, path = budgeted
    base = now_ms() - 3_600_000
    writer.add_attempts(attempts_of(["ep_1"], 0, 300, base), now_ms())
    fill_to_the_limit(path, writer.max_pages)

    assert writer.add_attempts(attempts_of(["ep_1", "ep_9"], 300, 50, base), now_ms()) == 50
    kept = [a.event_id for a in reader.attempts("ep_1", AttemptFilter(), 1000)]
    assert kept[0] == "evt_348"
    assert "evt_0" not in kept, "the oldest made room"
    assert reader.attempts("ep_9", AttemptFilter(), 1)[0].event_id == "evt_349"


def test_a_batch_that_cannot_fit_is_refused_whole(
    budgeted: tuple[LogWriter, LogReader, Path],
) -> None:
    writer, reader, path = budgeted
    fill_to_the_limit(path, writer.max_pages)  # nothing of the index's own to evict
    with pytest.raises(IndexFull):
        writer.add_attempts(attempts_of(["ep_1"], 0, 50, now_ms() - 60_000), now_ms())
    assert reader.attempts("ep_1", AttemptFilter(), 10) == []
    assert writer.positions() == {}


def test_a_dead_letter_keeps_no_copy_of_the_answers_its_attempts_rows_hold(
    budgeted: tuple[LogWriter, LogReader, Path],
) -> None:
    writer, reader, _ = budgeted
    base = now_ms() - 60_000
    history = [
        attempt("ep_1", "evt_1", at_ms=base + k, attempt=k + 1, outcome="http_5xx", status=502,
                response_body=f"{k}" + PAGE_1K[1:])
        for k in range(8)
    ]  # fmt: skip
    writer.add_dead_letters([fetched(0, encode(dead_letter("ep_1", "evt_1", history)))])
    (letter,) = reader.dead_letters("ep_1", [], None, 10)
    # Before the attempts are indexed (or once evicted): the start of the last answer only.
    assert [a.response_body for a in letter[0].attempts] == [None] * 7 + [("7" + PAGE_1K[1:])[:256]]

    writer.add_attempts([fetched(k, encode(a)) for k, a in enumerate(history)], now_ms())
    (letter,) = reader.dead_letters("ep_1", [], None, 10)
    assert [a.response_body for a in letter[0].attempts] == [f"{k}" + PAGE_1K[1:] for k in range(8)]


def test_a_deleted_endpoint_is_purged_and_its_later_records_skipped(
    index: tuple[LogWriter, LogReader],
) -> None:
    writer, reader = index
    base = now_ms() - 60_000
    first = [encode(attempt(ep, "evt_0", at_ms=base)) for ep in ("ep_1", "ep_2")]
    writer.add_attempts([fetched(n, v) for n, v in enumerate(first)], now_ms())
    writer.purge_endpoints(["ep_1"], now_ms())
    writer.add_attempts([fetched(2, encode(attempt("ep_1", "evt_1", at_ms=base)))], now_ms())

    assert reader.attempts("ep_1", AttemptFilter(), 10) == []
    assert reader.health("ep_1", [], now_ms())[1].attempts == 0
    assert len(reader.attempts("ep_2", AttemptFilter(), 10)) == 1


def test_deliveries_that_ended_are_capped_per_endpoint_and_waiting_ones_kept(
    index: tuple[LogWriter, LogReader],
) -> None:
    writer, reader = index
    base = now_ms() - 600_000
    waiting = [attempt("ep_1", f"evt_w{n}", at_ms=base + n, outcome="http_5xx", status=503,
                       next_attempt_at_ms=base + 60_000) for n in range(30)]  # fmt: skip
    delivered = [attempt("ep_1", f"evt_d{n}", at_ms=base + 100 + n) for n in range(300)]
    records = [encode(a) for a in waiting + delivered]
    writer.add_attempts([fetched(n, v) for n, v in enumerate(records)], now_ms())

    assert reader.health("ep_1", [], now_ms())[2].waiting == 30
    db = sqlite3.connect(writer_path(reader))
    (ended,) = db.execute("SELECT COUNT(*) FROM deliveries WHERE state != 'waiting'").fetchone()
    db.close()
    assert ended == 100  # the fixture's per_endpoint


def writer_path(reader: LogReader) -> Path:
    return reader._path  # the file behind the reader


def test_open_letters_are_counted_past_sqlites_variable_limit(
    index: tuple[LogWriter, LogReader],
) -> None:
    """A term and variables per job failed: past about 1,000 jobs the expression tree is too
    deep for SQLite, past about 8,000 the variables are too many."""
    writer, reader = index
    now = now_ms()
    letters = [
        encode(dead_letter("ep_1", f"evt_{i}", [], dead_at_ms=now - 1_000)) for i in range(3)
    ]
    writer.add_dead_letters([fetched(i, v) for i, v in enumerate(letters)])
    # Many jobs, each covering only the first letter; one more covers the second.
    jobs = [replay_job("ep_1", partition=0, end_offset=1, id=f"rpl_{i}") for i in range(10_000)]
    jobs.append(replay_job("ep_1", partition=0, end_offset=2, id="rpl_last", since_ms=0))

    _, _, summary = reader.health("ep_1", jobs, now)

    assert summary.dead_letters_open == 1


def test_a_dead_letters_answers_are_found_by_the_events_index(tmp_path: Path) -> None:
    """SQLite (no statistics) plans the answers' lookup on ``attempts_by_event``: bounds on
    the time would lead it to the endpoint's index, up to all of its rows for each letter."""
    path = tmp_path / "log.sqlite3"
    writer, reader = LogWriter(path, per_endpoint=100, max_bytes=64 << 20), LogReader(path)
    history = [attempt("ep_1", "evt_1", outcome="http_5xx", status=502, response_body="no")]
    writer.add_attempts([fetched(0, encode(history[0]))], now_ms())
    writer.add_dead_letters([fetched(0, encode(dead_letter("ep_1", "evt_1", history)))])
    asked: list[tuple[str, tuple[object, ...]]] = []
    connection = reader._db()

    class Recording:
        def execute(self, sql: str, args: tuple[object, ...] = ()) -> sqlite3.Cursor:
            asked.append((sql, args))
            return connection.execute(sql, args)

    recording = Recording()
    reader._db = lambda: recording  # type: ignore[method-assign,assignment,return-value]
    (letter,) = reader.dead_letters("ep_1", [], None, 10)
    assert letter[0].attempts[0].response_body == "no"
    ((sql, args),) = [(sql, args) for sql, args in asked if "response_body FROM attempts" in sql]
    plan = " ".join(row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}", args))
    assert "attempts_by_event" in plan, plan
    writer.close()
    reader.close_all()
