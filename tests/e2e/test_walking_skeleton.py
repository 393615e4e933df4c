"""One real path through the whole pipeline, against the real broker."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from shared.model.messages import decode_attempt, decode_dead_letter
from shared.model.topics import HEADER_REASON
from tests.e2e.conftest import ACCOUNT_ID, StartPipeline
from tests.support.clicks import make_click
from tests.support.receiver import Receiver
from tests.support.topics import produce, read_records

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]


def click(event_id: str) -> dict[str, Any]:
    return make_click(event_id, account_id=ACCOUNT_ID)


async def test_posted_click_is_delivered_signed_within_a_second(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    pipeline = await start_pipeline()
    endpoint = await pipeline.create_endpoint(receiver.url())
    event = click("evt_e2e_1")

    posted_at = time.time()
    accepted = await pipeline.post_clicks(event)
    [arrival] = await receiver.wait_for(1, timeout_s=10)

    assert accepted == {"accepted": 1, "ids": ["evt_e2e_1"]}
    assert arrival.at_s - posted_at < 1.0, pipeline.logs()
    verified = Webhook(endpoint["secret"]).verify(arrival.body, arrival.headers)
    assert verified["data"] == event
    assert verified["type"] == "link.clicked"
    assert verified["timestamp"] == event["occurred_at"]


async def test_failed_delivery_is_retried_on_schedule_with_the_same_webhook_id(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    receiver.respond = lambda _, n: 500 if n < 2 else 200
    pipeline = await start_pipeline(CLICKHOOK_RETRY_SCHEDULE="1s,2s")
    endpoint = await pipeline.create_endpoint(receiver.url())

    await pipeline.post_clicks(click("evt_e2e_retry"))
    arrivals = await receiver.wait_for(3, timeout_s=30)

    assert len({a.headers["webhook-id"] for a in arrivals}) == 1
    first, second, third = arrivals
    assert second.at_s - first.at_s >= 1.0
    assert third.at_s - second.at_s >= 2.0
    Webhook(endpoint["secret"]).verify(third.body, third.headers)


async def test_delivery_failing_every_tier_lands_in_the_dlq_with_its_history(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    receiver.respond = lambda _, __: 500
    pipeline = await start_pipeline(CLICKHOOK_RETRY_SCHEDULE="1s,2s")
    endpoint = await pipeline.create_endpoint(receiver.url())

    await pipeline.post_clicks(click("evt_e2e_dlq"))
    [record] = await read_records(pipeline.bootstrap, pipeline.topic("webhook.dlq"), 1, 30)

    letter = decode_dead_letter(record.value)
    assert letter.reason == "exhausted"
    assert record.key == endpoint["id"].encode()
    assert letter.envelope.event_id == "evt_e2e_dlq"
    assert [a.attempt for a in letter.envelope.attempts] == [1, 2, 3]
    assert [a.status for a in letter.envelope.attempts] == [500, 500, 500]
    assert all(a.at_ms > 0 and a.outcome == "http_5xx" for a in letter.envelope.attempts)
    assert len(receiver.received) == 3
    # The delivery log holds the body once: the first attempt's record; the retries name it.
    logged = await read_records(pipeline.bootstrap, pipeline.topic("webhook.attempts"), 3, 30)
    first, *retries = sorted((decode_attempt(r.value) for r in logged), key=lambda a: a.attempt)
    assert first.request_body == receiver.received[0].body.decode()
    assert [(a.request_body, a.request_body_of) for a in retries] == [(None, 1), (None, 1)]


async def test_malformed_record_is_set_aside_and_the_next_one_delivered(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    pipeline = await start_pipeline()
    await pipeline.create_endpoint(receiver.url())
    good = click("evt_after_bad")

    await produce(
        pipeline.bootstrap,
        pipeline.topic("clicks"),
        [b'{"type": "link.cli', orjson.dumps(good)],
        key=b"lnk_9",
    )
    [invalid] = await read_records(pipeline.bootstrap, pipeline.topic("clicks.invalid"), 1, 30)
    [arrival] = await receiver.wait_for(1, timeout_s=30)

    assert invalid.value == b'{"type": "link.cli'
    reason = dict(invalid.headers)[HEADER_REASON].decode()
    assert "malformed JSON" in reason
    assert orjson.loads(arrival.body)["data"] == good
