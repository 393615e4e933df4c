"""An endpoint's caps hold across every process: two dispatchers and two retry services, a
backlog for a rate-capped endpoint and one for a slow endpoint under the concurrency cap, and
what the receiver sees (docs/operations/scaling.md: caps are per endpoint across all
processes)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from shared.model.topics import CAPS_GROUP, Topics
from tests.e2e.cluster.test_workers import attempts_made
from tests.e2e.conftest import ACCOUNT_ID, Pipeline, StartPipeline
from tests.support.broker import wait_group_stable
from tests.support.clicks import make_click
from tests.support.receiver import Receiver
from tests.support.windows import most_in_any_second

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

RATE_PER_S = 10
MAX_IN_FLIGHT = 4  # each of 4 processes holds 15 of 60 partitions: floor(4 x 15 / 60) = 1
# Clicks stream in for 12 s, 12 a second for the rated endpoint (above its cap: the dispatchers
# have work for it throughout, and defer what is over to the retry tier) and 4 for the slow one.
CHUNKS = 24
CHUNK_EVERY_S = 0.5
RATED_PER_CHUNK = 6
SLOW_PER_CHUNK = 2
SLOW_ANSWER_S = 0.3
WATCH_S = 15.0
LINKS = 6  # keys of the clicks: every dispatcher gets partitions of both backlogs


@dataclass
class WatchingReceiver(Receiver):
    """Records arrivals, as Receiver does, and how many requests each path had at once."""

    slow_path: str = "/slow"
    in_flight: Counter[str] = field(default_factory=Counter)
    most_in_flight: Counter[str] = field(default_factory=Counter)

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.path
        self.in_flight[path] += 1
        self.most_in_flight[path] = max(self.most_in_flight[path], self.in_flight[path])
        try:
            response = await super()._handle(request)
            if path == self.slow_path:
                await asyncio.sleep(SLOW_ANSWER_S)
            return response
        finally:
            self.in_flight[path] -= 1


async def two_of_each(pipeline: Pipeline) -> None:
    seconds = [pipeline.spawn("dispatcher", "second"), pipeline.spawn("retry", "second")]
    await asyncio.gather(*(service.wait_ready() for service in seconds))
    await wait_group_stable(pipeline.bootstrap, Topics(pipeline.prefix).group(CAPS_GROUP), 4)


async def stream(pipeline: Pipeline) -> None:
    per_chunk = RATED_PER_CHUNK + SLOW_PER_CHUNK
    for chunk in range(CHUNKS):
        await pipeline.produce_clicks(
            [
                make_click(
                    f"evt_caps_{n}",
                    account_id=ACCOUNT_ID,
                    link_id=f"lnk_{n % LINKS}",
                    tags=["slow"] if n % per_chunk < SLOW_PER_CHUNK else ["rated"],
                )
                for n in range(chunk * per_chunk, (chunk + 1) * per_chunk)
            ]
        )
        await asyncio.sleep(CHUNK_EVERY_S)


@pytest.mark.timeout(180)
async def test_an_endpoints_caps_hold_across_two_dispatchers_and_two_retry_services(
    start_pipeline: StartPipeline,
) -> None:
    receiver = WatchingReceiver()
    await receiver.start()
    try:
        pipeline = await start_pipeline(
            CLICKHOOK_RETRY_SCHEDULE="1s,2s,4s",
            CLICKHOOK_ENDPOINT_MAX_IN_FLIGHT=str(MAX_IN_FLIGHT),
            CLICKHOOK_ATTEMPT_LOG="false",
            CLICKHOOK_LOG_LEVEL="warning",
        )
        await pipeline.create_endpoint(
            receiver.url("/rated"), filters={"tags": ["rated"]}, rate_limit_per_s=RATE_PER_S
        )
        await pipeline.create_endpoint(receiver.url("/slow"), filters={"tags": ["slow"]})
        await two_of_each(pipeline)

        started_s = time.time()
        await asyncio.gather(stream(pipeline), asyncio.sleep(WATCH_S))
        workers = [name for name in pipeline.services if name != "ingest"]
        attempts = {name: await attempts_made(pipeline, name) for name in workers}
    finally:
        await receiver.stop()

    rated = [r.at_s for r in receiver.on_path("/rated")]
    most_per_s = most_in_any_second(rated)
    span_s = max(rated) - started_s
    print(  # the figures for the report (pytest -s)
        f"rated: {len(rated)} in {span_s:.1f} s = {len(rated) / span_s:.2f}/s,"
        f" most in any second {most_per_s}; slow: {len(receiver.on_path('/slow'))},"
        f" most at once {receiver.most_in_flight['/slow']}; attempts {attempts}"
    )
    assert most_per_s <= RATE_PER_S + 1
    assert receiver.most_in_flight["/slow"] <= MAX_IN_FLIGHT
    # Under the load that triggers the caps: every process delivered, the caps were reached.
    assert all(made > 0 for made in attempts.values()), attempts
    assert most_per_s >= RATE_PER_S // 2
    assert receiver.most_in_flight["/slow"] >= 2
