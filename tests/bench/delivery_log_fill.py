"""A new ingest replica's delivery log (issue 23): attempt records spread evenly over the last
24 hours, each with its own time as its Kafka timestamp; a fresh ingest serves the newest hour
first and fills the rest behind it.

Figures: seconds from the start of ingest until the newest hour is served (``caught_up``, with
``complete_since`` an hour back), and until the whole history is (``complete_since`` null),
against the records each covers.

    python -m tests.bench.delivery_log_fill [--records 300000] [--endpoints 1000]

It starts its own broker (deploy/local/kafka.sh) unless ``--bootstrap`` names one, and writes
``docs/benchmarks/delivery_log_fill.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from shared.model.messages import encode
from tests.bench.delivery_log import (
    DAY_MS,
    POLL_S,
    PRODUCE_CHUNK,
    Client,
    attempt_record,
    bench_topics,
    broker,
    endpoint_ids,
    write_figures,
)
from tests.bench.stack import Stack
from tests.support.services import ROOT

TIMEOUT_S = 1800.0
OUTPUT = ROOT / "docs" / "benchmarks" / "delivery_log_fill.json"


async def produce_history(bootstrap: str, prefix: str, records: int, endpoints: int) -> None:
    """The endpoints, then ``records`` attempts evenly over the last day, oldest first, each
    stamped with its time."""
    async with bench_topics(bootstrap, prefix, endpoints) as (producer, ids):
        rng = random.Random(23)
        first_ms = int(time.time() * 1000) - DAY_MS
        futures = []
        for n in range(records):
            at_ms = first_ms + n * DAY_MS // records
            record = msgspec.structs.replace(
                attempt_record(rng, ids[n % endpoints], n, at_ms), at_ms=at_ms
            )
            value = encode(record)
            key = record.endpoint_id.encode()
            topic = prefix + "webhook.attempts"
            futures.append(await producer.send(topic, value, key=key, timestamp_ms=at_ms))
            if len(futures) >= PRODUCE_CHUNK:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    log_dir = Path(tempfile.mkdtemp(prefix="clickhook-bench-log-"))
    state_dir = Path(tempfile.mkdtemp(prefix="clickhook-bench-state-"))
    async with broker(args.bootstrap, log_dir) as bootstrap, aiohttp.ClientSession() as session:
        stack = Stack(
            bootstrap, log_dir, session, extra_env={"CLICKHOOK_STATE_DIR": str(state_dir)}
        )
        await produce_history(bootstrap, stack.prefix, args.records, args.endpoints)
        print(f"produced {args.records:,} attempts over the last 24 h", flush=True)
        client = Client(stack, endpoint_ids(args.endpoints))
        rng = random.Random(1)
        started = time.monotonic()
        await stack.start("ingest")
        newest_hour_s: float | None = None
        while True:
            _, body = await client.first_page(rng)
            index = body["index"]
            if newest_hour_s is None and index["caught_up"]:
                newest_hour_s = time.monotonic() - started
                print(f"newest hour served after {newest_hour_s:.1f} s: {index}", flush=True)
            if index["caught_up"] and index["complete_since"] is None:
                break
            if time.monotonic() - started > TIMEOUT_S:
                raise RuntimeError(f"history not filled after {TIMEOUT_S} s: {index}")
            await asyncio.sleep(POLL_S)
        full_s = time.monotonic() - started
        print(f"whole history served after {full_s:.1f} s", flush=True)
        used = stack.usage("ingest")
        await stack.stop("ingest")
    assert newest_hour_s is not None
    return {
        "records": args.records,
        "endpoints": args.endpoints,
        "history_hours": 24,
        "newest_hour_records": args.records // 24,
        "newest_hour_served_s": round(newest_hour_s, 1),
        "whole_history_served_s": round(full_s, 1),
        "records_per_s": round(args.records / full_s),
        "ingest_peak_rss_mb": round(used.peak_rss_mb, 1),
        "ingest_cpu_s": round(used.cpu_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--endpoints", type=int, default=1_000)
    parser.add_argument("--bootstrap", help="an existing broker instead of a throwaway one")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    write_figures(asyncio.run(measure(args)), args.output)


if __name__ == "__main__":
    main()
