"""Bytes per click (issue 26): what Kafka stores for one click, every topic counted, as the
broker holds it on disk, per codec of ``CLICKHOOK_KAFKA_COMPRESSION``.

For each codec, one stack of the three services: clicks are posted one per request to
ingest's API (as a shortener streams them), first for a healthy endpoint, then for one that
answers 503 through the whole retry schedule (scaled down to ``1s,2s``, the breaker out of
the way so that every click gets every attempt and ends as a dead letter). Around each
phase, the sizes of the broker's log segments (``*.log`` of every partition directory) are
summed; nothing else runs on the broker meanwhile, so the growth is the phase's. The
services' CPU over the same phase, per click, shows what the codec costs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from shared.ops.settings import COMPRESSIONS
from tests.bench.scenarios import Bench, warm_up
from tests.bench.stack import PUBLISH_TOKEN, SERVICES, Stack, run_job
from tests.bench.wire import HttpResult, HttpStream

RATE = 500
SCHEDULE = "1s,2s"
ATTEMPTS_WHEN_FAILING = 3  # the first attempt and one per tier of SCHEDULE
STREAM_CONNECTIONS = 8
# The attempt log lingers 50 ms; a second is ample for every write of a phase to land.
SETTLE_S = 1.0
DEAD_LETTERS = "clickhook_dead_letters_total"
ENV = {
    "CLICKHOOK_RETRY_SCHEDULE": SCHEDULE,
    # Every failing click gets every attempt: the worst case per click, not the breaker's
    # deferrals (which depend on how many clicks fail together).
    "CLICKHOOK_BREAKER_THRESHOLD": "1000000",
    "CLICKHOOK_ENDPOINT_MAX_IN_FLIGHT": "1000",
}
# Failing for longer than any bench runs.
FAILING_PATH_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    bytes_per_click: float
    cpu_ms_per_click: float


def stored_bytes(data_dir: Path) -> int:
    """The size of every log segment under the broker's data directory: the record batches as
    stored (indexes and checkpoints are left out: they do not grow with records)."""
    return sum(path.stat().st_size for path in data_dir.glob("*/*.log"))


async def bytes_per_click(bench: Bench) -> None:
    data_dir = bench.broker_data_dir
    assert data_dir is not None, "the bench's own broker"
    for run in range(bench.plan.repeats):
        # Each run in another order: no codec always gets the first (or a quieter) turn.
        for codec in COMPRESSIONS[run:] + COMPRESSIONS[:run]:
            for phase in await _codec_run(bench, data_dir, codec, f"bytes-{codec}-r{run}"):
                bench.record(f"bytes.{phase.name}.{codec}", phase.bytes_per_click)
                bench.record(f"bytes.{phase.name}.{codec}.cpu_ms", phase.cpu_ms_per_click)


async def _codec_run(bench: Bench, data_dir: Path, codec: str, group: str) -> list[Phase]:
    clicks = int(RATE * bench.plan.stream_s)
    async with bench.stack(*SERVICES, CLICKHOOK_KAFKA_COMPRESSION=codec, **ENV) as stack:
        healthy = f"{group}-ok"
        failing = f"{group}-failing"
        await stack.create_endpoint(bench.receiver.url(f"/ok/{healthy}/0"), f"acc_{healthy}")
        url = bench.receiver.url(f"/outage/{failing}/{FAILING_PATH_MS}/0/0")
        await stack.create_endpoint(url, f"acc_{failing}")
        await warm_up(bench, stack)

        async def delivered() -> bool:
            return await bench.receiver.count(bench.session, healthy) >= clicks

        async def dead() -> bool:
            return await stack.metric("retry", DEAD_LETTERS) >= clicks

        phases = [
            await _phase(bench, stack, data_dir, "healthy", healthy, clicks, delivered),
            await _phase(bench, stack, data_dir, "failing", failing, clicks, dead),
        ]
    for phase in phases:
        print(
            f"  bytes {codec} {phase.name}: {phase.bytes_per_click:,.0f} B/click, "
            f"{phase.cpu_ms_per_click:.3f} ms CPU/click"
        )
    return phases


async def _phase(
    bench: Bench,
    stack: Stack,
    data_dir: Path,
    name: str,
    group: str,
    clicks: int,
    done: Callable[[], Awaitable[bool]],
) -> Phase:
    await asyncio.sleep(SETTLE_S)
    before = stored_bytes(data_dir)
    cpu_before = _cpu_s(stack)
    job = HttpStream(
        url=stack.url("ingest", "/v1/clicks"),
        token=PUBLISH_TOKEN,
        account_id=f"acc_{group}",
        link_ids=["lnk_1"],
        count=clicks,
        rate_per_s=RATE,
        connections=STREAM_CONNECTIONS,
    )
    result = await run_job(job, HttpResult)
    if result.failed:
        print(f"  warning: {result.failed} ingest requests failed")
    await _until(done, within_s=bench.plan.grace_s + ATTEMPTS_WHEN_FAILING * 5)
    await asyncio.sleep(SETTLE_S)
    grown = stored_bytes(data_dir) - before
    cpu_s = _cpu_s(stack) - cpu_before
    return Phase(name, grown / clicks, cpu_s * 1000 / clicks)


def _cpu_s(stack: Stack) -> float:
    return sum(stack.usage(name).cpu_s for name in SERVICES)


async def _until(done: Callable[[], Awaitable[bool]], within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and not await done():  # noqa: ASYNC110 - polls a process
        await asyncio.sleep(0.2)
    if time.monotonic() >= deadline:
        print("  warning: the phase did not finish in time; its figures undercount")
