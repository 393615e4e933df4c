"""The scenarios of issues 10 and 18 on one broker: the ceilings, ingest, deliveries, latency,
retry timing, isolation and a stalled neighbour. Each runs its own stack (topic prefix) and
records samples, one per repeat, under the keys of ``tests.bench.figures``."""

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
from shared.ops.settings import Settings
from tests.bench.figures import (
    FANOUTS,
    HTTP_RATE,
    NEIGHBOUR_RATES,
    PERCENTILES,
    RATES,
    RETRY_SCHEDULE,
    percentile,
)
from tests.bench.produce import click_event
from tests.bench.stack import PUBLISH_TOKEN, SERVICES, ReceiverProcess, Stack, run_job
from tests.bench.wire import (
    ClickLoad,
    EnvelopeLoad,
    GroupLedger,
    HttpLoad,
    HttpResult,
    HttpStream,
    ProduceResult,
    ProducerLoad,
    RetryTier,
    SenderLoad,
)

CLOSED_LOOP_WARMUP_S = 0.5
RECEIVER_CONNECTIONS = 32
INGEST_CONNECTIONS = 64
BATCH_SIZE = 100
BATCH_CONNECTIONS = 8
# A run is over when everything arrived, when nothing more did for STALL_S (nothing at all:
# FIRST_ARRIVAL_S, as a fresh dispatcher joins its group first), or at the latest after
# MAX_WAIT_S (deferred deliveries may trickle back from the retry tier for a long time).
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
# The bare sender's tasks: past this, more concurrency only adds event-loop overhead on 2 cores.
SENDER_CONCURRENCY = 64
# One endpoint that accepts the connection and answers after 30 s, past a 3 s timeout.
NEIGHBOUR_ENV = {"CLICKHOOK_DELIVERY_TIMEOUT": "3s", "CLICKHOOK_DRAIN_GRACE": "1s"}
NEIGHBOUR_FAST_ENDPOINTS = 3
STALL_MS = 30_000
HTTP_STREAM_CONNECTIONS = 8
DEFERRED = "clickhook_deliveries_deferred_total"
LOG_DROPPED = "clickhook_attempt_log_dropped_total"


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    repeats: int
    closed_loop_s: float
    backlog_deliveries: int
    stream_s: float
    grace_s: float  # how long deliveries of a stream may still arrive after it ends
    recovery_outage_s: float  # the receiver's 503s; the breaker's first cool-down is as long
    recovery_wait_s: float  # how long the drain may take at most
    lateness_s: float  # deferrals written through the deliverer for this long
    dead_letters: int
    big_endpoint_letters: int
    outage_s: float  # one endpoint refusing connections
    external: bool  # run the scale and delivery-log benches too
    caps_burst_s: float = 60  # a capped endpoint's clicks at 10 x its rate


FULL = Plan(
    "full",
    3,
    closed_loop_s=5,
    backlog_deliveries=20_000,
    stream_s=6,
    grace_s=10,
    recovery_outage_s=60,
    recovery_wait_s=240,
    lateness_s=20,
    dead_letters=1_000_000,
    big_endpoint_letters=100_000,
    outage_s=180,
    external=True,
)
QUICK = Plan(
    "quick",
    1,
    closed_loop_s=2,
    backlog_deliveries=2_000,
    stream_s=2,
    grace_s=4,
    recovery_outage_s=15,
    recovery_wait_s=90,
    lateness_s=6,
    dead_letters=50_000,
    big_endpoint_letters=5_000,
    outage_s=40,
    external=False,
    caps_burst_s=20,
)


@dataclass
class Bench:
    plan: Plan
    bootstrap: str
    receiver: ReceiverProcess
    session: aiohttp.ClientSession
    log_dir: Path
    samples: dict[str, list[float]] = field(default_factory=dict)
    broker_data_dir: Path | None = None  # where the broker keeps its log segments

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
        """Poll until ``expected`` arrived at ``group`` (counting ``also_done``, e.g. deferred
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


def rate_of(ledger: GroupLedger) -> float:
    span = ledger.last_s - ledger.first_s
    return ledger.count / span if span > 0 else 0.0


def cpu_per_1k(cpu_s: float, deliveries: int) -> float:
    return cpu_s / deliveries * 1000 if deliveries else 0.0


# --- 1. ingest and its ceiling, and the receiver alone ---------------------------------------


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
    """Single-event requests, then batches, each batch run right after the bare producer
    wrote the same events (its ceiling) on the same broker."""
    event = click_event("-", "acc_ingest", "lnk_1")
    del event["id"]  # ingest assigns ids, as for a real shortener's request
    single = msgspec.json.encode(event).decode()
    batch = msgspec.json.encode([event] * BATCH_SIZE).decode()
    async with bench.stack("ingest") as stack:
        for _ in range(bench.plan.repeats):
            result, cpu_s = await closed_loop(bench, stack, single, INGEST_CONNECTIONS)
            bench.record("ingest.single.rps", result.per_s)
            bench.record("cpu.ingest.single", cpu_per_1k(cpu_s, result.ok_total))
            ceiling = await _producer_ceiling(bench, stack, event)
            result, cpu_s = await closed_loop(bench, stack, batch, BATCH_CONNECTIONS)
            events_per_s = result.per_s * BATCH_SIZE
            bench.record("ingest.batch.eps", events_per_s)
            bench.record("cpu.ingest.batch", cpu_per_1k(cpu_s, result.ok_total * BATCH_SIZE))
            bench.record("ingest.batch.ratio_to_ceiling", events_per_s / ceiling)


async def _producer_ceiling(bench: Bench, stack: Stack, event: dict[str, object]) -> float:
    """Events/s of a bare producer with ingest's settings, as many sends outstanding as the
    batch load has events in flight."""
    job = ProducerLoad(
        bootstrap=bench.bootstrap,
        topic=stack.topic("clicks"),
        event=msgspec.json.encode({**event, "id": "evt_ceiling"}).decode(),
        key="lnk_1",
        in_flight=BATCH_CONNECTIONS * BATCH_SIZE,
        duration_s=bench.plan.closed_loop_s,
        warmup_s=CLOSED_LOOP_WARMUP_S,
    )
    events_per_s = (await run_job(job, HttpResult)).per_s
    bench.record("ceiling.producer.eps", events_per_s)
    return events_per_s


async def closed_loop(
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


# --- 2. deliveries: draining a backlog, against the bare sender ------------------------------

BACKLOG_LINKS = [f"lnk_{n}" for n in range(30)]


@dataclass(frozen=True, slots=True)
class Drained:
    ledger: GroupLedger
    cpu_s: float
    deferred: int
    log_dropped: int  # attempt records the delivery log dropped (queue full, send failed)


async def deliveries(bench: Bench) -> None:
    """Deliveries/s while one dispatcher drains a backlog: it starts only once the clicks
    are in Kafka, so the figure is its own capacity, not the producer's speed.

    The per-endpoint cap is lifted (1,000) to measure the delivery engine, and each
    one-endpoint run follows a bare-sender run to the same receiver (its ceiling); a second
    stack keeps the default caps, where a healthy endpoint's backlog should still go direct.
    """
    async with bench.stack("ingest", **UNCAPPED) as stack:
        for fanout in FANOUTS:
            for run in range(bench.plan.repeats):
                ceiling = await _sender_ceiling(bench, f"ceiling-r{run}") if fanout == 1 else 0
                drained = await drain_backlog(bench, stack, fanout, f"fan{fanout}-r{run}")
                rate = rate_of(drained.ledger)
                bench.record(f"delivery.fan{fanout}.dps", rate)
                attempts = drained.ledger.count + drained.deferred
                dropped = 100 * drained.log_dropped / max(1, attempts)
                bench.record(f"delivery.fan{fanout}.log_dropped", dropped)
                if ceiling:
                    bench.record("delivery.fan1.ratio_to_ceiling", rate / ceiling)
                if fanout in (1, 100):
                    cpu = cpu_per_1k(drained.cpu_s, drained.ledger.count)
                    bench.record(f"cpu.dispatcher.fan{fanout}", cpu)
    async with bench.stack("ingest") as stack:
        for run in range(bench.plan.repeats):
            drained = await drain_backlog(bench, stack, 1, f"capped-r{run}")
            bench.record("delivery.capped.dps", rate_of(drained.ledger))
            total = drained.deferred + drained.ledger.count
            bench.record("delivery.capped.deferred", 100 * drained.deferred / max(1, total))


async def _sender_ceiling(bench: Bench, group: str) -> float:
    job = SenderLoad(
        url=bench.receiver.url(f"/ok/{group}/0"),
        concurrency=SENDER_CONCURRENCY,
        duration_s=bench.plan.closed_loop_s,
        warmup_s=CLOSED_LOOP_WARMUP_S,
    )
    deliveries_per_s = (await run_job(job, HttpResult)).per_s
    bench.record("ceiling.sender.dps", deliveries_per_s)
    return deliveries_per_s


async def drain_backlog(
    bench: Bench, stack: Stack, fanout: int, group: str, deliveries: int | None = None
) -> Drained:
    """A backlog of ``deliveries`` (the plan's by default) to ``fanout`` endpoints, drained by
    a dispatcher started once it is written, with the dispatcher's CPU over the drain."""
    account = f"acc_{group}"
    for n in range(fanout):
        await stack.create_endpoint(bench.receiver.url(f"/ok/{group}/{n}"), account)
    clicks = (deliveries or bench.plan.backlog_deliveries) // fanout
    await run_job(clicks_job(bench, stack, group, clicks, None, BACKLOG_LINKS), ProduceResult)
    await stack.start("dispatcher")
    cpu_before = stack.usage("dispatcher").cpu_s

    async def deferred() -> float:
        return await stack.metric("dispatcher", DEFERRED)

    ledger = await bench.wait_for(group, clicks * fanout, also_done=deferred)
    after = stack.usage("dispatcher")
    log_dropped = int(await stack.metric("dispatcher", LOG_DROPPED))
    drained = Drained(ledger, after.cpu_s - cpu_before, int(await deferred()), log_dropped)
    bench.record("rss.dispatcher", after.peak_rss_mb)
    await stack.stop("dispatcher")
    return drained


# --- 3. latency at fixed rates, through Kafka and through ingest's API -----------------------


async def latency(bench: Bench) -> None:
    runs = [(rate, f"lat{rate}-r{run}") for run in range(bench.plan.repeats) for rate in RATES]
    http_runs = [f"http{HTTP_RATE}-r{run}" for run in range(bench.plan.repeats)]
    async with bench.stack(*SERVICES) as stack:
        for group in [*(group for _, group in runs), *http_runs]:
            await stack.create_endpoint(bench.receiver.url(f"/ok/{group}/0"), f"acc_{group}")
        await warm_up(bench, stack)
        for rate, group in runs:
            cpu_before = stack.usage("dispatcher").cpu_s
            ledger = await stream(bench, stack, group, rate, ["lnk_1"], bench.clicks(rate))
            bench.record_latencies(f"latency.{rate}", ledger, bench.clicks(rate))
            if rate == 500:
                cpu_s = stack.usage("dispatcher").cpu_s - cpu_before
                bench.record("cpu.dispatcher.rate500", cpu_per_1k(cpu_s, ledger.count))
        for group in http_runs:
            ledger = await http_stream(bench, stack, group, HTTP_RATE, bench.clicks(HTTP_RATE))
            bench.record_latencies(f"latency.http{HTTP_RATE}", ledger, bench.clicks(HTTP_RATE))


async def http_stream(bench: Bench, stack: Stack, group: str, rate: int, count: int) -> GroupLedger:
    """One click per request to ingest's API at ``rate``, as the Svix comparison sent them."""
    job = HttpStream(
        url=stack.url("ingest", "/v1/clicks"),
        token=PUBLISH_TOKEN,
        account_id=f"acc_{group}",
        link_ids=["lnk_1"],
        count=count,
        rate_per_s=rate,
        connections=HTTP_STREAM_CONNECTIONS,
    )
    result = await run_job(job, HttpResult)
    if result.failed:
        print(f"  warning: {result.failed} ingest requests failed")
    return await bench.wait_for(group, count, within_s=bench.plan.grace_s)


# --- 6. isolation: a hung endpoint, and a stalled neighbour ----------------------------------


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
        await warm_up(bench, stack)
        for group in groups:
            ledger = await stream(bench, stack, group, 500, links, bench.clicks(500))
            bench.record_latencies("isolation", ledger, bench.clicks(500))


async def stalled_neighbour(bench: Bench) -> None:
    """Three fast endpoints of an account get every click, alone and then beside a fourth
    that accepts the connection and answers only after 30 s (past a 3 s timeout), at 50 and
    at 500 clicks/s: the fast ones' latency in both, measured in the same stack."""
    async with bench.stack(*SERVICES, **NEIGHBOUR_ENV) as stack:
        runs = []
        for run in range(bench.plan.repeats):
            for rate in NEIGHBOUR_RATES:
                for shape in ("alone", "stalled"):
                    group = f"nb{rate}-{shape}-r{run}"
                    await _neighbours(bench, stack, group, stalled=shape == "stalled")
                    runs.append((rate, shape, group))
        await warm_up(bench, stack)
        for rate, shape, group in runs:
            count = bench.clicks(rate)
            fast = NEIGHBOUR_FAST_ENDPOINTS * count
            ledger = await stream(bench, stack, group, rate, ["lnk_1"], count, expected=fast)
            bench.record_latencies(f"neighbour.{rate}.{shape}", ledger, fast)


async def _neighbours(bench: Bench, stack: Stack, group: str, *, stalled: bool) -> None:
    account = f"acc_{group}"
    for n in range(NEIGHBOUR_FAST_ENDPOINTS):
        await stack.create_endpoint(bench.receiver.url(f"/ok/{group}/{n}"), account)
    if stalled:
        url = bench.receiver.url(f"/stall/{group}-stalled/{STALL_MS}/0")
        await stack.create_endpoint(url, account)


async def warm_up(bench: Bench, stack: Stack) -> None:
    """A short stream to an endpoint registered last: once it arrives, the dispatcher has
    joined its group, opened connections and loaded every endpoint registered before."""
    group = f"warm-{stack.prefix}"
    await stack.create_endpoint(bench.receiver.url(f"/ok/{group}/0"), f"acc_{group}")
    await stream(bench, stack, group, 100, ["lnk_1"], count=50)


async def stream(
    bench: Bench,
    stack: Stack,
    group: str,
    rate: int,
    links: list[str],
    count: int,
    *,
    expected: int | None = None,
) -> GroupLedger:
    await run_job(clicks_job(bench, stack, group, count, rate, links), ProduceResult)
    return await bench.wait_for(group, expected or count, within_s=bench.plan.grace_s)


def clicks_job(
    bench: Bench,
    stack: Stack,
    group: str,
    count: int,
    rate: float | None,
    links: list[str] | None = None,
) -> ClickLoad:
    """``count`` clicks for ``group``'s account, ``rate`` a second (None: a backlog)."""
    return ClickLoad(
        bootstrap=bench.bootstrap,
        topic=stack.topic("clicks"),
        account_id=f"acc_{group}",
        link_ids=links or ["lnk_1"],
        count=count,
        rate_per_s=rate,
    )


# --- 4. retry timing, and a due backlog ------------------------------------------------------


async def retry_timing(bench: Bench) -> None:
    """Envelopes written straight into the tier topics, as the deliverer writes them, each due
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
            bench.record("cpu.retry", cpu_per_1k(cpu_s, sum(led.count for led in ledgers)))


async def retry_backlog(bench: Bench) -> None:
    """Redeliveries/s and CPU while one retry service drains a tier whose envelopes are all
    due: the same backlog, endpoint and receiver as the dispatcher's one-endpoint figure."""
    async with bench.stack("ingest", **UNCAPPED) as stack:
        topic = Topics(stack.prefix).retry(Settings().retry_schedule_s[0])
        for run in range(bench.plan.repeats):
            group = f"retrybacklog-r{run}"
            url = bench.receiver.url(f"/ok/{group}/0")
            endpoint_id = await stack.create_endpoint(url, RETRY_ACCOUNT)
            tier = RetryTier(topic=topic, index=0, delay_s=0.0, endpoint_ids=[endpoint_id])
            await _retry_round(bench, [(group, tier)], bench.plan.backlog_deliveries, 0, wait=False)
            await stack.start("retry")
            cpu_before = stack.usage("retry").cpu_s
            ledger = await bench.wait_for(group, bench.plan.backlog_deliveries)
            after = stack.usage("retry")
            bench.record("retry.backlog.dps", rate_of(ledger))
            bench.record("cpu.retry.backlog", cpu_per_1k(after.cpu_s - cpu_before, ledger.count))
            bench.record("rss.retry", after.peak_rss_mb)
            await stack.stop("retry")


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
    bench: Bench,
    tiers: list[tuple[str, RetryTier]],
    per_tier: int,
    spread_s: float,
    *,
    wait: bool = True,
) -> list[GroupLedger]:
    job = EnvelopeLoad(
        bootstrap=bench.bootstrap,
        account_id=RETRY_ACCOUNT,
        tiers=[tier for _, tier in tiers],
        per_tier=per_tier,
        spread_s=spread_s,
    )
    await run_job(job, ProduceResult)
    if not wait:
        return []
    within_s = max(RETRY_SCHEDULE) + spread_s + bench.plan.grace_s
    return [await bench.wait_for(group, per_tier, within_s=within_s) for group, _ in tiers]
