"""Operational webhooks against the real broker and a real receiver: the operator hears, signed,
of a dead letter, an endpoint disabled for failing (CLICKHOOK_DISABLE_AFTER, as the API then
shows it), enabled again, and one that recovered."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from shared.model.operational import OPERATIONAL_ACCOUNT_ID
from tests.e2e.conftest import ACCOUNT_ID, ADMIN_TOKEN, Pipeline, StartPipeline
from tests.support.clicks import make_click
from tests.support.receiver import Received, Receiver

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

OPERATIONAL_SECRET = "whsec_" + base64.b64encode(b"operational-webhooks-test-key-32b").decode()
OPERATIONAL_PATH = "/operator"
ARRIVAL_TIMEOUT_S = 20.0


def operational_events(receiver: Receiver) -> dict[str, dict[str, Any]]:
    """The operator's events by type, each checked against its signature first."""
    found: dict[str, dict[str, Any]] = {}
    for arrival in receiver.on_path(OPERATIONAL_PATH):
        Webhook(OPERATIONAL_SECRET).verify(arrival.body, arrival.headers)
        body = orjson.loads(arrival.body)
        found[body["type"]] = body
    return found


async def wait_for_event(receiver: Receiver, event_type: str) -> dict[str, Any]:
    await receiver.wait_until(
        lambda: event_type in operational_events(receiver), timeout_s=ARRIVAL_TIMEOUT_S
    )
    return operational_events(receiver)[event_type]


def failing_once(seen: set[str]) -> Any:
    """/broken always fails, /flaky fails each delivery's first attempt, the rest succeed."""

    def respond(request: Received, _n: int) -> int:
        if request.path == "/broken":
            return 500
        if request.path == "/flaky" and request.headers["webhook-id"] not in seen:
            seen.add(request.headers["webhook-id"])
            return 500
        return 200

    return respond


async def logged_outcome(pipeline: Pipeline, event_id: str) -> str | None:
    """The operational delivery's outcome in the delivery log, under the reserved account
    (None: not logged within the timeout)."""
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    while time.monotonic() < deadline:
        async with pipeline.session.get(
            f"{pipeline.ingest_url}/v1/events/{event_id}/attempts",
            params={"account_id": OPERATIONAL_ACCOUNT_ID},
            headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as response:
            attempts = (await response.json())["data"]
        if attempts:
            outcome: str = attempts[0]["outcome"]
            return outcome
        await asyncio.sleep(0.2)
    return None


async def test_the_operator_hears_of_dead_letters_disables_enables_and_recoveries(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    receiver.respond = failing_once(set())
    # One retry a second after the first attempt; failing for half a second disables: the
    # retry's failure dead-letters the click, then disables its endpoint.
    pipeline = await start_pipeline(
        CLICKHOOK_RETRY_SCHEDULE="1s",
        CLICKHOOK_DISABLE_AFTER="500ms",
        CLICKHOOK_OPERATIONAL_WEBHOOK_URL=receiver.url(OPERATIONAL_PATH),
        CLICKHOOK_OPERATIONAL_WEBHOOK_SECRET=OPERATIONAL_SECRET,
    )
    broken = await pipeline.create_endpoint(
        receiver.url("/broken"), filters={"link_ids": ["lnk_broken"]}, metadata={"crm": "c-1"}
    )
    flaky = await pipeline.create_endpoint(
        receiver.url("/flaky"), filters={"link_ids": ["lnk_flaky"]}
    )
    await pipeline.post_clicks(
        [
            make_click("evt_op_broken", account_id=ACCOUNT_ID, link_id="lnk_broken"),
            make_click("evt_op_flaky", account_id=ACCOUNT_ID, link_id="lnk_flaky"),
        ]
    )

    exhausted = await wait_for_event(receiver, "delivery.exhausted")
    disabled = await wait_for_event(receiver, "endpoint.disabled")
    recovered = await wait_for_event(receiver, "endpoint.recovered")
    shown_disabled = await pipeline.disabled_endpoint(broken["id"])
    await pipeline.patch_endpoint(broken["id"], enabled=True)
    enabled = await wait_for_event(receiver, "endpoint.enabled")
    await pipeline.patch_endpoint(flaky["id"], enabled=False)
    await receiver.wait_until(
        lambda: (
            operational_events(receiver)["endpoint.disabled"]["data"]["endpoint_id"] == flaky["id"]
        ),
        timeout_s=ARRIVAL_TIMEOUT_S,
    )
    disabled_by_hand = operational_events(receiver)["endpoint.disabled"]

    assert exhausted["data"]["endpoint_id"] == broken["id"]
    assert exhausted["data"]["event_id"] == "evt_op_broken"
    assert exhausted["data"]["reason"] == "exhausted"
    assert exhausted["data"]["last_attempt"]["status"] == 500
    assert exhausted["data"]["event"]["link"]["id"] == "lnk_broken"
    assert disabled["data"]["endpoint_id"] == broken["id"]
    assert disabled["data"]["trigger"] == "automatic"
    assert "CLICKHOOK_DISABLE_AFTER" in disabled["data"]["reason"]
    assert shown_disabled["enabled"] is False
    assert shown_disabled["disabled_reason"] == disabled["data"]["reason"]
    assert disabled["data"]["metadata"] == {"crm": "c-1"}
    assert enabled["data"]["endpoint_id"] == broken["id"]
    assert recovered["data"]["endpoint_id"] == flaky["id"]
    assert recovered["data"]["failing_since"] is not None
    assert disabled_by_hand["data"]["trigger"] == "manual"
    # Each fact once; the operator's receiver took each at the first attempt.
    operator = receiver.on_path(OPERATIONAL_PATH)
    assert len(operator) == 5, [orjson.loads(a.body)["type"] for a in operator]
    assert await logged_outcome(pipeline, exhausted["data"]["id"]) == "success"
