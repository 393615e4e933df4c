"""Caps (issue 22): one endpoint capped at 2 deliveries/s gets 20 clicks/s for a minute
(schedule ``5s,30s,2m,5m``), beside healthy endpoints of another account, through the real
dispatcher and retry processes and the real receiver.

What it costs the shared tiers and the delivery log (records per click for the capped
endpoint, over the first 1.25 x the burst and over as long again after it), what the capped
receiver sees (most requests in any one second), and what the healthy endpoints see (their
p99 beside the capped one, against their p99 alone, both in this run).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass

import msgspec

from shared.model.messages import decode_attempt, decode_envelope
from shared.model.topics import Topics
from tests.bench.scenarios import Bench, clicks_job, stream, warm_up
from tests.bench.stack import SERVICES, Stack, run_job
from tests.bench.topic_reader import read_topic, record_count, topics_with_prefix
from tests.bench.wire import ProduceResult
from tests.support.windows import most_in_any_second

CAP_PER_S = 2
CAPPED_RATE = 20
HEALTHY_RATE = 50
HEALTHY_ENDPOINTS = 3
SCHEDULE = "5s,30s,2m,5m"
# The first window is 1.25 x the burst (75 s for a minute); the later one as long again.
WINDOW_SHARE = 1.25
CAPPED_GROUP = "caps-capped"


@dataclass(frozen=True, slots=True)
class Windows:
    """Record timestamps (ms) that split the first window from the later one, and its end."""

    start_ms: int
    split_ms: int
    end_ms: int

    def which(self, at_ms: int) -> str | None:
        if self.start_ms <= at_ms < self.split_ms:
            return "first"
        if self.split_ms <= at_ms < self.end_ms:
            return "later"
        return None


async def caps(bench: Bench) -> None:
    burst_s = bench.plan.caps_burst_s
    async with bench.stack(*SERVICES, CLICKHOOK_RETRY_SCHEDULE=SCHEDULE) as stack:
        capped = await stack.create_endpoint(
            bench.receiver.url(f"/ids/{CAPPED_GROUP}/0"),
            f"acc_{CAPPED_GROUP}",
            rate_limit_per_s=CAP_PER_S,
        )
        for group in ("caps-alone", "caps-beside"):
            for n in range(HEALTHY_ENDPOINTS):
                await stack.create_endpoint(bench.receiver.url(f"/ok/{group}/{n}"), f"acc_{group}")
        await warm_up(bench, stack)
        healthy = int(HEALTHY_RATE * bench.plan.stream_s)
        expected = healthy * HEALTHY_ENDPOINTS
        alone = await stream(
            bench, stack, "caps-alone", HEALTHY_RATE, ["lnk_1"], healthy, expected=expected
        )
        bench.record_latencies("caps.healthy.alone", alone, expected)
        clicks = int(CAPPED_RATE * burst_s)
        started_s = time.time()
        job = clicks_job(bench, stack, CAPPED_GROUP, clicks, CAPPED_RATE)
        burst = asyncio.create_task(run_job(job, ProduceResult))
        await asyncio.sleep(burst_s / 2)  # the capped endpoint's backlog is well under way
        beside = await stream(
            bench, stack, "caps-beside", HEALTHY_RATE, ["lnk_1"], healthy, expected=expected
        )
        bench.record_latencies("caps.healthy.beside", beside, expected)
        await burst
        windows = Windows(
            start_ms=int(started_s * 1000),
            split_ms=int((started_s + burst_s * WINDOW_SHARE) * 1000),
            end_ms=int((started_s + 2 * burst_s * WINDOW_SHARE) * 1000),
        )
        await asyncio.sleep(max(0.0, windows.end_ms / 1000 - time.time()))
        tiers = await _tier_records(bench, stack, capped, windows)
        logged = await _log_records(bench, stack, capped, windows)
        ledger = await bench.receiver.ledger(bench.session, CAPPED_GROUP)
    bench.record("caps.clicks", clicks)
    for window in ("first", "later"):
        bench.record(f"caps.tier_records_per_click.{window}", tiers[window] / clicks)
        bench.record(f"caps.log_records_per_click.{window}", logged[window] / clicks)
    bench.record("caps.delivered", len(ledger.arrivals))
    bench.record("caps.max_per_s", most_in_any_second(ledger.arrivals.values()))
    print(
        f"  caps: {clicks:,} clicks, {len(ledger.arrivals):,} delivered; tier records "
        f"{tiers['first']:,} then {tiers['later']:,}, log records {logged['first']:,} then "
        f"{logged['later']:,}"
    )


async def _tier_records(
    bench: Bench, stack: Stack, endpoint_id: str, windows: Windows
) -> Counter[str]:
    """The capped endpoint's envelopes written to any tier topic, per window."""
    prefix = Topics(stack.prefix).retry(1)[: -len("1s")]
    counted: Counter[str] = Counter()
    for topic in await topics_with_prefix(bench.bootstrap, prefix):
        if not await record_count(bench.bootstrap, topic):
            continue
        async for record in read_topic(bench.bootstrap, topic):
            window = windows.which(record.timestamp)
            if record.value is None or window is None:
                continue
            with contextlib.suppress(msgspec.DecodeError):
                if decode_envelope(record.value).endpoint_id == endpoint_id:
                    counted[window] += 1
    return counted


async def _log_records(
    bench: Bench, stack: Stack, endpoint_id: str, windows: Windows
) -> Counter[str]:
    """The capped endpoint's records in the delivery log (attempts and deferrals), per window."""
    counted: Counter[str] = Counter()
    async for record in read_topic(bench.bootstrap, Topics(stack.prefix).attempts):
        window = windows.which(record.timestamp)
        if record.value is None or window is None:
            continue
        with contextlib.suppress(msgspec.DecodeError):
            if decode_attempt(record.value).endpoint_id == endpoint_id:
                counted[window] += 1
    return counted
