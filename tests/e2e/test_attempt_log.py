"""The attempt log is an audit trail: when it cannot be written, deliveries go on, and nothing
already answered with 2xx is sent again."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import ACCOUNT_ID, Pipeline, StartPipeline
from tests.support.broker import PrivateBroker
from tests.support.clicks import make_click
from tests.support.receiver import Received, Receiver

pytestmark = [pytest.mark.kafka, pytest.mark.e2e, pytest.mark.timeout(300)]

ENDPOINTS = 3
CLICKS = 2000
# Longer than the attempt-log producer's request timeout (10 s): its sends fail meanwhile.
OUTAGE_S = 14.0


def posts_after_a_success(arrivals: list[Received]) -> list[tuple[str, str]]:
    """(path, webhook-id) of every POST that came after that endpoint had answered 2xx."""
    answered: set[tuple[str, str]] = set()
    again: list[tuple[str, str]] = []
    for arrival in sorted(arrivals, key=lambda a: a.at_s):
        pair = (arrival.path, arrival.headers["webhook-id"])
        if pair in answered:
            again.append(pair)
        if 200 <= arrival.status < 300:
            answered.add(pair)
    return again


async def dropped(pipeline: Pipeline) -> float:
    total = 0.0
    for service in ("dispatcher", "retry"):
        port = pipeline.services[service].port
        async with pipeline.session.get(f"http://127.0.0.1:{port}/metrics") as response:
            for family in text_string_to_metric_families(await response.text()):
                total += sum(
                    s.value
                    for s in family.samples
                    if s.name == "clickhook_attempt_log_dropped_total"
                )
    return total


async def test_a_broker_outage_longer_than_the_log_timeout_sends_nothing_twice(
    start_pipeline: StartPipeline, private_broker: PrivateBroker
) -> None:
    # Slow enough that deliveries are still going out, from records fetched before, while the
    # broker is away.
    receiver = Receiver(delay_s=1.0)
    await receiver.start()
    try:
        pipeline = await start_pipeline(
            private_broker.bootstrap,
            CLICKHOOK_RETRY_SCHEDULE="2s,4s",
            CLICKHOOK_ENDPOINT_MAX_IN_FLIGHT="40",
            CLICKHOOK_ENDPOINT_MAX_QUEUED="5000",
            CLICKHOOK_ENDPOINT_MAX_WAIT="60s",
            CLICKHOOK_DELIVERY_TIMEOUT="5s",
        )
        for n in range(ENDPOINTS):
            await pipeline.create_endpoint(receiver.url(f"/ep{n}"))
        events = [make_click(f"evt_al_{n}", account_id=ACCOUNT_ID) for n in range(CLICKS)]
        for start in range(0, CLICKS, 500):
            await pipeline.post_clicks(events[start : start + 500])
        await receiver.wait_for(200, timeout_s=30)

        await private_broker.stop()
        during = len(receiver.received)
        await asyncio.sleep(OUTAGE_S)
        delivered_while_away = len(receiver.received) - during
        await private_broker.start()
        await receiver.wait_until(
            lambda: (
                len({(a.path, a.headers["webhook-id"]) for a in receiver.received})
                >= ENDPOINTS * CLICKS
            ),
            timeout_s=180,
        )
        await asyncio.sleep(5.0)  # a second POST, if any were coming, comes by now
        records_dropped = await dropped(pipeline)
    finally:
        await receiver.stop()

    again = posts_after_a_success(receiver.received)
    per_path: dict[str, int] = defaultdict(int)
    for path, _ in again:
        per_path[path] += 1
    assert delivered_while_away > 0, "nothing was delivered while the broker was away"
    assert records_dropped > 0, "the attempt log never failed: the scenario did not happen"
    assert again == [], f"{len(again)} POSTs after a 2xx, per endpoint {dict(per_path)}"
