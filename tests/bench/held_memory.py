"""python -m tests.bench.held_memory [--per-partition N]: the retry service's memory while every
partition of its tiers waits for a head with records behind it (issue 22).

A real retry service process (``python -m services.retry``) reads 12 tier topics of 12
partitions each. Every partition gets N envelopes (as the deliverer writes them, with their
due header), due from one moment on, 1 ms apart, for endpoints that no longer exist (so that,
once due, each is dead-lettered at once). The moment is far enough ahead that the service has
read every partition's head first and paused it; shortly before it, every partition is
fetched again with its head within a second of due: the records behind the heads are what a
worker could hold. RSS is read every 0.1 s: idle, while the heads are far off, from a second
before the moment until every envelope is handled. Uses the broker at
``CLICKHOOK_KAFKA_BOOTSTRAP``, or starts one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer

from shared.model.topics import HEADER_DUE_AT_MS, Topics
from shared.ops.settings import load_settings
from tests.bench.procstat import current_rss_mb, usage
from tests.bench.produce import envelope
from tests.bench.stack import Broker
from tests.bench.wire import EnvelopeLoad
from tests.support.services import ServiceProcess, free_port, service_env

PARTITIONS = 12
# Six schedule tiers and six deferral tiers: twelve tier topics.
SCHEDULE = "5s,5m,30m,2h,5h,10h,20h"
ACCOUNT = "acc_bench"
# Time to read and pause every head after the envelopes are written, before the fetch
# ahead of the due moment (the worker's PARK_AFTER_S).
LEAD_S = 8.0
WRITE_RATE_PER_S = 4000
SAMPLE_S = 0.1
FINISH_TIMEOUT_S = 300.0


def _tier_topics(prefix: str) -> list[str]:
    settings = load_settings({"CLICKHOOK_RETRY_SCHEDULE": SCHEDULE})
    return Topics(prefix).retry_tiers(settings.tier_delays_s)


async def _write_envelopes(bootstrap: str, topics: list[str], per_partition: int) -> int:
    """Every partition's envelopes, due from a moment after they are all written (estimated
    from a write rate the loaded 2-core machine reaches)."""
    load = EnvelopeLoad(bootstrap, ACCOUNT, tiers=[], per_tier=0, spread_s=0)
    total = len(topics) * PARTITIONS * per_partition
    due_from_ms = int((time.time() + LEAD_S + total / WRITE_RATE_PER_S) * 1000)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sent: list[asyncio.Future[Any]] = []
        for tier, topic in enumerate(topics):
            for partition in range(PARTITIONS):
                batch = producer.create_batch()
                for n in range(per_partition):
                    due_ms = due_from_ms + n
                    value = envelope(load, tier, f"ep_gone{partition}", due_ms, n)
                    headers = [(HEADER_DUE_AT_MS, str(due_ms).encode())]
                    while (
                        batch.append(key=None, value=value, timestamp=None, headers=headers) is None
                    ):
                        sent.append(await producer.send_batch(batch, topic, partition=partition))
                        batch = producer.create_batch()
                sent.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return due_from_ms


class RssSamples:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float]] = []  # (unix s, RSS MB)

    async def run(self) -> None:
        while True:
            self.samples.append((time.time(), current_rss_mb(self.pid)))
            await asyncio.sleep(SAMPLE_S)

    def peak_mb(self, since_s: float, until_s: float = float("inf")) -> float:
        return max((mb for at, mb in self.samples if since_s <= at <= until_s), default=0.0)


async def _dead_letters(session: aiohttp.ClientSession, service: ServiceProcess) -> float:
    """Envelopes handled so far: each one is a dead letter (its endpoint does not exist)."""
    async with session.get(f"http://127.0.0.1:{service.port}/metrics") as response:
        text = await response.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("clickhook_dead_letters_total{")
    )


async def measure(bootstrap: str, per_partition: int, log_dir: Path) -> dict[str, float]:
    prefix = f"held{uuid.uuid4().hex[:8]}."
    env = service_env(
        bootstrap,
        prefix,
        CLICKHOOK_RETRY_SCHEDULE=SCHEDULE,
        CLICKHOOK_TOPIC_PARTITIONS=str(PARTITIONS),
        CLICKHOOK_RETRY_PORT=str(free_port()),
        CLICKHOOK_LOG_LEVEL="warning",
        CLICKHOOK_ATTEMPT_LOG="false",
    )
    retry = ServiceProcess("retry", env, int(env["CLICKHOOK_RETRY_PORT"]), log_dir / "retry.log")
    retry.start()
    sampler: asyncio.Task[None] | None = None
    try:
        await retry.wait_ready()  # the tier topics exist (the service created them)
        assert retry.process is not None
        samples = RssSamples(retry.process.pid)
        sampler = asyncio.create_task(samples.run())
        await asyncio.sleep(2)
        ready_s = time.time()
        topics = _tier_topics(prefix)
        due_from_ms = await _write_envelopes(bootstrap, topics, per_partition)
        total = len(topics) * PARTITIONS * per_partition
        due_from_s = due_from_ms / 1000
        written_s = time.time()
        async with (
            aiohttp.ClientSession() as session,
            asyncio.timeout(FINISH_TIMEOUT_S + due_from_s - written_s),
        ):
            while await _dead_letters(session, retry) < total:  # noqa: ASYNC110 - a scrape
                await asyncio.sleep(0.5)
        finished_s = time.time()
        return {
            "tiers": len(topics),
            "partitions": len(topics) * PARTITIONS,
            "envelopes": total,
            "idle_rss_mb": samples.peak_mb(0, ready_s),
            "heads_far_rss_mb": samples.peak_mb(ready_s, due_from_s - 1.5),
            "heads_due_rss_mb": samples.peak_mb(due_from_s - 1.5, due_from_s),
            "draining_rss_mb": samples.peak_mb(due_from_s, finished_s),
            "peak_rss_mb": usage(retry.process.pid).peak_rss_mb,
            "written_before_due_s": due_from_s - written_s,
            "drain_s": finished_s - due_from_s,
        }
    finally:
        if sampler is not None:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        await asyncio.to_thread(retry.terminate)


@contextlib.contextmanager
def _broker(log_dir: Path) -> Iterator[str]:
    given = os.environ.get("CLICKHOOK_KAFKA_BOOTSTRAP")
    if given:
        yield given
        return
    broker = Broker(log_dir)
    try:
        yield broker.start()
    finally:
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.held_memory", description=__doc__)
    parser.add_argument("--per-partition", type=int, default=500, help="envelopes per partition")
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="clickhook-held-"))
    with _broker(log_dir) as bootstrap:
        figures = asyncio.run(measure(bootstrap, args.per_partition, log_dir))
    for name, value in figures.items():
        print(f"{name:18} {value:.1f}")
    print(f"logs in {log_dir}")


if __name__ == "__main__":
    main()
