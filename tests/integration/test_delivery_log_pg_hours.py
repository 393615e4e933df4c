"""The PostgreSQL delivery log's hour partitions, against a real server (no broker): the byte
budget drops the oldest hours and the log keeps answering, retention drops whole hours, and a
store made by day (before hours) goes on working, its days read and dropped as hours are."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from structlog.testing import capture_logs

from services.ingest.delivery_log.fill import EVICTED_STREAM, complete_since_ms
from services.ingest.delivery_log.pg_store import (
    BUDGET_GRACE_MS,
    SCHEMA,
    SCHEMA_VERSION,
    PgReader,
    PgWriter,
    partition_name,
    partition_of,
    start_of,
)
from services.ingest.delivery_log.store import (
    ATTEMPT_ID_PREFIX,
    ATTEMPTS_KEPT_MS,
    DAY_MS,
    HOUR_MS,
    RESPONSE_BODY_CHARS,
    AttemptFilter,
    Fetched,
    IndexFull,
    IndexQueries,
    parse_record_id,
    position,
)
from shared.model.messages import AttemptRecord, encode
from tests.support.attempts import attempt, dead_letter, now_ms
from tests.support.postgres import PostgresServer

ANSWER = "<html>" + "x" * (RESPONSE_BODY_CHARS - 6)
ROWS_PER_HOUR = 200
BIG_BUDGET = 1 << 30
ENDPOINT = "ep_hours"


def failed(event_id: str, at_ms: int) -> AttemptRecord:
    return attempt(ENDPOINT, event_id, at_ms=at_ms, outcome="http_5xx", status=502,
                   response_body=ANSWER)  # fmt: skip


def of_hours(hours: list[int]) -> list[AttemptRecord]:
    """``ROWS_PER_HOUR`` failed attempts at the start of each hour, each with a 1 KiB answer."""
    return [failed(f"evt_{hour}_{n:04}", hour * HOUR_MS + n) for hour in hours
            for n in range(ROWS_PER_HOUR)]  # fmt: skip


def write(writer: PgWriter, records: list[AttemptRecord], first_offset: int = 0) -> None:
    fetched = [Fetched(0, first_offset + n, encode(r)) for n, r in enumerate(records)]
    writer.add_attempts(fetched, now_ms())


def listed(reader: PgReader) -> set[str]:
    return {a.event_id for a in reader.attempts(ENDPOINT, AttemptFilter(), 100_000)}


@pytest.fixture(name="url")
def fixture_url(postgres: PostgresServer) -> str:
    return postgres.new_schema()


@pytest.fixture(name="reader")
def fixture_reader(url: str) -> Iterator[PgReader]:
    reader = PgReader(url)
    yield reader
    reader.close_all()


def test_the_budget_drops_the_oldest_hours_of_today_and_the_log_keeps_answering(
    url: str, reader: PgReader
) -> None:
    """Five hours of attempts (the last four and the current one), past 90 % of the budget:
    the oldest hours go, the current one stays, the log says it is complete after the newest
    hour dropped, and it takes the next batch (by day, all of it was one day that could not
    be dropped: the store refused every batch until midnight). The same rows copied in again
    by another writer are kept once (idempotent by position)."""
    now = now_ms()
    this_hour = now // HOUR_MS
    hours = list(range(this_hour - 4, this_hour + 1))
    records = of_hours(hours)
    filler = PgWriter(url, per_endpoint=100_000, max_bytes=BIG_BUDGET, now_ms=now)
    again = PgWriter(url, per_endpoint=100_000, max_bytes=BIG_BUDGET, now_ms=now)
    try:
        write(filler, records)
        write(again, records)
        assert len(reader.attempts(ENDPOINT, AttemptFilter(), 100_000)) == len(records)
        used = filler.used_bytes()
    finally:
        again.close()
        filler.close()
    budget = int(used / 0.95)  # past the 90 % threshold, within the budget

    writer = PgWriter(url, per_endpoint=100_000, max_bytes=budget, now_ms=now)  # expiry runs
    try:
        kept = listed(reader)
        dropped = [h for h in hours if f"evt_{h}_0000" not in kept]
        assert dropped, "the budget dropped no hour"
        assert dropped == hours[: len(dropped)], "not the oldest hours first"
        assert this_hour not in dropped
        assert kept == {r.event_id for r in records if r.at_ms // HOUR_MS not in dropped}
        through_ms = (dropped[-1] + 1) * HOUR_MS - 1
        assert writer.evicted_through_ms == through_ms
        assert reader.positions()[(EVICTED_STREAM, 0)] == through_ms
        assert complete_since_ms(None, through_ms) == (dropped[-1] + 1) * HOUR_MS
        assert writer.used_bytes() <= 0.8 * budget

        write(writer, [failed("evt_next", now)], first_offset=len(records))  # no IndexFull
        assert "evt_next" in listed(reader)
    finally:
        writer.close()


def test_the_budget_never_drops_the_current_hour(url: str, reader: PgReader) -> None:
    """A store over its whole budget with only the current hour left refuses batches. Its
    clock stands still: started at xx:59:59, the hour would turn and the budget drop it."""
    now = now_ms()
    records = of_hours([now // HOUR_MS])
    writer = PgWriter(url, per_endpoint=100_000, max_bytes=BIG_BUDGET, now_ms=now)
    tight = PgWriter(
        url, per_endpoint=100_000, max_bytes=writer.used_bytes(), now_ms=now, clock=lambda: now
    )
    try:
        write(writer, records)
        tight.keep_within_budget(now)
        assert listed(reader) == {r.event_id for r in records}
        with pytest.raises(IndexFull):
            write(tight, [failed("evt_refused", now)], first_offset=len(records))
    finally:
        tight.close()
        writer.close()


def test_a_budget_the_per_endpoint_tables_fill_is_said_and_refused_by_name(
    url: str, reader: PgReader
) -> None:
    """Over its budget, a store whose per-endpoint tables (deliveries, per-minute figures) take
    more than 80 % of it says so (``delivery_log_budget_too_small``, with their bytes): no
    partition drop can make that room. A batch refused as full names them too."""
    now = now_ms()
    records = [
        attempt(f"ep_many{n:04}", f"evt_m{n:04}", at_ms=now - n * 60_000 % HOUR_MS)
        for n in range(2_000)
    ]
    writer = PgWriter(url, per_endpoint=100_000, max_bytes=BIG_BUDGET, now_ms=now)
    try:
        write(writer, records)
        state = writer._state_bytes()
    finally:
        writer.close()
    with capture_logs() as logs:
        tight = PgWriter(url, per_endpoint=100_000, max_bytes=state, now_ms=now, clock=lambda: now)
    try:
        said = [e for e in logs if e["event"] == "delivery_log_budget_too_small"]
        assert said, logs
        assert said[0]["per_endpoint_bytes"] >= state
        assert said[0]["budget_bytes"] == state
        with pytest.raises(IndexFull, match="kept per endpoint"):
            write(tight, [failed("evt_refused", now)], first_offset=len(records))
    finally:
        tight.close()


def test_retention_drops_whole_hours_past_it(url: str, reader: PgReader) -> None:
    """Expiry a week after two hours: the older hour is all past the retention and goes; the
    newer one, all but its last millisecond past it, stays whole."""
    now = now_ms()
    this_hour = now // HOUR_MS
    records = of_hours([this_hour - 1, this_hour])
    writer = PgWriter(url, per_endpoint=100_000, max_bytes=BIG_BUDGET, now_ms=now)
    try:
        write(writer, records)
        writer.expire((this_hour + 1) * HOUR_MS + ATTEMPTS_KEPT_MS - 1)
        assert listed(reader) == {r.event_id for r in records if r.at_ms >= this_hour * HOUR_MS}
        assert writer.evicted_through_ms is None  # retention is no gap in the log
    finally:
        writer.close()


class OneQuery(PgReader):
    """A page in one query over every partition, as before slices."""

    _newest = IndexQueries._newest


def pages(reader: PgReader, where: AttemptFilter, limit: int) -> list[list[str]]:
    """Every page of the endpoint's attempts, each the ids on it, following the cursor."""
    found: list[list[str]] = []
    before: tuple[int, int] | None = None
    while True:
        page = reader.attempts(ENDPOINT, replace(where, before=before), limit)
        if not page:
            return found
        found.append([a.id for a in page])
        parsed = parse_record_id(page[-1].id, ATTEMPT_ID_PREFIX)
        assert parsed is not None
        before = (round(page[-1].at.timestamp() * 1000), position(*parsed))


def test_pages_asked_in_slices_of_time_are_those_of_one_query(url: str, reader: PgReader) -> None:
    """Rows from six days back to two hours ahead, some at the same millisecond: every page,
    with and without a time window, is the same as one query over all partitions gives."""
    now = now_ms()
    this_hour = now // HOUR_MS
    hours = [
        this_hour + 2,
        this_hour,
        this_hour - 1,
        this_hour - 2,
        this_hour - 30,
        this_hour - 150,
    ]
    records = [
        failed(f"evt_{hour}_{n}", hour * HOUR_MS + n // 2) for hour in hours for n in range(5)
    ]
    writer = PgWriter(url, per_endpoint=100_000, max_bytes=BIG_BUDGET, now_ms=now)
    one_query = OneQuery(url)
    try:
        write(writer, records)
        window = AttemptFilter(since_ms=(this_hour - 100) * HOUR_MS, until_ms=this_hour * HOUR_MS)
        for where in (AttemptFilter(), window):
            for limit in (1, 4, 7, 100):
                assert pages(reader, where, limit) == pages(one_query, where, limit)
        assert sum(map(len, pages(reader, AttemptFilter(), 4))) == len(records)
    finally:
        one_query.close_all()
        writer.close()


# --- a store made by day, before hours ----------------------------------------------------


def day_name(table: str, day: int) -> str:
    return f"{table}_d{datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=day):%Y%m%d}"


def make_store_by_day(url: str, days: range, rows: list[AttemptRecord]) -> None:
    """What the build before hours left: the same tables, a partition a day of each
    partitioned one, and attempts rows in them."""
    with psycopg.connect(url, autocommit=True) as connection:
        for statement in SCHEMA.split(";"):
            if statement.strip():
                connection.execute(statement)
        connection.execute("INSERT INTO layout VALUES (%s)", (SCHEMA_VERSION,))
        for table in ("attempts", "dead_letters"):
            for day in days:
                connection.execute(
                    f"CREATE TABLE {day_name(table, day)} PARTITION OF {table}"
                    f" FOR VALUES FROM ({day * DAY_MS}) TO ({(day + 1) * DAY_MS})"
                )
        connection.execute(
            "INSERT INTO endpoints (key, endpoint_id, account_id) VALUES (1, %s, 'acc_a')",
            (ENDPOINT,),
        )
        with connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO attempts (pos, ep, at_ms, event_key, webhook_id, event_id, attempt,"
                " duration_ms, outcome) VALUES (%s, 1, %s, 0, 'wh', %s, 1, 1.0, 'success')",
                [(n, r.at_ms, r.event_id) for n, r in enumerate(rows)],
            )


def partitions_holding(url: str) -> dict[str, str]:
    """Each attempt's partition, by event id."""
    with psycopg.connect(url) as connection:
        rows = connection.execute("SELECT event_id, tableoid::regclass::text FROM attempts")
        return dict(rows.fetchall())


def test_a_store_made_by_day_is_read_and_expired_and_new_hours_go_beside_its_days(
    url: str, reader: PgReader
) -> None:
    """Days from two days ago to two days ahead, rows yesterday and today: the new build
    starts on it, lists them, puts records of a day no day partition covers in hours, and
    drops days and hours alike, past retention and for the budget."""
    now = now_ms()
    today = now // DAY_MS
    old = [
        failed("evt_two_days_ago", (today - 2) * DAY_MS),
        failed("evt_yesterday", (today - 1) * DAY_MS),
        failed("evt_today", today * DAY_MS),
    ]
    make_store_by_day(url, range(today - 2, today + 3), old)

    writer = PgWriter(url, per_endpoint=100_000, max_bytes=BIG_BUDGET, now_ms=now)
    try:
        assert listed(reader) == {r.event_id for r in old}
        later_hour = (today + 3) * 24 + 1
        later = [
            failed("evt_later", later_hour * HOUR_MS),
            failed("evt_after", (later_hour + 1) * HOUR_MS),
        ]
        write(writer, later, first_offset=10)
        holding = partitions_holding(url)
        assert holding["evt_today"] == day_name("attempts", today)
        assert holding["evt_later"].startswith("attempts_h")
        assert listed(reader) == {r.event_id for r in old + later}

        # The day two days ago, all of it past the retention, goes; yesterday stays.
        writer.expire((today - 1) * DAY_MS + ATTEMPTS_KEPT_MS)
        assert listed(reader) == {r.event_id for r in old[1:] + later}

        # Over the budget an hour after the later records (and past the grace of an hour
        # that just ended): every day, and the later hour.
        tiny = PgWriter(url, per_endpoint=100_000, max_bytes=1, now_ms=now)
        try:
            tiny.keep_within_budget((later_hour + 1) * HOUR_MS + BUDGET_GRACE_MS)
            assert listed(reader) == {"evt_after"}
            assert tiny.evicted_through_ms == (later_hour + 1) * HOUR_MS - 1
        finally:
            tiny.close()
    finally:
        writer.close()


def partition_names(url: str, table: str) -> set[str]:
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = CAST(%s AS regclass)",
            (table,),
        )
        return {name for (name,) in rows.fetchall()}


def test_expiry_behind_a_long_query_gives_up_its_ddl_until_the_next_one(url: str) -> None:
    """A query holding the attempts table: the expiry's DDL (ACCESS EXCLUSIVE on it) waits
    the lock timeout (2 s), not the query, so readers do not queue behind it; it fails
    nothing and makes the hours at the next expiry."""
    now = now_ms()
    writer = PgWriter(url, per_endpoint=100_000, max_bytes=BIG_BUDGET, now_ms=now)
    later = now + 2 * DAY_MS
    hour = partition_name("attempts", later // HOUR_MS * HOUR_MS, HOUR_MS)
    try:
        with psycopg.connect(url) as holder:  # a transaction, open until the end of the block
            holder.execute("SELECT COUNT(*) FROM attempts")
            started = time.monotonic()
            writer.expire(later)
            assert time.monotonic() - started < 8
            assert hour not in partition_names(url, "attempts")
            # Dead letters, which the query does not hold, get theirs.
            day = partition_name("dead_letters", later // DAY_MS * DAY_MS, DAY_MS)
            assert day in partition_names(url, "dead_letters")
        writer.expire(later)
        assert hour in partition_names(url, "attempts")
    finally:
        writer.close()


def test_a_late_record_of_an_hour_another_writer_evicted_is_skipped_and_the_hour_stays_gone(
    url: str, reader: PgReader
) -> None:
    """Two writers on one store: one drops the older hours of attempts, then the older days of
    dead letters, for the budget; the other, which still knows them, then writes late records
    of a dropped hour and day with ones of the current hour and day. No error: the late ones
    are skipped (the log says it is incomplete there), their partitions are not made again
    (that would undo the eviction), the current ones are written. A partition dropped behind a
    writer's back (not for the budget) is made again on a retry, and one already dropped is no
    error to drop."""
    # Past the grace of the hour before (in its first minutes the budget keeps it whole).
    now = max(now_ms(), now_ms() // HOUR_MS * HOUR_MS + BUDGET_GRACE_MS + 1)
    this_hour, yesterday = now // HOUR_MS, now - DAY_MS
    first = [
        failed(f"evt_{hour}", hour * HOUR_MS + 5) for hour in range(this_hour - 2, this_hour + 1)
    ]
    late = PgWriter(url, per_endpoint=100_000, max_bytes=BIG_BUDGET, now_ms=now, clock=lambda: now)
    try:
        write(late, first)  # it knows the three hours
        write_letters(late, {"evt_dead_yesterday": yesterday, "evt_dead_today": now})
        evicting = PgWriter(url, per_endpoint=100_000, max_bytes=1, now_ms=now, clock=lambda: now)
        evicting.close()  # its expiry dropped all but the current hour and day
        assert listed(reader) == {f"evt_{this_hour}"}
        assert dead(reader) == {"evt_dead_today"}
        gone = partition_name("attempts", (this_hour - 1) * HOUR_MS, HOUR_MS)
        day_gone = partition_name("dead_letters", start_of(yesterday, DAY_MS), DAY_MS)
        assert gone not in partition_names(url, "attempts")
        assert day_gone not in partition_names(url, "dead_letters")

        write(late, [failed("evt_late", this_hour * HOUR_MS - 1), failed("evt_now", now)], 10)
        # Today's day of dead letters is kept whole, before the eviction's time too.
        early = max(now // DAY_MS * DAY_MS, this_hour * HOUR_MS - 1)
        write_letters(late, {"evt_dead_late": yesterday, "evt_dead_early": early}, 10)
        assert listed(reader) == {f"evt_{this_hour}", "evt_now"}
        assert dead(reader) == {"evt_dead_today", "evt_dead_early"}
        assert gone not in partition_names(url, "attempts")
        assert day_gone not in partition_names(url, "dead_letters")
        dropped = partition_of("attempts", gone)
        assert dropped is not None
        assert late._drop("attempts", [dropped], for_budget=True) == 0

        # Dropped behind its back, after the budget's eviction: made again on the retry.
        ahead = partition_name("attempts", (this_hour + 1) * HOUR_MS, HOUR_MS)
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(f"DROP TABLE {ahead}")
        write(late, [failed("evt_ahead", (this_hour + 1) * HOUR_MS)], 20)
        assert "evt_ahead" in listed(reader)
    finally:
        late.close()


def write_letters(writer: PgWriter, times: dict[str, int], first_offset: int = 0) -> None:
    """A dead letter of each event at its time, each with one failed attempt."""
    letters = [
        dead_letter(ENDPOINT, event_id, [failed(event_id, at_ms - 1)], dead_at_ms=at_ms)
        for event_id, at_ms in times.items()
    ]
    writer.add_dead_letters(
        [Fetched(1, first_offset + n, encode(d)) for n, d in enumerate(letters)]
    )


def dead(reader: PgReader) -> set[str]:
    return {view.event_id for view, _, _ in reader.dead_letters(ENDPOINT, [], None, 100)}


def letter_pages(reader: PgReader, limit: int) -> list[list[tuple[int, int]]]:
    """Every page of the endpoint's dead letters, each their (time, position), by cursor."""
    found: list[list[tuple[int, int]]] = []
    before: tuple[int, int] | None = None
    while page := reader.dead_letters(ENDPOINT, [], before, limit):
        found.append([(dead_at_ms, pos) for _, dead_at_ms, pos in page])
        before = found[-1][-1]
    return found


def test_dead_letter_pages_in_slices_of_days_are_those_of_one_query(url: str) -> None:
    """Dead letters are partitioned by day, and asked a day (one partition) at a time: with
    letters on the days' edges (midnight, a millisecond before), 25 hours back and 29 days
    back, some at the same millisecond, every page is the one query's."""
    now = now_ms()
    today = now // DAY_MS * DAY_MS
    times = [now, now, today, today - 1, today - DAY_MS, today - DAY_MS - 1, now - 25 * HOUR_MS,
             now - 25 * HOUR_MS, today - 10 * DAY_MS, today - 29 * DAY_MS]  # fmt: skip
    letters = [
        dead_letter(ENDPOINT, f"evt_{n}", [failed(f"evt_{n}", at_ms - 1)], dead_at_ms=at_ms)
        for n, at_ms in enumerate(times)
    ]
    writer = PgWriter(url, per_endpoint=100_000, max_bytes=BIG_BUDGET, now_ms=now)
    sliced, one_query = PgReader(url, clock=lambda: now), OneQuery(url)
    try:
        writer.add_dead_letters([Fetched(0, n, encode(d)) for n, d in enumerate(letters)])
        days = {partition_name("dead_letters", start_of(t, DAY_MS), DAY_MS) for t in times}
        assert days <= partition_names(url, "dead_letters")
        assert not any(
            name.startswith("dead_letters_h") for name in partition_names(url, "dead_letters")
        )
        for limit in (1, 2, 3, 100):
            assert letter_pages(sliced, limit) == letter_pages(one_query, limit)
        assert sorted(t for page in letter_pages(sliced, 3) for t, _ in page) == sorted(times)
    finally:
        sliced.close_all()
        one_query.close_all()
        writer.close()


def test_dead_letters_hours_of_an_earlier_build_get_hours_beside_them_not_a_day(url: str) -> None:
    """A store whose dead letters a build made by hour (some hours of today): the day cannot
    be made over them (PostgreSQL refuses overlapping ranges), so today's other hours are,
    and every letter of today is kept."""
    now = now_ms()
    today = now // DAY_MS * DAY_MS
    make_store_by_day(url, range(0), [])
    with psycopg.connect(url, autocommit=True) as connection:
        for hour in (3, 4):
            start = today + hour * HOUR_MS
            connection.execute(
                f"CREATE TABLE {partition_name('dead_letters', start, HOUR_MS)} PARTITION OF"
                f" dead_letters FOR VALUES FROM ({start}) TO ({start + HOUR_MS})"
            )
    writer = PgWriter(url, per_endpoint=100_000, max_bytes=BIG_BUDGET, now_ms=now)
    reader = PgReader(url)
    try:
        times = {f"evt_{hour}": today + hour * HOUR_MS + 1 for hour in (0, 3, 4, 23)}
        write_letters(writer, times)
        assert dead(reader) == set(times)
        names = partition_names(url, "dead_letters")
        assert partition_name("dead_letters", today, DAY_MS) not in names
        assert partition_name("dead_letters", today + 23 * HOUR_MS, HOUR_MS) in names
    finally:
        reader.close_all()
        writer.close()
