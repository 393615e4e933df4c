"""Issue 15's figures: lateness of retries written by the deliverer itself (its jitter, a
realistic spread of write times), replay memory with a million dead letters, and what an
endpoint that stays down does to memory and to the tier topics."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import msgspec

from shared.model.messages import decode_envelope
from shared.model.topics import Topics
from tests.bench.figures import LATENESS_TIER_S, PERCENTILES, percentile
from tests.bench.scenarios import Bench, clicks_job, warm_up
from tests.bench.stack import ADMIN_TOKEN, SERVICES, Stack, run_job
from tests.bench.topic_reader import read_topic, record_count, topics_with_prefix
from tests.bench.wire import DeadLetterLoad, DeferLoad, ProduceResult
from tests.support.services import free_port

# --- lateness of deferrals written by the deliverer ------------------------------------------

LATENESS_ENDPOINTS = 10
LATENESS_RATE = 200  # deferrals/s on average, at random moments
LATENESS_WRITERS = 8  # concurrent tasks deferring, as deliveries do


async def deferred_lateness(bench: Bench) -> None:
    """Deliveries deferred through ``Deliverer.defer`` into a 10 s first tier (jitter: 10 %,
    at most 250 ms); lateness is the receiver's arrival minus the due time the deliverer
    wrote, read back from the tier topic."""
    schedule = f"{LATENESS_TIER_S:g}s"
    group, account = "lateness", "acc_lateness"
    async with bench.stack(*SERVICES, CLICKHOOK_RETRY_SCHEDULE=schedule) as stack:
        endpoint_ids = [
            await stack.create_endpoint(bench.receiver.url(f"/ids/{group}/{n}"), account)
            for n in range(LATENESS_ENDPOINTS)
        ]
        await warm_up(bench, stack)
        job = DeferLoad(
            bootstrap=bench.bootstrap,
            prefix=stack.prefix,
            schedule=schedule,
            account_id=account,
            endpoint_ids=endpoint_ids,
            rate_per_s=LATENESS_RATE,
            duration_s=bench.plan.lateness_s,
            writers=LATENESS_WRITERS,
        )
        written = await run_job(job, ProduceResult)
        within_s = LATENESS_TIER_S + bench.plan.grace_s
        ledger = await bench.wait_for(group, written.records, within_s=within_s)
        due_ms = await _due_times(bench, Topics(stack.prefix).retry(LATENESS_TIER_S))
    lateness_ms = [
        at_s * 1000 - due_ms[webhook_id]
        for webhook_id, at_s in ledger.arrivals.items()
        if webhook_id in due_ms
    ]
    for name, q in PERCENTILES:
        bench.record(f"lateness.deferred.{name}", percentile(lateness_ms, q))
    missing = 100 * max(0, written.records - len(lateness_ms)) / max(1, written.records)
    bench.record("lateness.deferred.missing", missing)


async def _due_times(bench: Bench, topic: str) -> dict[str, int]:
    due: dict[str, int] = {}
    async for record in read_topic(bench.bootstrap, topic):
        if record.value is not None:
            envelope = decode_envelope(record.value)
            due[envelope.webhook_id] = envelope.due_at_ms
    return due


# --- replay memory ----------------------------------------------------------------------------

REPLAY_ACCOUNT = "acc_replay"
REPLAY_ENDPOINTS = 1000  # the big one and 999 others
RSS_SAMPLE_S = 0.5
REPLAY_WAIT_S = 900.0
HOUR_MS = 3_600_000
INDEX_BEHIND = "clickhook_delivery_log_behind_records"
INDEX_WAIT_S = 300.0


async def replay_memory(bench: Bench) -> None:
    """A million dead letters in ``webhook.dlq`` (one endpoint holds a tenth of them), then,
    once ingest's delivery log has indexed them, a replay job of that endpoint through ingest's
    API: ingest's memory, the job's pace, and how far behind the index was when the write
    ended."""
    plan = bench.plan
    async with bench.stack("ingest") as stack:
        big = await stack.create_endpoint(bench.receiver.url("/ok/replay/0"), REPLAY_ACCOUNT)
        dead_at_ms = int(time.time() * 1000) - HOUR_MS
        job = DeadLetterLoad(
            bootstrap=bench.bootstrap,
            topic=stack.topic("webhook.dlq"),
            account_id=REPLAY_ACCOUNT,
            big_endpoint_id=big,
            big_count=plan.big_endpoint_letters,
            other_endpoints=REPLAY_ENDPOINTS - 1,
            count=plan.dead_letters,
            dead_at_ms=dead_at_ms,
        )
        written = await run_job(job, ProduceResult)
        bench.record("replay.letters", written.records)
        bench.record("replay.write_per_s", written.per_s)
        bench.record("replay.index_behind", await stack.metric("ingest", INDEX_BEHIND))
        bench.record("replay.index_catch_up_s", await _index_caught_up(stack))
        async with _sampling_rss(stack, "ingest") as rss:
            status = await _replay(bench, stack, big, since_ms=dead_at_ms - HOUR_MS)
        bench.record("replay.replayed", status["replayed"])
        duration_s = _seconds_between(status["started_at"], status["finished_at"])
        bench.record("replay.duration_s", duration_s)
        bench.record("replay.letters_per_s", status["replayed"] / duration_s if duration_s else 0)
        bench.record("replay.rss.ingest", stack.usage("ingest").peak_rss_mb)
        print(
            f"  replay: {status['state']}, {status['replayed']:,} of {status['matched']:,} "
            f"in {duration_s:.1f}s; ingest RSS during it {min(rss):.0f}-{max(rss):.0f} MB"
        )


async def _index_caught_up(stack: Stack) -> float:
    """Seconds until ingest's delivery log has indexed every letter written. The letters go in
    at some 15,000/s, far faster than dead letters ever arrive, and the index catches up behind
    them: a replay started meanwhile shares ingest's event loop, its GIL and the machine's two
    cores with that catch-up, and its duration measured the catch-up as much as the replay."""
    started = time.monotonic()
    while await stack.metric("ingest", INDEX_BEHIND) > 0:
        if time.monotonic() - started > INDEX_WAIT_S:
            raise RuntimeError(f"the delivery log is still behind after {INDEX_WAIT_S:g}s")
        await asyncio.sleep(RSS_SAMPLE_S)
    return time.monotonic() - started


async def _replay(bench: Bench, stack: Stack, endpoint_id: str, since_ms: int) -> dict[str, Any]:
    url = stack.url("ingest", f"/v1/endpoints/{endpoint_id}/replay")
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    since = datetime.fromtimestamp(since_ms / 1000, UTC).isoformat()
    async with bench.session.post(url, json={"since": since}, headers=headers) as response:
        body: dict[str, Any] = await response.json()
        if response.status != 202:
            raise RuntimeError(f"replay refused: {response.status} {body}")
    deadline = time.monotonic() + REPLAY_WAIT_S
    while body["state"] == "running" and time.monotonic() < deadline:
        await asyncio.sleep(RSS_SAMPLE_S)
        async with bench.session.get(url, headers=headers) as response:
            body = await response.json()
    return body


def _seconds_between(started: str, finished: str | None) -> float:
    if finished is None:
        return math.nan
    return (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()


@contextlib.asynccontextmanager
async def _sampling_rss(stack: Stack, service: str) -> AsyncIterator[list[float]]:
    """The service's resident memory every half second while the block runs."""
    samples: list[float] = []

    async def sample() -> None:
        while True:
            samples.append(stack.rss_mb(service))
            await asyncio.sleep(RSS_SAMPLE_S)

    task = asyncio.create_task(sample())
    try:
        yield samples
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --- an endpoint that stays down ----------------------------------------------------------

OUTAGE_RATE = 200
OUTAGE_COOLDOWN_S = 2.0
OUTAGE_MAX_COOLDOWN_S = 16.0
OUTAGE_ENV = {
    "CLICKHOOK_BREAKER_COOLDOWN": f"{OUTAGE_COOLDOWN_S:g}s",
    "CLICKHOOK_BREAKER_MAX_COOLDOWN": f"{OUTAGE_MAX_COOLDOWN_S:g}s",
}


async def outage_growth(bench: Bench) -> None:
    """One endpoint refuses connections for the whole run while its clicks arrive at
    200/s, with the breaker scaled down (cool-down 2 s doubling to 16 s): the delivering
    services' memory over time, and how often each delivery was written to a tier again."""
    outage_s = bench.plan.outage_s
    group = "outage"
    async with bench.stack(*SERVICES, **OUTAGE_ENV) as stack:
        refusing = f"http://127.0.0.1:{free_port()}/down"  # nothing listens there
        await stack.create_endpoint(refusing, f"acc_{group}")
        await warm_up(bench, stack)
        clicks = int(OUTAGE_RATE * outage_s)
        job = clicks_job(bench, stack, group, clicks, OUTAGE_RATE)
        async with (
            _sampling_rss(stack, "dispatcher") as dispatcher_rss,
            _sampling_rss(stack, "retry") as retry_rss,
        ):
            await run_job(job, ProduceResult)
        rewrites = await _tier_records(bench, stack)
    bench.record("outage.minutes", outage_s / 60)
    bench.record("outage.records_per_click", sum(rewrites.values()) / clicks)
    bench.record("outage.max_rewrites", max(rewrites.values(), default=1) - 1)
    bound = math.log2(outage_s / OUTAGE_COOLDOWN_S) + outage_s / OUTAGE_MAX_COOLDOWN_S
    bench.record("outage.bound", bound)
    for name, samples in (("dispatcher", dispatcher_rss), ("retry", retry_rss)):
        settled = samples[len(samples) // 10 :]  # after the start's own growth
        bench.record(f"outage.rss_growth.{name}", settled[-1] - settled[0])
        bench.record(f"outage.rss.{name}", settled[-1])
        every = max(1, len(samples) // 12)
        print(f"  outage: {name} RSS (MB) " + " ".join(f"{mb:.0f}" for mb in samples[::every]))


async def _tier_records(bench: Bench, stack: Stack) -> Counter[str]:
    """Per delivery (webhook-id), how many times it was written to a tier topic."""
    prefix = Topics(stack.prefix).retry(1)[: -len("1s")]
    written: Counter[str] = Counter()
    for topic in await topics_with_prefix(bench.bootstrap, prefix):
        if not await record_count(bench.bootstrap, topic):
            continue
        async for record in read_topic(bench.bootstrap, topic):
            if record.value is not None:
                with contextlib.suppress(msgspec.DecodeError):
                    written[decode_envelope(record.value).webhook_id] += 1
    return written
