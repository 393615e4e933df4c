"""The six scenarios of issue 10. Each runs its own stack (topic prefix) and records
samples, one per repeat, under the keys of ``tests.bench.figures``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import msgspec

from shared.model.topics import Topics
from tests.bench.figures import FANOUTS, PERCENTILES, RATES, RETRY_SCHEDULE, percentile
from tests.bench.produce import click_event
from tests.bench.stack import PUBLISH_TOKEN, SERVICES, ReceiverProcess, Stack, run_job
from tests.bench.wire import (
    ClickLoad,
    EnvelopeLoad,
    GroupLedger,
    HttpLoad,
    HttpResult,
    ProduceResult,
    RetryTier,
)

CLOSED_LOOP_WARMUP_S = 0.5
RECEIVER_CONNECTIONS = 32
INGEST_CONNECTIONS = 64
BATCH_SIZE = 100
BATCH_CONNECTIONS = 8
# A run is over when everything arrived, when nothing more did for STALL_S (nothing at all:
# FIRST_ARRIVAL_S, as a fresh dispatcher joins its group first), or at the latest after
# MAX_WAIT_S (shunted deliveries may trickle back from the retry tier for a long time).
STALL_S = 5.0
FIRST_ARRIVAL_S = 30.0
MAX_WAIT_S = 120.0
ISOLATION_ENV = {
    "CLICKHOOK_DELIVERY_TIMEOUT": "1s",
    # Requests to the hung endpoint are always in flight: don't wait out the default grace.
    "CLICKHOOK_DRAIN_GRACE": "1s",
}
ISOLATION_FAST_ENDPOINTS = 9
RETRY_ENDPOINTS_PER_TIER = 5
RETRY_PER_TIER = 1000
# 1,000 envelopes falling due over 5 s: 200/s per tier, a burst a retry service should absorb.
RETRY_SPREAD_S = 5.0
RETRY_ACCOUNT = "acc_retry"
UNCAPPED = {"CLICKHOOK_ENDPOINT_MAX_IN_FLIGHT": "1000"}


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    repeats: int
    closed_loop_s: float
    backlog_deliveries: int
    stream_s: float
    grace_s: float  # how long deliveries of a stream may still arrive after it ends


FULL = Plan("full", 3, closed_loop_s=5, backlog_deliveries=6_000, stream_s=6, grace_s=10)
QUICK = Plan("quick", 1, closed_loop_s=2, backlog_deliveries=2_000, stream_s=2, grace_s=4)


@dataclass
class Bench:
    plan: Plan
    bootstrap: str
    receiver: ReceiverProcess
    session: aiohttp.ClientSession
    log_dir: Path
    samples: dict[str, list[float]] = field(default_factory=dict)

    def record(self, key: str, value: float) -> None:
        self.samples.setdefault(key, []).append(value)

    @contextlib.asynccontextmanager
    async def stack(self, *names: str, **env: str) -> AsyncIterator[Stack]:
        """Services on a fresh prefix; their peak RSS is recorded when the stack ends."""
        stack = Stack(self.bootstrap, self.log_dir, self.session, extra_env=env)
        try:
            await stack.start(*names)
            yield stack
            for name in names:
                if stack.running(name):
                    self.record(f"rss.{name}", stack.usage(name).peak_rss_mb)
        finally:
            await stack.stop()

    async def wait_for(
        self,
        group: str,
        expected: int,
        *,
        also_done: Callable[[], Awaitable[float]] | None = None,
        within_s: float = MAX_WAIT_S,
    ) -> GroupLedger:
        """Poll until ``expected`` arrived at ``group`` (counting ``also_done``, e.g. shunted
        deliveries), until arrivals stall, or for ``within_s``; return the group's ledger."""
        seen, seen_at = 0, time.monotonic()
        deadline = seen_at + within_s
        while (now := time.monotonic()) < deadline:
            arrived = await self.receiver.count(self.session, group)
            extra = await also_done() if also_done is not None else 0
            if arrived + extra >= expected:
                break
            if arrived != seen:
                seen, seen_at = arrived, now
            elif now - seen_at > (STALL_S if seen else FIRST_ARRIVAL_S):
                break
            await asyncio.sleep(0.2)
        return await self.receiver.ledger(self.session, group)

    def record_latencies(self, prefix: str, ledger: GroupLedger, expected: int) -> None:
        """Percentiles over what arrived, and the share that had not arrived by the end of
        the wait (those would only raise the percentiles)."""
        for name, q in PERCENTILES:
            self.record(f"{prefix}.{name}", percentile(ledger.latencies_ms, q))
        self.record(f"{prefix}.missing", 100 * max(0, expected - ledger.count) / expected)

    def clicks(self, rate: int) -> int:
        return int(rate * self.plan.stream_s)


def _rate(ledger: GroupLedger) -> float:
    span = ledger.last_s - ledger.first_s
    return ledger.count / span if span > 0 else 0.0


def _cpu_per_1k(cpu_s: float, deliveries: int) -> float:
    return cpu_s / deliveries * 1000 if deliveries else 0.0


# --- 1. ingest, and the receiver alone ----------------------------------------------------


async def receiver_alone(bench: Bench) -> None:
    """The same kind of body the dispatcher sends, so the receiver does the same work."""
    body = f'{{"type":"link.clicked","timestamp":"{click_event("e", "a", "l")["occurred_at"]}"}}'
    for _ in range(bench.plan.repeats):
        job = HttpLoad(
            url=bench.receiver.url("/ok/alone/0"),
            body=body,
            token="-",
            concurrency=RECEIVER_CONNECTIONS,
            duration_s=bench.plan.closed_loop_s,
            warmup_s=CLOSED_LOOP_WARMUP_S,
        )
        bench.record("receiver.rps", (await run_job(job, HttpResult)).per_s)


async def ingest(bench: Bench) -> None:
    event = click_event("-", "acc_ingest", "lnk_1")
    del event["id"]  # ingest assigns ids, as for a real shortener's request
    single = msgspec.json.encode(event).decode()
    batch = msgspec.json.encode([event] * BATCH_SIZE).decode()
    async with bench.stack("ingest") as stack:
        for _ in range(bench.plan.repeats):
            result, cpu_s = await _closed_loop(bench, stack, single, INGEST_CONNECTIONS)
            bench.record("ingest.single.rps", result.per_s)
            bench.record("cpu.ingest.single", _cpu_per_1k(cpu_s, result.ok_total))
            result, cpu_s = await _closed_loop(bench, stack, batch, BATCH_CONNECTIONS)
            bench.record("ingest.batch.eps", result.per_s * BATCH_SIZE)
            bench.record("cpu.ingest.batch", _cpu_per_1k(cpu_s, result.ok_total * BATCH_SIZE))


async def _closed_loop(
    bench: Bench, stack: Stack, body: str, connections: int
) -> tuple[HttpResult, float]:
    """The load's result, and ingest's CPU seconds over all of it."""
    job = HttpLoad(
        url=stack.url("ingest", "/v1/clicks"),
        body=body,
        token=PUBLISH_TOKEN,
        concurrency=connections,
        duration_s=bench.plan.closed_loop_s,
        warmup_s=CLOSED_LOOP_WARMUP_S,
    )
    cpu_before = stack.usage("ingest").cpu_s
    result = await run_job(job, HttpResult)
    if result.failed:
        print(f"  warning: {result.failed} ingest requests failed")
    return result, stack.usage("ingest").cpu_s - cpu_before


# --- 2. deliveries: draining a backlog ----------------------------------------------------

SHUNTED = "clickhook_deliveries_shunted_total"
BACKLOG_LINKS = [f"lnk_{n}" for n in range(30)]


@dataclass(frozen=True, slots=True)
class Drained:
    ledger: GroupLedger
    cpu_s: float
    shunted: int


async def deliveries(bench: Bench) -> None:
    """Deliveries/s while one dispatcher drains a backlog: it starts only once the clicks
    are in Kafka, so the figure is its own capacity, not the producer's speed.

    The per-endpoint cap is lifted (1,000) to measure the delivery engine; a second stack
    keeps the default cap and shows how much of a backlog it shunts to the retry tier.
    """
    async with bench.stack("ingest", **UNCAPPED) as stack:
        for fanout in FANOUTS:
            for run in range(bench.plan.repeats):
                drained = await _drain_backlog(bench, stack, fanout, f"fan{fanout}-r{run}")
                bench.record(f"delivery.fan{fanout}.dps", _rate(drained.ledger))
                if fanout in (1, 100):
                    cpu = _cpu_per_1k(drained.cpu_s, drained.ledger.count)
                    bench.record(f"cpu.dispatcher.fan{fanout}", cpu)
    async with bench.stack("ingest") as stack:
        for run in range(bench.plan.repeats):
            drained = await _drain_backlog(bench, stack, 1, f"capped-r{run}")
            bench.record("delivery.capped.dps", _rate(drained.ledger))
            total = drained.shunted + drained.ledger.count
            bench.record("delivery.capped.shunted", 100 * drained.shunted / max(1, total))


async def _drain_backlog(bench: Bench, stack: Stack, fanout: int, group: str) -> Drained:
    account = f"acc_{group}"
    for n in range(fanout):
        await stack.create_endpoint(bench.receiver.url(f"/ok/{group}/{n}"), account)
    clicks = bench.plan.backlog_deliveries // fanout
    backlog = ClickLoad(
        bootstrap=bench.bootstrap,
        topic=stack.topic("clicks"),
        account_id=account,
        link_ids=BACKLOG_LINKS,
        count=clicks,
        rate_per_s=None,
    )
    await run_job(backlog, ProduceResult)
    await stack.start("dispatcher")
    cpu_before = stack.usage("dispatcher").cpu_s

    async def shunted() -> float:
        return await stack.metric("dispatcher", SHUNTED)

    ledger = await bench.wait_for(group, clicks * fanout, also_done=shunted)
    after = stack.usage("dispatcher")
    drained = Drained(ledger, after.cpu_s - cpu_before, int(await shunted()))
    bench.record("rss.dispatcher", after.peak_rss_mb)
    await stack.stop("dispatcher")
    return drained


# --- 3. latency at fixed rates, and 6. isolation --------------------------------------------


async def latency(bench: Bench) -> None:
    runs = [(rate, f"lat{rate}-r{run}") for run in range(bench.plan.repeats) for rate in RATES]
    async with bench.stack(*SERVICES) as stack:
        for _, group in runs:
            await stack.create_endpoint(bench.receiver.url(f"/ok/{group}/0"), f"acc_{group}")
        await _warm_up(bench, stack)
        for rate, group in runs:
            cpu_before = stack.usage("dispatcher").cpu_s
            ledger = await _stream(bench, stack, group, rate, ["lnk_1"], bench.clicks(rate))
            bench.record_latencies(f"latency.{rate}", ledger, bench.clicks(rate))
            if rate == 500:
                cpu_s = stack.usage("dispatcher").cpu_s - cpu_before
                bench.record("cpu.dispatcher.rate500", _cpu_per_1k(cpu_s, ledger.count))


async def isolation(bench: Bench) -> None:
    """Each click goes to one of nine fast endpoints (a link-id filter) and to one endpoint
    that never answers within the delivery timeout: 500 fast deliveries/s, as in scenario 3
    at 500/s, beside 500/s to the hung one."""
    links = [f"lnk_{n}" for n in range(ISOLATION_FAST_ENDPOINTS)]
    groups = [f"iso-r{run}" for run in range(bench.plan.repeats)]
    async with bench.stack(*SERVICES, **ISOLATION_ENV) as stack:
        for group in groups:
            for n, link in enumerate(links):
                url = bench.receiver.url(f"/ok/{group}/{n}")
                await stack.create_endpoint(url, f"acc_{group}", filters={"link_ids": [link]})
            await stack.create_endpoint(bench.receiver.url(f"/hang/{group}-hung/0"), f"acc_{group}")
        await _warm_up(bench, stack)
        for group in groups:
            ledger = await _stream(bench, stack, group, 500, links, bench.clicks(500))
            bench.record_latencies("isolation", ledger, bench.clicks(500))


async def _warm_up(bench: Bench, stack: Stack) -> None:
    """A short stream to an endpoint registered last: once it arrives, the dispatcher has
    joined its group, opened connections and loaded every endpoint registered before."""
    group = f"warm-{stack.prefix}"
    await stack.create_endpoint(bench.receiver.url(f"/ok/{group}/0"), f"acc_{group}")
    await _stream(bench, stack, group, 100, ["lnk_1"], count=50)


async def _stream(
    bench: Bench,
    stack: Stack,
    group: str,
    rate: int,
    links: list[str],
    count: int,
) -> GroupLedger:
    job = ClickLoad(
        bootstrap=bench.bootstrap,
        topic=stack.topic("clicks"),
        account_id=f"acc_{group}",
        link_ids=links,
        count=count,
        rate_per_s=rate,
    )
    await run_job(job, ProduceResult)
    return await bench.wait_for(group, count, within_s=bench.plan.grace_s)


# --- 4. retry timing ------------------------------------------------------------------------


async def retry_timing(bench: Bench) -> None:
    """Envelopes written straight into the tier topics, as the courier writes them, each due
    at a known time; lateness is arrival at the receiver minus that due time."""
    schedule = ",".join(f"{delay:g}s" for delay in RETRY_SCHEDULE)
    async with bench.stack(*SERVICES, CLICKHOOK_RETRY_SCHEDULE=schedule) as stack:
        runs = [await _tiers(bench, stack, f"r{run}") for run in range(bench.plan.repeats)]
        await _retry_round(bench, await _tiers(bench, stack, "warm"), per_tier=10, spread_s=0)
        for tiers in runs:
            cpu_before = stack.usage("retry").cpu_s
            ledgers = await _retry_round(bench, tiers, RETRY_PER_TIER, RETRY_SPREAD_S)
            for (_, tier), ledger in zip(tiers, ledgers, strict=True):
                bench.record_latencies(f"retry.{tier.delay_s:g}s", ledger, RETRY_PER_TIER)
            cpu_s = stack.usage("retry").cpu_s - cpu_before
            bench.record("cpu.retry", _cpu_per_1k(cpu_s, sum(led.count for led in ledgers)))


async def _tiers(bench: Bench, stack: Stack, run: str) -> list[tuple[str, RetryTier]]:
    """Per tier, a receiver group (``retry<delay>-<run>``) of five endpoints."""
    topics = Topics(stack.prefix)
    tiers = []
    for index, delay in enumerate(RETRY_SCHEDULE):
        group = f"retry{delay:g}s-{run}"
        ids = [
            await stack.create_endpoint(bench.receiver.url(f"/ok/{group}/{n}"), RETRY_ACCOUNT)
            for n in range(RETRY_ENDPOINTS_PER_TIER)
        ]
        tier = RetryTier(topic=topics.retry(delay), index=index, delay_s=delay, endpoint_ids=ids)
        tiers.append((group, tier))
    return tiers


async def _retry_round(
    bench: Bench, tiers: list[tuple[str, RetryTier]], per_tier: int, spread_s: float
) -> list[GroupLedger]:
    job = EnvelopeLoad(
        bootstrap=bench.bootstrap,
        account_id=RETRY_ACCOUNT,
        tiers=[tier for _, tier in tiers],
        per_tier=per_tier,
        spread_s=spread_s,
    )
    await run_job(job, ProduceResult)
    within_s = max(RETRY_SCHEDULE) + spread_s + bench.plan.grace_s
    return [await bench.wait_for(group, per_tier, within_s=within_s) for group, _ in tiers]
