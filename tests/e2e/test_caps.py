"""One tenant's caps never become everyone's load (issue 22).

An endpoint capped at 2 deliveries a second gets 20 clicks a second, beside a healthy endpoint
of another account, through the real services on the real broker, with a schedule scaled down
(``1s,2s``: a delivery may wait for its caps 3 s in all) and deferral tiers of 1-8 s. What the
customers see: the healthy endpoint gets every click; the capped one at most its cap (and one)
in any second; each of its deliveries is written to a tier a few times at most, not every
second; and what waited longer than the schedule is in the dead letters as ``endpoint_busy``,
so every click is either delivered or there.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from shared.model.messages import (
    DeadLetterReason,
    decode_attempt,
    decode_dead_letter,
    decode_envelope,
)
from shared.model.topics import Topics
from tests.e2e.conftest import ACCOUNT_ID, ADMIN_TOKEN, StartPipeline
from tests.support.clicks import make_click
from tests.support.receiver import Receiver
from tests.support.topics import read_records
from tests.support.windows import most_in_any_second

pytestmark = [pytest.mark.kafka, pytest.mark.e2e, pytest.mark.timeout(120)]

CAP_PER_S = 2
CLICKS_PER_S = 20
SECONDS = 3
CLICKS = CLICKS_PER_S * SECONDS
OTHER_ACCOUNT = "acc_capped"
ENV = {
    "CLICKHOOK_RETRY_SCHEDULE": "1s,2s",
    "CLICKHOOK_BREAKER_COOLDOWN": "1s",
    "CLICKHOOK_BREAKER_MAX_COOLDOWN": "8s",
}
# Doubling from 1 s to the longest tier (8 s) within the 3 s a delivery may wait: a few writes.
MOST_TIER_WRITES_PER_DELIVERY = 3
# Every capped click is delivered or dead well within this: 8 s in the longest tier, then dead.
SETTLE_S = 40.0


async def dead_until_every_click_is_done(
    bootstrap: str, dlq: str, receiver: Receiver
) -> dict[str, DeadLetterReason]:
    """The dead letters (webhook-id: reason), once each capped click is delivered or dead."""
    deadline = asyncio.get_running_loop().time() + SETTLE_S
    while True:
        letters = await read_records(bootstrap, dlq, CLICKS, timeout_s=1.0)
        dead = {
            letter.envelope.webhook_id: letter.reason
            for letter in (decode_dead_letter(r.value) for r in letters if r.value is not None)
        }
        delivered = {r.headers["webhook-id"] for r in receiver.on_path("/capped")}
        if len(delivered | dead.keys()) >= CLICKS or asyncio.get_running_loop().time() > deadline:
            return dead


async def test_a_capped_endpoint_over_its_cap_costs_only_its_own_share(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    pipeline = await start_pipeline(**ENV)
    await pipeline.create_endpoint(receiver.url("/healthy"))
    capped = await pipeline.create_endpoint(
        receiver.url("/capped"),
        token=ADMIN_TOKEN,
        account_id=OTHER_ACCOUNT,
        rate_limit_per_s=CAP_PER_S,
    )

    for second in range(SECONDS):
        clicks = [
            make_click(f"evt_{second}_{n}", account_id=account)
            for n in range(CLICKS_PER_S)
            for account in (ACCOUNT_ID, OTHER_ACCOUNT)
        ]
        await pipeline.produce_clicks(clicks)
        await asyncio.sleep(1.0)
    await receiver.wait_until(lambda: len(receiver.on_path("/healthy")) >= CLICKS, timeout_s=30)

    topics = Topics(pipeline.prefix)
    dead = await dead_until_every_click_is_done(pipeline.bootstrap, topics.dlq, receiver)
    delivered = {r.headers["webhook-id"] for r in receiver.on_path("/capped")}
    assert len(receiver.on_path("/healthy")) == CLICKS
    assert len(delivered | dead.keys()) == CLICKS, pipeline.logs()
    assert set(dead.values()) <= {"endpoint_busy"}
    assert most_in_any_second(r.at_s for r in receiver.on_path("/capped")) <= CAP_PER_S + 1

    tier_writes: Counter[str] = Counter()
    for delay_s in (1.0, 2.0, 4.0, 8.0):
        for record in await read_records(pipeline.bootstrap, topics.retry(delay_s), 10**6, 2.0):
            if record.value is not None:
                tier_writes[decode_envelope(record.value).webhook_id] += 1
    assert max(tier_writes.values()) <= MOST_TIER_WRITES_PER_DELIVERY, tier_writes.most_common(3)
    log = await read_records(pipeline.bootstrap, topics.attempts, 10**6, 2.0)
    capped_log = [
        attempt
        for attempt in (decode_attempt(r.value) for r in log if r.value is not None)
        if attempt.endpoint_id == capped["id"]
    ]
    assert len(capped_log) <= (MOST_TIER_WRITES_PER_DELIVERY + 1) * CLICKS
