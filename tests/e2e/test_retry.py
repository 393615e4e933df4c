"""The retry service against the real broker: on time, never early, crash and rebalance safe,
dead letters with history, replay and circuit breaker. Auto-disable is checked with the
operational webhook it sends (tests/e2e/test_operational_webhooks.py)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from standardwebhooks.webhooks import Webhook

from shared.model.messages import DeliveryEnvelope, decode_dead_letter, encode
from shared.model.topics import HEADER_DUE_AT_MS
from tests.e2e.conftest import ACCOUNT_ID, ACCOUNT_TOKEN, Pipeline, StartPipeline
from tests.support.clicks import make_click
from tests.support.receiver import Received, Receiver
from tests.support.topics import read_records

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

LATE_TOLERANCE_S = 1.0


def by_webhook(arrivals: list[Received]) -> dict[str, list[Received]]:
    grouped: dict[str, list[Received]] = defaultdict(list)
    for arrival in arrivals:
        grouped[arrival.headers["webhook-id"]].append(arrival)
    return grouped


def assert_on_schedule(attempts: list[Received], schedule_s: list[float]) -> None:
    """Each retry comes at least its delay after the previous attempt, and not much later
    (jitter adds up to 10 % of the delay)."""
    for previous, current, delay_s in zip(attempts, attempts[1:], schedule_s, strict=False):
        gap_s = current.at_s - previous.at_s
        assert gap_s >= delay_s, f"early: {gap_s:.3f}s after the previous attempt, delay {delay_s}s"
        assert gap_s <= delay_s * 1.1 + LATE_TOLERANCE_S, f"late: {gap_s:.3f}s for {delay_s}s"


async def test_retries_come_on_schedule_and_never_early(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    receiver.respond = lambda _, n: 500 if n < 3 else 200
    pipeline = await start_pipeline(CLICKHOOK_RETRY_SCHEDULE="1s,2s,3s")
    await pipeline.create_endpoint(receiver.url())

    await pipeline.post_clicks(make_click("evt_sched", account_id=ACCOUNT_ID))
    arrivals = await receiver.wait_for(4, timeout_s=30)

    assert len(by_webhook(arrivals)) == 1
    assert_on_schedule(arrivals, [1.0, 2.0, 3.0])


async def test_kill_9_while_records_wait_loses_nothing_and_delivers_nothing_early(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    receiver.respond = lambda _, n: 500 if n == 0 else 200
    pipeline = await start_pipeline(CLICKHOOK_RETRY_SCHEDULE="8s")
    for n in range(3):
        await pipeline.create_endpoint(receiver.url(f"/ep{n}"))
    events = [
        make_click(f"evt_rk_{n}", account_id=ACCOUNT_ID, link_id=f"lnk_{n}") for n in range(20)
    ]

    await pipeline.post_clicks(events)
    await receiver.wait_for(60, timeout_s=20)
    await asyncio.sleep(1.0)  # the retry service has read and paused the tier by now
    pipeline.services["retry"].kill()
    restarted = pipeline.spawn("retry", "restarted")
    await restarted.wait_ready()
    expected = {(f"/ep{n}", e["id"]) for n in range(3) for e in events}
    await receiver.wait_until(lambda: len(receiver.received) >= 63, timeout_s=30)

    attempts = by_webhook(receiver.received)
    retried = [a for a in attempts.values() if len(a) > 1]
    delivered = {(a.path, orjson.loads(a.body)["data"]["id"]) for a in receiver.received}
    assert delivered == expected
    assert len(retried) == 3  # the first request of each endpoint failed
    for retry in retried:
        assert retry[1].at_s - retry[0].at_s >= 8.0


async def test_rebalance_between_two_retry_instances_keeps_due_times(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    receiver.respond = lambda _, n: 500 if n == 0 else 200
    pipeline = await start_pipeline(CLICKHOOK_RETRY_SCHEDULE="6s")
    paths = [f"/rb{n}" for n in range(6)]
    for path in paths:
        await pipeline.create_endpoint(receiver.url(path))

    await pipeline.post_clicks(make_click("evt_rebalance", account_id=ACCOUNT_ID))
    await receiver.wait_for(6, timeout_s=20)
    second = pipeline.spawn("retry", "second")  # joins while the tier partitions are paused
    await second.wait_ready()
    await receiver.wait_for(12, timeout_s=30)

    for attempts in by_webhook(receiver.received).values():
        assert len(attempts) >= 2
        assert attempts[1].at_s - attempts[0].at_s >= 6.0


async def test_dead_letters_replay_once_after_the_receiver_recovers(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    healthy = False
    receiver.respond = lambda _, __: 200 if healthy else 500
    pipeline = await start_pipeline(CLICKHOOK_RETRY_SCHEDULE="1s")
    endpoint = await pipeline.create_endpoint(receiver.url())
    since = datetime.now(UTC) - timedelta(seconds=1)
    events = [make_click(f"evt_rp_{n}", account_id=ACCOUNT_ID) for n in range(5)]

    await pipeline.post_clicks(events)
    letters = await read_records(pipeline.bootstrap, pipeline.topic("webhook.dlq"), 5, 30)
    healthy = True
    first = await pipeline.replay(endpoint["id"], since)
    await receiver.wait_for(15, timeout_s=20)
    second = await pipeline.replay(endpoint["id"], since)
    await asyncio.sleep(2.0)

    assert {decode_dead_letter(r.value).reason for r in letters} == {"exhausted"}
    assert all(len(decode_dead_letter(r.value).envelope.attempts) == 2 for r in letters)
    assert (first["state"], first["matched"], first["replayed"]) == ("completed", 5, 5)
    assert first["already_replayed"] == 0
    assert (second["state"], second["replayed"], second["already_replayed"]) == ("completed", 0, 5)
    per_webhook = Counter(a.headers["webhook-id"] for a in receiver.received)
    assert sorted(per_webhook.values()) == [3] * 5  # two failed attempts, one replayed success


async def test_deleted_and_disabled_endpoints_dead_letter_their_retries(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    receiver.respond = lambda _, __: 500
    pipeline = await start_pipeline(CLICKHOOK_RETRY_SCHEDULE="3s")
    deleted = await pipeline.create_endpoint(receiver.url("/deleted"))
    disabled = await pipeline.create_endpoint(receiver.url("/disabled"))
    headers = {"authorization": f"Bearer {ACCOUNT_TOKEN}"}

    await pipeline.post_clicks(make_click("evt_gone", account_id=ACCOUNT_ID))
    await receiver.wait_for(2, timeout_s=10)
    async with pipeline.session.delete(
        f"{pipeline.ingest_url}/v1/endpoints/{deleted['id']}", headers=headers
    ) as response:
        assert response.status == 204
    await pipeline.patch_endpoint(disabled["id"], enabled=False)
    records = await read_records(pipeline.bootstrap, pipeline.topic("webhook.dlq"), 2, 20)

    reasons = {r.key.decode(): decode_dead_letter(r.value).reason for r in records}
    assert reasons == {deleted["id"]: "endpoint_deleted", disabled["id"]: "endpoint_disabled"}
    assert len(receiver.received) == 2


async def test_breaker_opens_after_failures_and_a_probe_closes_it(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    healthy = False
    receiver.respond = lambda _, __: 200 if healthy else 503
    pipeline = await start_pipeline(
        CLICKHOOK_RETRY_SCHEDULE="1s,1s,1s,1s",
        CLICKHOOK_BREAKER_THRESHOLD="3",
        CLICKHOOK_BREAKER_COOLDOWN="3s",
        CLICKHOOK_BREAKER_MAX_COOLDOWN="6s",
        CLICKHOOK_ENDPOINT_MAX_IN_FLIGHT="1",
    )
    await pipeline.create_endpoint(receiver.url())

    await pipeline.post_clicks([make_click(f"evt_br_{n}", account_id=ACCOUNT_ID) for n in range(6)])
    await asyncio.sleep(2.5)
    attempts_while_open = len(receiver.received)
    healthy = True
    healed_at = time.time()
    await receiver.wait_until(
        lambda: (
            len({a.headers["webhook-id"] for a in receiver.received if a.at_s >= healed_at}) == 6
        ),
        timeout_s=30,
    )

    # Six deliveries hit a failing endpoint; without the breaker each would have been tried
    # at least twice within the window. With it, only three failures open it.
    assert attempts_while_open < 12, f"{attempts_while_open} attempts while the endpoint failed"
    deferred = await scrape_counter(
        pipeline, "clickhook_deliveries_deferred_total", reason="breaker_open"
    )
    assert deferred > 0


async def scrape_counter(pipeline: Pipeline, name: str, **labels: str) -> float:
    """The sum over dispatcher and retry of the samples of ``name`` that carry ``labels``."""
    return sum(
        [await pipeline.metric(service, name, **labels) for service in ("dispatcher", "retry")]
    )


async def test_envelope_in_a_tier_of_an_older_schedule_is_not_stranded(
    start_pipeline: StartPipeline, receiver: Receiver, kafka_bootstrap: str, prefix: str
) -> None:
    old_tier = f"{prefix}webhook.retry.7m"  # a tier the new schedule no longer has
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(old_tier, 1, 1)])
    finally:
        await admin.close()
    pipeline = await start_pipeline(CLICKHOOK_RETRY_SCHEDULE="1s,2s")
    endpoint = await pipeline.create_endpoint(receiver.url())
    event = make_click("evt_old_tier", account_id=ACCOUNT_ID)
    envelope = DeliveryEnvelope(
        webhook_id="msg_old_tier",
        event_id=event["id"],
        endpoint_id=endpoint["id"],
        account_id=ACCOUNT_ID,
        event=event,
        attempts_made=5,
        tier=5,  # its place in the old, longer schedule
        due_at_ms=int(time.time() * 1000),
    )

    await produce_envelope(pipeline.bootstrap, old_tier, envelope)
    [arrival] = await receiver.wait_for(1, timeout_s=30)

    assert arrival.headers["webhook-id"] == "msg_old_tier"
    Webhook(endpoint["secret"]).verify(arrival.body, arrival.headers)


async def produce_envelope(bootstrap: str, topic: str, envelope: DeliveryEnvelope) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            topic,
            key=envelope.endpoint_id.encode(),
            value=encode(envelope),
            headers=[(HEADER_DUE_AT_MS, str(envelope.due_at_ms).encode())],
        )
    finally:
        await producer.stop()
