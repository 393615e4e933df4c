"""Backfill through the whole pipeline: ingest reads the window, the retry service delivers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from shared.model.signing import webhook_id
from tests.e2e.conftest import ACCOUNT_ID, ACCOUNT_TOKEN, Pipeline, StartPipeline
from tests.support.receiver import Receiver
from tests.support.timed_clicks import click_at, produce_at_click_time

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

QUIET_S = 1.5  # how long to wait for deliveries that must not come


def iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


async def backfill(pipeline: Pipeline, endpoint_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Start a backfill and wait for it to end; its final progress."""
    url = f"{pipeline.ingest_url}/v1/endpoints/{endpoint_id}/backfill"
    headers = {"authorization": f"Bearer {ACCOUNT_TOKEN}"}
    async with pipeline.session.post(url, json=body, headers=headers) as response:
        assert response.status == 202, await response.text()
    async with asyncio.timeout(20):
        while True:
            async with pipeline.session.get(url, headers=headers) as response:
                progress: dict[str, Any] = await response.json()
            if progress["state"] != "running":
                return progress
            await asyncio.sleep(0.2)


async def test_backfill_delivers_the_windows_matching_clicks_to_that_endpoint_only(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    pipeline = await start_pipeline()
    await pipeline.create_endpoint(receiver.url("/live"))
    now = datetime.now(UTC)
    since, until = now - timedelta(hours=3), now - timedelta(hours=1)
    inside = now - timedelta(hours=2)
    clicks = [  # in the order they happened; one link, so one partition
        click_at("evt_before", since - timedelta(minutes=1), account_id=ACCOUNT_ID),
        click_at("evt_in_1", inside, account_id=ACCOUNT_ID),
        click_at("evt_in_autumn", inside, account_id=ACCOUNT_ID, tags=["autumn"]),
        click_at("evt_in_2", inside + timedelta(minutes=20), account_id=ACCOUNT_ID),
        click_at("evt_after", until, account_id=ACCOUNT_ID),
    ]
    await produce_at_click_time(pipeline.bootstrap, pipeline.topic("clicks"), clicks)
    await receiver.wait_for(len(clicks), timeout_s=15)  # delivered live to the one endpoint
    late = await pipeline.create_endpoint(receiver.url("/late"), filters={"tags": ["spring"]})
    await pipeline.create_endpoint(receiver.url("/bystander"))

    progress = await backfill(pipeline, late["id"], {"since": iso(since), "until": iso(until)})
    await receiver.wait_until(lambda: len(receiver.on_path("/late")) >= 2, timeout_s=15)
    await asyncio.sleep(QUIET_S)

    assert (progress["state"], progress["matched"], progress["scheduled"]) == ("completed", 2, 2)
    backfilled = receiver.on_path("/late")
    events = [Webhook(late["secret"]).verify(r.body, r.headers)["data"] for r in backfilled]
    assert sorted(e["id"] for e in events) == ["evt_in_1", "evt_in_2"]
    assert {r.headers["webhook-id"] for r in backfilled} == {
        webhook_id("evt_in_1", late["id"]),
        webhook_id("evt_in_2", late["id"]),
    }
    assert len(receiver.on_path("/live")) == len(clicks)  # nothing more for the live endpoint
    assert receiver.on_path("/bystander") == []
