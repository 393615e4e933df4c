"""The dispatcher against the real broker: fairness, fan-out, crash safety, scaling out."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter

import orjson
import pytest

from shared.model.messages import decode_dead_letter, decode_envelope
from tests.e2e.conftest import ACCOUNT_ID, Pipeline, StartPipeline
from tests.support.clicks import make_click
from tests.support.receiver import Received, Receiver
from tests.support.topics import read_records

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

DISPATCHER_SHARE_OF_THE_CAP = 20 // 2


def event_id_of(arrival: Received) -> str:
    event_id: str = orjson.loads(arrival.body)["data"]["id"]
    return event_id


def pairs(arrivals: list[Received]) -> Counter[tuple[str, str]]:
    """(endpoint path, event id) → deliveries."""
    return Counter((a.path, event_id_of(a)) for a in arrivals)


async def test_a_slow_endpoint_does_not_delay_the_fast_ones(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    slow = Receiver(delay_s=10.0)
    await slow.start()
    try:
        pipeline = await start_pipeline(CLICKHOOK_RETRY_SCHEDULE="1m")
        await pipeline.create_endpoint(slow.url("/slow"))
        for n in range(9):
            await pipeline.create_endpoint(receiver.url(f"/fast{n}"))
        sent_at: dict[str, float] = {}
        for n in range(60):
            sent_at[f"evt_fair_{n}"] = time.time()
            await pipeline.post_clicks(make_click(f"evt_fair_{n}", account_id=ACCOUNT_ID))
            await asyncio.sleep(0.02)
        arrivals = await receiver.wait_for(9 * 60, timeout_s=30)
        slow_in_flight = len(slow.received)
    finally:
        await slow.stop()

    latencies = sorted(a.at_s - sent_at[event_id_of(a)] for a in arrivals)
    p95 = latencies[int(len(latencies) * 0.95)]
    # Its cap (CLICKHOOK_ENDPOINT_MAX_IN_FLIGHT, 20) is the endpoint's across processes: the
    # dispatcher holds half of it beside the retry service (shared/model/caps.py).
    assert slow_in_flight >= DISPATCHER_SHARE_OF_THE_CAP, "the slow endpoint was never saturated"
    assert set(pairs(arrivals)) == {
        (f"/fast{e}", f"evt_fair_{n}") for e in range(9) for n in range(60)
    }
    assert p95 < 1.0, f"fast p95 {p95:.3f}s (median {statistics.median(latencies):.3f}s)"


async def test_a_click_published_right_after_the_201_reaches_the_new_endpoint(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    # A write's commit returns before its markers are in the log; answering then let a click
    # published at once reach the dispatcher before the endpoint did (every time on a fresh
    # broker). Each round: a new endpoint for a new link, then at once a click on that link.
    pipeline = await start_pipeline()
    rounds = 20
    for n in range(rounds):
        await pipeline.create_endpoint(receiver.url(f"/new{n}"), filters={"link_ids": [f"lnk_{n}"]})
        await pipeline.post_clicks(
            make_click(f"evt_new_{n}", account_id=ACCOUNT_ID, link_id=f"lnk_{n}")
        )

    await receiver.wait_for(rounds, timeout_s=20)
    assert sorted(pairs(receiver.received)) == sorted(
        (f"/new{n}", f"evt_new_{n}") for n in range(rounds)
    )


async def test_fan_out_respects_filters_accounts_and_disabled_endpoints(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    pipeline = await start_pipeline()
    for n in range(100):
        await pipeline.create_endpoint(receiver.url(f"/all{n}"))
    await pipeline.create_endpoint(receiver.url("/spring"), filters={"tags": ["spring"]})
    await pipeline.create_endpoint(receiver.url("/autumn"), filters={"tags": ["autumn"]})
    await pipeline.create_endpoint(receiver.url("/lnk2"), filters={"link_ids": ["lnk_2"]})
    await pipeline.create_endpoint(receiver.url("/off"), enabled=False)

    await pipeline.post_clicks(
        [
            make_click("evt_a", account_id=ACCOUNT_ID, link_id="lnk_1", tags=["spring"]),
            make_click("evt_b", account_id=ACCOUNT_ID, link_id="lnk_2", tags=[]),
            make_click("evt_other", account_id="acc_other", link_id="lnk_1"),
        ]
    )
    arrivals = await receiver.wait_for(100 * 2 + 2, timeout_s=30)
    await asyncio.sleep(1.0)  # anything wrongly routed would arrive by now

    delivered = pairs(receiver.received)
    expected = {(f"/all{n}", e) for n in range(100) for e in ("evt_a", "evt_b")}
    expected |= {("/spring", "evt_a"), ("/lnk2", "evt_b")}
    assert set(delivered) == expected
    assert len(arrivals) >= 202


async def test_410_disables_the_endpoint_and_dead_letters(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    receiver.respond = lambda request, _: 410 if request.path == "/gone" else 200
    pipeline = await start_pipeline()
    gone = await pipeline.create_endpoint(receiver.url("/gone"))
    await pipeline.create_endpoint(receiver.url("/ok"))

    await pipeline.post_clicks(make_click("evt_410_1", account_id=ACCOUNT_ID))
    await receiver.wait_for(2, timeout_s=10)
    [letter_record] = await read_records(pipeline.bootstrap, pipeline.topic("webhook.dlq"), 1)
    shown = await pipeline.disabled_endpoint(gone["id"])
    await pipeline.post_clicks(make_click("evt_410_2", account_id=ACCOUNT_ID))
    await receiver.wait_until(lambda: len(receiver.on_path("/ok")) == 2, timeout_s=10)
    await asyncio.sleep(0.5)

    assert decode_dead_letter(letter_record.value).reason == "endpoint_gone"
    assert shown["enabled"] is False
    assert "410" in str(shown["disabled_reason"])
    assert len(receiver.on_path("/gone")) == 1


@pytest.mark.timeout(480)
async def test_kill_9_mid_stream_loses_nothing(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    pipeline = await start_pipeline()
    for n in range(3):
        await pipeline.create_endpoint(receiver.url(f"/ep{n}"))
    events = [
        make_click(f"evt_kill_{n}", account_id=ACCOUNT_ID, link_id=f"lnk_{n % 7}")
        for n in range(1500)
    ]

    await pipeline.produce_clicks(events)
    await receiver.wait_for(300, timeout_s=30)
    pipeline.services["dispatcher"].kill()
    killed_at = len(receiver.received)
    restarted = pipeline.spawn("dispatcher", "restarted")
    await restarted.wait_ready()
    expected = {(f"/ep{n}", e["id"]) for n in range(3) for e in events}
    # Deliveries deferred by both dispatchers drain through the retry tiers, three endpoints at
    # their shares of the caps (10 in flight per process): 220-260 s on the 2-core machine. The
    # burst is far over the shares; deferred ones back off to the minute tier and come back a
    # minute at a time, and the retry service lets in only what drains within the gate's 1 s
    # wait, so the last ~1,200 take three or four minute steps (a known gap: the back-off does
    # not yet follow the pace the endpoint shows).
    await receiver.wait_until(lambda: set(pairs(receiver.received)) >= expected, timeout_s=420)

    delivered = pairs(receiver.received)
    duplicates = sum(count - 1 for count in delivered.values())
    print(f"kill -9 after {killed_at} deliveries: {len(expected)} pairs, {duplicates} duplicates")
    assert set(delivered) == expected
    assert 0 < killed_at < len(expected), "the kill did not land mid-stream"


async def test_two_dispatchers_share_the_partitions(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    pipeline = await start_pipeline()
    second = pipeline.spawn("dispatcher", "second")
    await second.wait_ready()
    await pipeline.create_endpoint(receiver.url("/shared"))
    await asyncio.sleep(3)  # let the group settle with two members
    events = [
        make_click(f"evt_two_{n}", account_id=ACCOUNT_ID, link_id=f"lnk_{n}") for n in range(300)
    ]

    await pipeline.produce_clicks(events)
    await receiver.wait_for(300, timeout_s=30)
    await asyncio.sleep(1.0)

    delivered = pairs(receiver.received)
    assert set(delivered) == {("/shared", e["id"]) for e in events}
    assert sum(delivered.values()) == 300, "a record was delivered twice outside a rebalance"
    first_metrics = await scrape(pipeline, pipeline.services["dispatcher"].port)
    second_metrics = await scrape(pipeline, second.port)
    assert success_count(first_metrics) > 0
    assert success_count(second_metrics) > 0


async def scrape(pipeline: Pipeline, port: int) -> str:
    async with pipeline.session.get(f"http://127.0.0.1:{port}/metrics") as response:
        return await response.text()


def success_count(exposition: str) -> float:
    for line in exposition.splitlines():
        if line.startswith("clickhook_delivery_attempts_total{") and 'outcome="success"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_sigterm_hands_unfinished_deliveries_to_the_retry_tier(
    start_pipeline: StartPipeline,
) -> None:
    stuck = Receiver(delay_s=30.0)
    await stuck.start()
    try:
        pipeline = await start_pipeline(
            CLICKHOOK_DELIVERY_TIMEOUT="60s",
            CLICKHOOK_DRAIN_GRACE="2s",
            CLICKHOOK_RETRY_SCHEDULE="1m",
        )
        await pipeline.create_endpoint(stuck.url("/stuck"))
        events = [make_click(f"evt_term_{n}", account_id=ACCOUNT_ID) for n in range(3)]
        await pipeline.post_clicks(events)
        await stuck.wait_for(3, timeout_s=10)

        stopping_started = time.monotonic()
        exit_code = await asyncio.to_thread(pipeline.services["dispatcher"].terminate)
        stopped_after_s = time.monotonic() - stopping_started
        handed = await read_records(pipeline.bootstrap, pipeline.topic("webhook.retry.1m"), 3, 10)
        restarted = pipeline.spawn("dispatcher", "after-term")
        await restarted.wait_ready()
        await asyncio.sleep(3.0)  # an uncommitted record would be attempted again by now
    finally:
        await stuck.stop()

    envelopes = [decode_envelope(r.value) for r in handed]
    assert exit_code == 0
    assert stopped_after_s < 15, f"stopped after {stopped_after_s:.1f}s"
    assert sorted(e.event_id for e in envelopes) == sorted(e["id"] for e in events)
    assert all(e.attempts_made == 0 and e.tier == -1 for e in envelopes)
    assert len(stuck.received) == 3, "a handed-off record was delivered again after restart"
