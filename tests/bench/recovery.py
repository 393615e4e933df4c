"""Recovery (issue 18): one endpoint answers 503 for a minute while clicks arrive at 500/s,
then recovers. How long until what waited is delivered, at what pace, whether any attempt
came before its due time (from the attempt log), whether the endpoint's caps held, and what
the drain does to live deliveries to other endpoints.

Everything runs at the default settings, but for the breaker's first cool-down, which is as
long as the outage (the default, 60 s, in the full plan).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass

import msgspec

from shared.model.messages import AttemptRecord, decode_attempt
from shared.model.topics import Topics
from tests.bench.figures import percentile
from tests.bench.scenarios import Bench, clicks_job, cpu_per_1k, stream, warm_up
from tests.bench.stack import SERVICES, Stack, run_job
from tests.bench.topic_reader import read_topic
from tests.bench.wire import GroupLedger, ProduceResult

OUTAGE_RATE = 500
LIVE_RATE = 200
BASELINE_S = 10.0
LIVE_CHUNK_S = 5.0
ANSWER_MS = 2  # the recovered receiver's pace: well under 10 ms, and in flight long enough
POLL_S = 0.5
ATTEMPTS = "clickhook_delivery_attempts_total"
DROPPED = "clickhook_attempt_log_dropped_total"


@dataclass(frozen=True, slots=True)
class Groups:
    """Receiver groups, one account each: the failing endpoint and the others."""

    flaky: str = "rec-flaky"
    baseline: str = "rec-base"
    live: str = "rec-live"


@dataclass(frozen=True, slots=True)
class History:
    """What the attempt log says about the failing endpoint's deliveries."""

    early: int  # records before the due time the previous record of the same delivery gave
    on_schedule: frozenset[str]  # webhook-ids with a failed attempt: they wait for their tier


async def recovery(bench: Bench) -> None:
    plan = bench.plan
    groups = Groups()
    cooldown = f"{plan.recovery_outage_s:g}s"
    async with bench.stack(*SERVICES, CLICKHOOK_BREAKER_COOLDOWN=cooldown) as stack:
        outage_url = f"/outage/{groups.flaky}/{plan.recovery_outage_s * 1000:.0f}/{ANSWER_MS}/0"
        await stack.create_endpoint(bench.receiver.url(outage_url), f"acc_{groups.flaky}")
        for group in (groups.baseline, groups.live):
            await stack.create_endpoint(bench.receiver.url(f"/ok/{group}/0"), f"acc_{group}")
        await warm_up(bench, stack)
        baseline_count = int(LIVE_RATE * BASELINE_S)
        baseline = await stream(bench, stack, groups.baseline, LIVE_RATE, ["lnk_1"], baseline_count)
        bench.record_latencies("recovery.baseline", baseline, baseline_count)
        clicks = int(OUTAGE_RATE * plan.recovery_outage_s)
        await run_job(clicks_job(bench, stack, groups.flaky, clicks, OUTAGE_RATE), ProduceResult)
        recovered_s = await _outage_end(bench, groups.flaky)
        await asyncio.sleep(max(0.0, recovered_s - time.time()))
        print(
            f"  recovery: the endpoint answers again (retry pid {stack.pid('retry')})", flush=True
        )
        retry_cpu_s = stack.usage("retry").cpu_s
        retry_attempts = await stack.metric("retry", ATTEMPTS)
        async with _live(bench, stack, groups.live) as live:
            flaky = await _drained(bench, groups.flaky, clicks, plan.recovery_wait_s)
            drained_at = time.time()
        retry_cpu_s = stack.usage("retry").cpu_s - retry_cpu_s
        redeliveries = int(await stack.metric("retry", ATTEMPTS) - retry_attempts)
        others = await bench.receiver.ledger(bench.session, groups.live)
        bench.record_latencies("recovery.others", others, live.sent)
        history = await _history(bench, stack)
        dropped = sum([await stack.metric(name, DROPPED) for name in ("dispatcher", "retry")])
    _record(bench, flaky, clicks, recovered_s, history)
    bench.record("recovery.cpu.retry", cpu_per_1k(retry_cpu_s, redeliveries))
    bench.record("recovery.attempt_log_dropped", dropped)
    print(f"  recovery: drained {flaky.unique:,} of {clicks:,} by +{drained_at - recovered_s:.0f}s")


async def _outage_end(bench: Bench, group: str) -> float:
    """When the receiver ends the outage (it began with the group's first request)."""
    deadline = time.monotonic() + bench.plan.recovery_wait_s
    ledger = await bench.receiver.ledger(bench.session, group)
    while ledger.outage_until_s is None:  # the receiver is another process: poll it
        if time.monotonic() > deadline:
            raise RuntimeError(f"no request reached {group}: is the dispatcher running?")
        await asyncio.sleep(POLL_S)
        ledger = await bench.receiver.ledger(bench.session, group)
    return ledger.outage_until_s


class _Live:
    """Clicks for another endpoint at ``LIVE_RATE`` until stopped, in short jobs, so that
    what was sent is known: ``sent`` counts them."""

    def __init__(self, bench: Bench, stack: Stack, group: str) -> None:
        self._job = clicks_job(bench, stack, group, int(LIVE_RATE * LIVE_CHUNK_S), LIVE_RATE)
        self._stop = asyncio.Event()
        self.sent = 0

    async def run(self) -> None:
        while not self._stop.is_set():
            self.sent += (await run_job(self._job, ProduceResult)).records

    def stop(self) -> None:
        self._stop.set()


@contextlib.asynccontextmanager
async def _live(bench: Bench, stack: Stack, group: str) -> AsyncIterator[_Live]:
    """Live clicks for another endpoint while the block runs (its last job ends after it)."""
    live = _Live(bench, stack, group)
    task = asyncio.create_task(live.run())
    try:
        yield live
    finally:
        live.stop()
        await task
        await asyncio.sleep(bench.plan.grace_s / 2)  # what was sent last arrives


async def _drained(bench: Bench, group: str, expected: int, within_s: float) -> GroupLedger:
    """Wait until every click reached the endpoint, or got a 503 and waits for its schedule's
    next tier (minutes away), or for ``within_s``."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        ledger = await bench.receiver.ledger(bench.session, group)
        on_schedule = ledger.refused_ids.difference(ledger.arrivals)
        if ledger.unique + len(on_schedule) >= expected:
            return ledger
        await asyncio.sleep(POLL_S)
    return await bench.receiver.ledger(bench.session, group)


async def _history(bench: Bench, stack: Stack) -> History:
    """Per delivery, its records in time order: each must come at or after the due time the
    one before it gave (``next_attempt_at_ms``)."""
    records: dict[str, list[AttemptRecord]] = defaultdict(list)
    async for record in read_topic(bench.bootstrap, Topics(stack.prefix).attempts):
        if record.value is None:
            continue
        try:
            attempt = decode_attempt(record.value)
        except msgspec.DecodeError:
            continue
        records[attempt.webhook_id].append(attempt)
    early = 0
    on_schedule: set[str] = set()
    for webhook_id, lines in records.items():
        lines.sort(key=lambda line: line.at_ms)
        for before, after in itertools.pairwise(lines):
            if before.next_attempt_at_ms is not None and after.at_ms < before.next_attempt_at_ms:
                early += 1
        if any(line.outcome not in ("success", "deferred") for line in lines):
            on_schedule.add(webhook_id)
    return History(early=early, on_schedule=frozenset(on_schedule))


def _record(
    bench: Bench, flaky: GroupLedger, clicks: int, recovered_s: float, history: History
) -> None:
    """Figures of the drain: the deliveries that waited without an attempt (the others
    failed one and wait for their schedule's next tier, minutes away)."""
    waited = [
        at_s - recovered_s
        for webhook_id, at_s in flaky.arrivals.items()
        if webhook_id not in history.on_schedule and at_s >= recovered_s
    ]
    backlog = clicks - (len(flaky.arrivals) - len(waited)) - len(history.on_schedule)
    bench.record("recovery.backlog", clicks)
    bench.record("recovery.undelivered", max(0, backlog - len(waited)))
    if waited:
        if len(waited) >= backlog:
            bench.record("recovery.drain_s", max(waited))
        bench.record("recovery.drain99_s", percentile(waited, 99))
        span_s = max(waited) - min(waited)
        bench.record("recovery.redeliveries_per_s", len(waited) / span_s if span_s else 0.0)
    bench.record("recovery.early_attempts", history.early)
    bench.record("recovery.max_in_flight", flaky.max_in_flight)
    bench.record("recovery.duplicates", flaky.count - flaky.unique)
    print(
        f"  recovery: {len(waited):,} delivered after recovery of {backlog:,} waiting; "
        f"{len(history.on_schedule)} on their schedule after a failed attempt"
    )
