"""The delivery log under load (issue 16): 1,000,000 attempt records in ``webhook.attempts``
across 1,000 endpoints; a fresh ingest indexes them; then the first page of
``GET /v1/endpoints/{id}/attempts`` is asked for many times.

Figures: time for the fresh ingest to index everything, first-page latency (p50/p95/p99) while
it indexes and once it has, its peak RSS, and the index's size on disk. Targets: p95 <= 300 ms,
RSS <= 150 MB.

    python -m tests.bench.delivery_log [--records 1000000] [--endpoints 1000] [--requests 2000]

At the cap (issue 23), on the SQLite index and on PostgreSQL: 1,000 endpoints x 10,000
attempts, 100 of them also holding 10,000 dead letters of 8 attempts with 1 KiB answers; index
bytes and rate, restart-to-serving, a new replica's time to serve the newest hour, first page
p95, ingest RSS (``docs/benchmarks/delivery_log_cap.json``); ``--scale 0.05`` runs 1/20 of the
endpoints (the per-endpoint counts stay at the cap):

    python -m tests.bench.delivery_log at-cap [--scale 1] [--stores sqlite postgres]

It starts its own broker (deploy/local/kafka.sh) unless ``--bootstrap`` names one, and writes
``docs/benchmarks/delivery_log.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import psycopg
from aiokafka import AIOKafkaProducer

from shared.kafka.clients import ensure_topics
from shared.model.messages import AttemptRecord, Endpoint, EndpointSecret, encode
from shared.model.signing import generate_secret, webhook_id
from shared.ops.settings import load_settings
from tests.bench.figures import percentile
from tests.bench.stack import ADMIN_TOKEN, Broker, Stack
from tests.support.attempts import attempt, dead_letter
from tests.support.postgres import running_postgres, server_version
from tests.support.services import ROOT

ACCOUNT = "acc_bench"
DAY_MS = 86_400_000
CONCURRENCY = 4
POLL_S = 0.25
# What the ingest logs as its fill of older history moves on (at info, hence the level below).
FILLED_EVENT = b'"delivery_log_history_filled"'
LOG_LEVEL = {"CLICKHOOK_LOG_LEVEL": "info"}
INDEX_TIMEOUT_S = 900.0
PRODUCE_CHUNK = 20_000
OUTPUT = ROOT / "docs" / "benchmarks" / "delivery_log.json"
REQUEST_BODY = '{"type":"link.clicked","timestamp":"2026-11-27T11:00:00.123Z","data":{' + (
    '"link":{"id":"lnk_9","domain":"example.com","key":"abc","url":"https://example.com/x"},'
    '"click":{"ip":"203.0.113.9","country":"JP","user_agent":"Mozilla/5.0"}}}'
)


def endpoint_ids(count: int) -> list[str]:
    return [f"ep_bench{n:05}" for n in range(count)]


def attempt_record(rng: random.Random, endpoint_id: str, n: int, at_ms: int) -> AttemptRecord:
    """A realistic mix: mostly successes, some 5xx and timeouts waiting to retry, a few
    deferrals."""
    event_id = f"evt_{n:012x}"
    roll = rng.random()
    fields: dict[str, Any] = {"outcome": "success", "status": 200, "response_body": "ok"}
    if roll < 0.05:
        fields = {"outcome": "http_5xx", "status": 503, "response_body": "upstream unavailable",
                  "next_attempt_at_ms": at_ms + 300_000}  # fmt: skip
    elif roll < 0.08:
        fields = {"outcome": "timeout", "status": None, "error": "read timed out after 15s",
                  "next_attempt_at_ms": at_ms + 300_000}  # fmt: skip
    elif roll < 0.10:
        fields = {"outcome": "deferred", "status": None, "deferred_because": "endpoint_busy",
                  "next_attempt_at_ms": at_ms + 60_000}  # fmt: skip
    wid = webhook_id(event_id, endpoint_id)
    return AttemptRecord(
        webhook_id=wid,
        event_id=event_id,
        endpoint_id=endpoint_id,
        account_id=ACCOUNT,
        attempt=1,
        at_ms=at_ms,
        duration_ms=0.0 if fields["outcome"] == "deferred" else rng.lognormvariate(3.5, 0.8),
        breaker="closed",
        service="dispatcher",
        request_headers={
            "webhook-id": wid,
            "webhook-timestamp": str(at_ms // 1000),
            "webhook-signature": "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
            "content-type": "application/json",
            "user-agent": "clickhook/0.1",
        },
        request_body=REQUEST_BODY,
        **fields,
    )


def bulk_producer(bootstrap: str) -> AIOKafkaProducer:
    """For filling topics fast: one acknowledgement, large batches."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks=1, linger_ms=50, max_batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
    )  # fmt: skip


def spread_over_day(n: int, count: int, now_ms: int) -> int:
    """The time of the ``n``-th of ``count`` records spread evenly over the day before
    ``now_ms``, in the order they are written: Kafka timestamps (which a fresh index seeks
    by) that rise in every partition and match the records' own times, as a day of deliveries
    would have."""
    return now_ms - DAY_MS + n * DAY_MS // count


@asynccontextmanager
async def bench_topics(
    bootstrap: str, prefix: str, endpoints: int
) -> AsyncIterator[tuple[AIOKafkaProducer, list[str]]]:
    """The topics with ``endpoints`` endpoints in them, and a producer for the records."""
    settings = load_settings(
        {"CLICKHOOK_KAFKA_BOOTSTRAP": bootstrap, "CLICKHOOK_TOPIC_PREFIX": prefix}
    )
    await ensure_topics(settings)
    producer = bulk_producer(bootstrap)
    await producer.start()
    try:
        now = datetime.now(UTC)
        ids = endpoint_ids(endpoints)
        for endpoint_id in ids:
            endpoint = Endpoint(id=endpoint_id, account_id=ACCOUNT, url="https://hooks.example.com/x",
                                secrets=[EndpointSecret(generate_secret())], created_at=now,
                                updated_at=now)  # fmt: skip
            await producer.send(
                prefix + "webhook.endpoints", key=endpoint_id.encode(), value=encode(endpoint)
            )
        await producer.flush()
        yield producer, ids
    finally:
        await producer.stop()


async def produce_everything(bootstrap: str, prefix: str, records: int, endpoints: int) -> float:
    """The endpoints, then the attempt records; returns the seconds the records took."""
    async with bench_topics(bootstrap, prefix, endpoints) as (producer, ids):
        rng = random.Random(16)
        now_ms = int(time.time() * 1000)
        started = time.monotonic()
        for chunk_start in range(0, records, PRODUCE_CHUNK):
            futures = []
            for n in range(chunk_start, min(records, chunk_start + PRODUCE_CHUNK)):
                endpoint_id = ids[n % endpoints]
                at_ms = spread_over_day(n, records, now_ms)
                value = encode(attempt_record(rng, endpoint_id, n, at_ms))
                futures.append(
                    await producer.send(
                        prefix + "webhook.attempts",
                        key=endpoint_id.encode(),
                        value=value,
                        timestamp_ms=at_ms,
                    )
                )
            await asyncio.gather(*futures)
        return time.monotonic() - started


@asynccontextmanager
async def broker(bootstrap: str | None, log_dir: Path) -> AsyncIterator[str]:
    if bootstrap:
        yield bootstrap
        return
    own = Broker(log_dir)
    address = await asyncio.to_thread(own.start)
    try:
        yield address
    finally:
        await asyncio.to_thread(own.stop)


class Client:
    def __init__(self, stack: Stack, ids: list[str]) -> None:
        self._stack = stack
        self._ids = ids
        self._headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}

    async def first_page(self, rng: random.Random) -> tuple[float, dict[str, Any]]:
        url = self._stack.url("ingest", f"/v1/endpoints/{rng.choice(self._ids)}/attempts")
        started = time.perf_counter()
        async with self._stack.session.get(url, headers=self._headers) as response:
            body: dict[str, Any] = await response.json()
            if response.status != 200:
                raise RuntimeError(f"GET {url}: {response.status} {body}")
        return (time.perf_counter() - started) * 1000, body


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    log_dir = Path(tempfile.mkdtemp(prefix="clickhook-bench-log-"))
    state_dir = Path(tempfile.mkdtemp(prefix="clickhook-bench-state-"))
    async with broker(args.bootstrap, log_dir) as bootstrap, aiohttp.ClientSession() as session:
        stack = Stack(
            bootstrap,
            log_dir,
            session,
            extra_env={"CLICKHOOK_STATE_DIR": str(state_dir), **LOG_LEVEL},
        )
        produce_s = await produce_everything(bootstrap, stack.prefix, args.records, args.endpoints)
        print(f"produced {args.records:,} attempt records in {produce_s:.1f} s", flush=True)
        client = Client(stack, endpoint_ids(args.endpoints))
        rng = random.Random(1)

        fill = FillWatch(stack)
        started = time.monotonic()
        await stack.start("ingest")
        during: list[float] = []
        serving_s = None
        while True:
            latency_ms, body = await client.first_page(rng)
            during.append(latency_ms)
            if serving_s is None and caught_up(body):
                serving_s = time.monotonic() - started
            if indexed(body, fill):
                break
            if time.monotonic() - started > INDEX_TIMEOUT_S:
                raise RuntimeError(f"not indexed after {INDEX_TIMEOUT_S} s: {body['index']}")
            await asyncio.sleep(POLL_S)
        index_s = time.monotonic() - started
        assert serving_s is not None  # indexed: caught up too
        print(
            f"indexed in {index_s:.1f} s (ready included; newest hour {serving_s:.1f} s)",
            flush=True,
        )

        after: list[float] = []

        async def worker() -> None:
            while len(after) < args.requests:
                after.append((await client.first_page(rng))[0])

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        used = stack.usage("ingest")
        index_bytes = await asyncio.to_thread(_size_of, state_dir)
        await stack.stop("ingest")
    return {
        "records": args.records,
        "endpoints": args.endpoints,
        "produce_s": round(produce_s, 1),
        "index_s": round(index_s, 1),
        "index_records_per_s": round(args.records / index_s),
        "newest_hour_s": round(serving_s, 1),
        "requests_during_indexing": len(during),
        "first_page_ms_during_indexing": _percentiles(during),
        "requests": len(after),
        "concurrency": CONCURRENCY,
        "first_page_ms": _percentiles(after),
        "ingest_peak_rss_mb": round(used.peak_rss_mb, 1),
        "ingest_cpu_s": round(used.cpu_s, 1),
        "index_file_mb": round(index_bytes / 1024 / 1024, 1),
        "targets": {"first_page_p95_ms": 300, "peak_rss_mb": 150},
    }


def _percentiles(samples: list[float]) -> dict[str, float]:
    return {f"p{p}": round(percentile(samples, p), 1) for p in (50, 95, 99)}


def _size_of(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.iterdir())


def write_figures(figures: dict[str, Any], output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(msgspec.json.format(msgspec.json.encode(figures)) + b"\n")
    print(msgspec.json.format(msgspec.json.encode(figures)).decode())


def main() -> None:
    if sys.argv[1:2] == ["at-cap"]:
        main_at_cap(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--endpoints", type=int, default=1_000)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--bootstrap", help="an existing broker instead of a throwaway one")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    write_figures(asyncio.run(measure(args)), args.output)


# --- at the cap (issue 23): both stores ------------------------------------------------------

CAP_ENDPOINTS = 1_000
CAP_ATTEMPTS_PER_ENDPOINT = 10_000  # CLICKHOOK_DELIVERY_LOG_PER_ENDPOINT's default
CAP_LETTER_ENDPOINTS = 100
CAP_LETTERS_PER_ENDPOINT = 10_000
LETTER_ATTEMPTS = 8
ANSWER_1K = "<html>" + "x" * 1018
HOUR_MS = 3_600_000
CAP_OUTPUT = ROOT / "docs" / "benchmarks" / "delivery_log_cap.json"
STORES = ("sqlite", "postgres")


def cap_letter(endpoint_id: str, n: int, dead_at_ms: int) -> bytes:
    """A dead letter of 8 failed attempts a second apart, each answered with 1 KiB."""
    event_id = f"evt_dl{n:010x}"
    start = dead_at_ms - LETTER_ATTEMPTS * 1000
    history = [
        attempt(endpoint_id, event_id, account_id=ACCOUNT, attempt=k + 1, at_ms=start + k * 1000,
                outcome="http_5xx", status=503, response_body=ANSWER_1K)
        for k in range(LETTER_ATTEMPTS)
    ]  # fmt: skip
    return encode(
        dead_letter(endpoint_id, event_id, history, account_id=ACCOUNT, dead_at_ms=dead_at_ms)
    )


def cap_counts(scale: float) -> dict[str, int]:
    """``CAP_ENDPOINTS`` x ``CAP_ATTEMPTS_PER_ENDPOINT`` attempts, and dead letters for
    ``CAP_LETTER_ENDPOINTS`` of them, all scaled by ``scale`` in endpoints (never per
    endpoint: the cap is what is measured)."""
    endpoints = max(1, round(CAP_ENDPOINTS * scale))
    letters = max(1, round(CAP_LETTER_ENDPOINTS * scale)) * CAP_LETTERS_PER_ENDPOINT
    return {
        "endpoints": endpoints,
        "attempts": endpoints * CAP_ATTEMPTS_PER_ENDPOINT,
        "dead_letters": letters,
    }


async def produce_at_cap(bootstrap: str, prefix: str, scale: float) -> dict[str, int]:
    """The records ``cap_counts`` says, written to the topics under ``prefix``."""
    counts = cap_counts(scale)
    endpoints = counts["endpoints"]
    letter_endpoints = counts["dead_letters"] // CAP_LETTERS_PER_ENDPOINT
    await produce_everything(bootstrap, prefix, counts["attempts"], endpoints)
    producer = bulk_producer(bootstrap)
    await producer.start()
    try:
        ids = endpoint_ids(endpoints)[:letter_endpoints]
        now_ms = int(time.time() * 1000)
        futures = []
        for n in range(counts["dead_letters"]):
            endpoint_id = ids[n % letter_endpoints]
            dead_at_ms = spread_over_day(n, counts["dead_letters"], now_ms)
            value = cap_letter(endpoint_id, n, dead_at_ms)
            futures.append(
                await producer.send(
                    prefix + "webhook.dlq",
                    key=endpoint_id.encode(),
                    value=value,
                    timestamp_ms=dead_at_ms,
                )
            )
            if len(futures) >= PRODUCE_CHUNK // 10:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return counts


async def until_caught_up(client: Client, rng: random.Random, started: float) -> float:
    """Seconds from ``started`` until the index has read the topics to their ends (of a fresh
    SQLite index: from the newest hour on; ``until_filled`` waits for the older history)."""
    while True:
        try:
            _, body = await client.first_page(rng)
        except (RuntimeError, aiohttp.ClientError):
            body = {"index": {"caught_up": False, "behind": -1}}
        if caught_up(body):
            return time.monotonic() - started
        if time.monotonic() - started > INDEX_TIMEOUT_S * 4:
            raise RuntimeError(f"not indexed after {INDEX_TIMEOUT_S * 4} s: {body['index']}")
        await asyncio.sleep(POLL_S)


def caught_up(body: dict[str, Any]) -> bool:
    return bool(body["index"]["caught_up"]) and body["index"]["behind"] == 0


class FillWatch:
    """Whether a fresh SQLite index has filled the history behind its newest hour, from what
    its ingest logs (``delivery_log_history_filled`` with no window left: every record read,
    or the byte budget reached), read from the service's log as of now: the answers' index
    status cannot tell a fill the budget ended from one still reading."""

    def __init__(self, stack: Stack) -> None:
        self._path = stack.services["ingest"].log_path
        self._offset = self._path.stat().st_size if self._path.exists() else 0

    def ended(self) -> dict[str, Any] | None:
        """The log line that ended the fill, if one has been written."""
        with self._path.open("rb") as log:
            log.seek(self._offset)
            for line in log:
                if FILLED_EVENT not in line:
                    continue
                said: dict[str, Any] = msgspec.json.decode(line)
                if said["complete"] or said["stopped_by_budget"]:
                    return said
        return None


def indexed(body: dict[str, Any], fill: FillWatch) -> bool:
    """Caught up, and either complete (no history left to fill) or the fill has ended."""
    return caught_up(body) and (body["index"]["complete_since"] is None or fill.ended() is not None)


async def until_filled(
    client: Client, fill: FillWatch, rng: random.Random, started: float
) -> float:
    """Seconds from ``started`` until the fill behind the newest hour has ended."""
    while True:
        _, body = await client.first_page(rng)
        if indexed(body, fill):
            return time.monotonic() - started
        if time.monotonic() - started > INDEX_TIMEOUT_S * 8:
            raise RuntimeError(f"not filled after {INDEX_TIMEOUT_S * 8} s: {body['index']}")
        await asyncio.sleep(POLL_S * 4)


async def newest_hour(stack: Stack, endpoint_id: str, since: str) -> int | None:
    """How many attempts since ``since`` (an hour before the first look: the same instant at
    every look, so records ageing out of a moving window never change the count) the
    endpoint's log lists (None: not answering)."""
    url = stack.url("ingest", f"/v1/endpoints/{endpoint_id}/attempts")
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    try:
        async with stack.session.get(
            url, params={"since": since, "limit": "250"}, headers=headers
        ) as response:
            if response.status != 200:
                return None
            body: dict[str, Any] = await response.json()
    except aiohttp.ClientError:
        return None
    return len(body["data"])


async def until_lists(stack: Stack, endpoint_id: str, since: str, expected: int | None) -> None:
    deadline = time.monotonic() + INDEX_TIMEOUT_S * 4
    while time.monotonic() < deadline:
        if await newest_hour(stack, endpoint_id, since) == expected:
            return
        await asyncio.sleep(POLL_S)
    raise RuntimeError(f"the new replica did not list the newest hour of {endpoint_id}")


def index_bytes(store: str, state_dir: Path, url: str) -> int:
    if store == "sqlite":
        return _size_of(state_dir)
    with psycopg.connect(url) as connection:
        row = connection.execute(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " WHERE c.relnamespace = CAST(current_schema() AS regnamespace) AND c.relkind = 'r'"
        ).fetchone()
    return int(row[0]) if row else 0


async def measure_store(
    store: str,
    bootstrap: str,
    prefix: str,
    counts: dict[str, int],
    url: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One store: index from the topics, first pages, a restart, a new replica (unless
    ``--no-new-replica``: the records were all written within the hour, so a new SQLite
    replica's newest hour is every record, as long again as the first index)."""
    requests = args.requests
    log_dir = Path(tempfile.mkdtemp(prefix="clickhook-bench-log-"))
    state_dir = Path(tempfile.mkdtemp(prefix="clickhook-bench-state-"))
    env = {"CLICKHOOK_STATE_DIR": str(state_dir), "CLICKHOOK_DELIVERY_LOG_URL": url, **LOG_LEVEL}
    if args.max_bytes:
        env["CLICKHOOK_DELIVERY_LOG_MAX_BYTES"] = str(args.max_bytes)
    ids = endpoint_ids(counts["endpoints"])
    rng = random.Random(23)
    async with aiohttp.ClientSession() as session:
        stack = Stack(bootstrap, log_dir, session, extra_env=env, prefix=prefix)
        client = Client(stack, ids)
        fill = FillWatch(stack)
        started = time.monotonic()
        await stack.start("ingest")
        serving_s = await until_caught_up(client, rng, started)
        print(f"{store}: caught up with the topics in {serving_s:.1f} s", flush=True)
        # A shared store reads the topics from their start in one pass (no fill behind).
        index_s = await until_filled(client, fill, rng, started) if store == "sqlite" else serving_s
        records = counts["attempts"] + counts["dead_letters"]
        print(f"{store}: indexed {records:,} records in {index_s:.1f} s", flush=True)
        latencies: list[float] = []

        async def worker() -> None:
            while len(latencies) < requests:
                latencies.append((await client.first_page(rng))[0])

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        peak_rss = stack.usage("ingest").peak_rss_mb
        used_bytes = await asyncio.to_thread(index_bytes, store, state_dir, url)
        an_hour_ago = datetime.fromtimestamp(time.time() - 3600, tz=UTC).isoformat()
        expected_hour = await newest_hour(stack, ids[0], an_hour_ago)

        await stack.stop("ingest")
        started = time.monotonic()
        await stack.start("ingest")
        restart_s = await until_caught_up(client, rng, started)

        found = {
            "records": records,
            "index_s": round(index_s, 1),
            "index_records_per_s": round(records / index_s),
            "newest_hour_s": round(serving_s, 1),
            "fill_ended": fill.ended(),
            "index_mb": round(used_bytes / 1024 / 1024, 1),
            "first_page_ms": _percentiles(latencies),
            "ingest_peak_rss_mb": round(peak_rss, 1),
            "restart_to_serving_s": round(restart_s, 1),
        }
        print(f"{store}: {found}", flush=True)  # kept if the new replica fails
        if args.no_new_replica:
            await stack.stop("ingest")
            return found
        # A new replica beside the running one: its own state directory (SQLite) or the
        # shared store (PostgreSQL), until it lists the newest hour as the first one does.
        fresh_dir = Path(tempfile.mkdtemp(prefix="clickhook-bench-state-"))
        fresh_env = {**env, "CLICKHOOK_STATE_DIR": str(fresh_dir)}
        second = Stack(bootstrap, log_dir, session, extra_env=fresh_env, prefix=prefix)
        started = time.monotonic()
        await second.start("ingest")
        second_client = Client(second, ids)
        if store == "sqlite":
            await until_caught_up(second_client, rng, started)
        await until_lists(second, ids[0], an_hour_ago, expected_hour)
        new_replica_s = time.monotonic() - started
        await second.stop("ingest")
        await stack.stop("ingest")
    return {**found, "new_replica_newest_hour_s": round(new_replica_s, 1)}


async def measure_at_cap(args: argparse.Namespace) -> dict[str, Any]:
    log_dir = Path(tempfile.mkdtemp(prefix="clickhook-bench-log-"))
    async with broker(args.bootstrap, log_dir) as bootstrap:
        if args.reuse:
            prefix, counts = args.reuse, cap_counts(args.scale)
        else:
            prefix = f"bench{random.Random().getrandbits(32):08x}."
            started = time.monotonic()
            counts = await produce_at_cap(bootstrap, prefix, args.scale)
            print(f"produced {counts} under {prefix} in {time.monotonic() - started:.1f} s")
        found: dict[str, Any] = {
            "scale": args.scale,
            **counts,
            "targets": {"first_page_p95_ms": 300, "peak_rss_mb": 150},
        }
        for store in args.stores:
            if store == "postgres":
                with running_postgres() as server:
                    url = await asyncio.to_thread(server.new_schema)
                    found[store] = await measure_store(store, bootstrap, prefix, counts, url, args)
                    found[store]["server"] = server_version()
            else:
                found[store] = await measure_store(store, bootstrap, prefix, counts, "", args)
    return found


def main_at_cap(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="the delivery log at the cap, on both stores")
    parser.add_argument("--scale", type=float, default=1.0, help="of 1,000 endpoints (and 100)")
    parser.add_argument("--stores", nargs="+", choices=STORES, default=list(STORES))
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--bootstrap", help="an existing broker instead of a throwaway one")
    parser.add_argument(
        "--reuse", metavar="PREFIX", help="the topics an earlier run at this scale wrote there"
    )
    parser.add_argument("--no-new-replica", action="store_true", help="skip the new replica")
    parser.add_argument(
        "--max-bytes", type=int, help="CLICKHOOK_DELIVERY_LOG_MAX_BYTES (default: the setting's)"
    )
    parser.add_argument("--output", type=Path, default=CAP_OUTPUT)
    args = parser.parse_args(argv)
    figures = asyncio.run(measure_at_cap(args))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(msgspec.json.format(msgspec.json.encode(figures)) + b"\n")
    print(msgspec.json.format(msgspec.json.encode(figures)).decode())


if __name__ == "__main__":
    main()
