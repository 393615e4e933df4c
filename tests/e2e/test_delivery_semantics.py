"""Every delivery gets the attempts its schedule promises, under sustained failure.

The scenarios a new user tried against an earlier build, where the breaker used up the
schedule (issue 15): 300 clicks to an endpoint that always answers 500, one that answers 500
twice per delivery, one that fails the first attempt of each, and a replay after the receiver
was fixed. Default breaker settings (10 in a row, 60 s cool-down) throughout.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from shared.model.messages import DeadLetter, decode_dead_letter
from tests.e2e.conftest import ACCOUNT_ID, Pipeline, StartPipeline
from tests.support.clicks import make_click
from tests.support.receiver import Received, Receiver, Responder
from tests.support.topics import read_records

pytestmark = [pytest.mark.kafka, pytest.mark.e2e, pytest.mark.timeout(240)]

CLICKS = 300
SETTLE_S = 60.0


def failing_first(failures: int, status: int = 500) -> Responder:
    """Answers ``status`` to the first ``failures`` attempts of each webhook-id, then 200."""
    seen: Counter[str] = Counter()

    def respond(request: Received, _: int) -> int:
        webhook_id = request.headers["webhook-id"]
        seen[webhook_id] += 1
        return status if seen[webhook_id] <= failures else 200

    return respond


def attempts_per_webhook(receiver: Receiver) -> Counter[str]:
    return Counter(r.headers["webhook-id"] for r in receiver.received)


async def publish(pipeline: Pipeline, prefix: str, count: int = CLICKS) -> None:
    events = [make_click(f"evt_{prefix}_{n}", account_id=ACCOUNT_ID) for n in range(count)]
    for start in range(0, count, 100):
        await pipeline.post_clicks(events[start : start + 100])


async def dead_letters(pipeline: Pipeline, count: int) -> list[DeadLetter]:
    records = await read_records(pipeline.bootstrap, pipeline.topic("webhook.dlq"), count, 60)
    return [decode_dead_letter(r.value) for r in records]


async def settle(receiver: Receiver, done: Callable[[], bool]) -> None:
    await receiver.wait_until(done, timeout_s=SETTLE_S)
    await asyncio.sleep(3.0)  # anything more that would come (an extra attempt) comes by now


async def test_each_click_to_an_endpoint_that_always_answers_500_is_tried_three_times(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    receiver.respond = lambda _, __: 500
    pipeline = await start_pipeline(CLICKHOOK_RETRY_SCHEDULE="1s,2s")
    await pipeline.create_endpoint(receiver.url())

    await publish(pipeline, "always500")
    letters = await dead_letters(pipeline, CLICKS)
    await settle(receiver, lambda: len(receiver.received) >= 3 * CLICKS)

    assert sorted(attempts_per_webhook(receiver).values()) == [3] * CLICKS
    assert {letter.reason for letter in letters} == {"exhausted"}
    assert sorted(len(letter.envelope.attempts) for letter in letters) == [3] * CLICKS


async def test_each_click_failing_twice_is_delivered_on_its_third_attempt(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    receiver.respond = failing_first(2)
    pipeline = await start_pipeline(CLICKHOOK_RETRY_SCHEDULE="1s,2s")
    await pipeline.create_endpoint(receiver.url())

    await publish(pipeline, "third")
    await settle(receiver, lambda: sum(r.status == 200 for r in receiver.received) >= CLICKS)

    delivered = Counter(r.headers["webhook-id"] for r in receiver.received if r.status == 200)
    assert len(delivered) == CLICKS
    assert sorted(attempts_per_webhook(receiver).values()) == [3] * CLICKS
    dlq = await read_records(pipeline.bootstrap, pipeline.topic("webhook.dlq"), 1, 2)
    assert dlq == []


async def test_every_click_failing_its_first_attempt_is_redelivered(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    receiver.respond = failing_first(1)
    pipeline = await start_pipeline(CLICKHOOK_RETRY_SCHEDULE="4s,4s")
    await pipeline.create_endpoint(receiver.url())

    await publish(pipeline, "second", count=100)
    await settle(receiver, lambda: sum(r.status == 200 for r in receiver.received) >= 100)

    delivered = {r.headers["webhook-id"] for r in receiver.received if r.status == 200}
    assert len(delivered) == 100
    assert sorted(attempts_per_webhook(receiver).values()) == [2] * 100


async def test_a_replay_after_a_fix_delivers_every_letter_while_the_breaker_is_open(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    """The letters die on 500s; then the receiver goes down (503) long enough to open the
    breaker in both services; it is fixed, and a replay must not wait for the cool-down."""
    status = 500
    receiver.respond = lambda _, __: status
    pipeline = await start_pipeline(CLICKHOOK_RETRY_SCHEDULE="1s,2s")
    endpoint = await pipeline.create_endpoint(receiver.url())
    since = datetime.now(UTC) - timedelta(seconds=1)
    await publish(pipeline, "fixed")
    letters = await dead_letters(pipeline, CLICKS)

    status = 503  # down: with 20 more clicks the dispatcher's breaker opens (10 in a row)
    await publish(pipeline, "down", count=20)
    await receiver.wait_until(lambda: sum(r.status == 503 for r in receiver.received) >= 10, 20)
    status = 200
    fixed_at = datetime.now(UTC)
    job = await pipeline.replay(endpoint["id"], since)
    replayed = {letter.envelope.webhook_id for letter in letters}
    await receiver.wait_until(lambda: replayed <= delivered_since(receiver, fixed_at), timeout_s=20)

    assert job["state"] == "completed"
    assert job["replayed"] == CLICKS
    assert len(replayed) == CLICKS
    deferred = await scrape(pipeline, "clickhook_deliveries_deferred_total", "breaker_open")
    assert deferred > 0, "the breaker never opened: the scenario did not happen"


def delivered_since(receiver: Receiver, since: datetime) -> set[str]:
    return {
        r.headers["webhook-id"]
        for r in receiver.received
        if r.status == 200 and r.at_s >= since.timestamp()
    }


async def scrape(pipeline: Pipeline, name: str, reason: str) -> float:
    total = 0.0
    for service in ("dispatcher", "retry"):
        port = pipeline.services[service].port
        async with pipeline.session.get(f"http://127.0.0.1:{port}/metrics") as response:
            for line in (await response.text()).splitlines():
                if line.startswith(name + "{") and f'reason="{reason}"' in line:
                    total += float(line.rsplit(" ", 1)[1])
    return total


async def test_patching_the_url_of_a_down_endpoint_gives_it_a_fresh_chance(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    """An endpoint on a port where nothing listens (connection refused) opens the breaker;
    once its URL is fixed, a new click goes out at once, not after the cool-down, and the
    deliveries that waited arrive without having used their attempts."""
    pipeline = await start_pipeline(
        CLICKHOOK_RETRY_SCHEDULE="1s,4s,8s,16s",
        CLICKHOOK_BREAKER_COOLDOWN="20s",
        CLICKHOOK_BREAKER_MAX_COOLDOWN="20s",
    )
    dead = Receiver()
    await dead.start()
    dead_url = dead.url()
    await dead.stop()  # nothing listens there any more
    endpoint = await pipeline.create_endpoint(dead_url)
    await publish(pipeline, "refused", count=30)
    await asyncio.sleep(2.0)  # ten refused connections in a row have opened the breaker

    await pipeline.patch_endpoint(endpoint["id"], url=receiver.url())
    await asyncio.sleep(0.5)  # every service has seen the change
    fixed_at = datetime.now(UTC)
    await publish(pipeline, "after_fix", count=10)
    # Well inside the 20 s cool-down: only a reset breaker lets them through this soon.
    await receiver.wait_until(lambda: len(delivered_since(receiver, fixed_at)) >= 10, 10)
    deferred = await scrape(pipeline, "clickhook_deliveries_deferred_total", "breaker_open")
    await receiver.wait_until(lambda: len(delivered_since(receiver, fixed_at)) >= 40, 60)

    assert deferred > 0, "the breaker never opened: the scenario did not happen"
    assert len(delivered_since(receiver, fixed_at)) == 40
