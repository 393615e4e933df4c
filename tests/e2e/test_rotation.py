"""Secret rotation: both secrets sign during the grace period, only the new one after."""

from __future__ import annotations

import asyncio

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.e2e.conftest import ACCOUNT_ID, ACCOUNT_TOKEN, StartPipeline
from tests.support.clicks import make_click
from tests.support.receiver import Receiver

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

GRACE_S = 3.0


async def test_rotated_secret_keeps_signing_for_the_grace_period_only(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    pipeline = await start_pipeline(CLICKHOOK_SECRET_ROTATION_GRACE=f"{GRACE_S:g}s")
    endpoint = await pipeline.create_endpoint(receiver.url())
    async with pipeline.session.post(
        f"{pipeline.ingest_url}/v1/endpoints/{endpoint['id']}/rotate-secret",
        headers={"authorization": f"Bearer {ACCOUNT_TOKEN}"},
    ) as response:
        rotated = await response.json()
    old, new = Webhook(endpoint["secret"]), Webhook(rotated["secret"])

    await pipeline.post_clicks(make_click("evt_rot_during", account_id=ACCOUNT_ID))
    [during] = await receiver.wait_for(1, timeout_s=10)
    await asyncio.sleep(GRACE_S + 0.5)
    await pipeline.post_clicks(make_click("evt_rot_after", account_id=ACCOUNT_ID))
    _, after = await receiver.wait_for(2, timeout_s=10)

    assert rotated["secret"] != endpoint["secret"]
    assert len(during.headers["webhook-signature"].split()) == 2
    assert old.verify(during.body, during.headers)["data"]["id"] == "evt_rot_during"
    assert new.verify(during.body, during.headers)["data"]["id"] == "evt_rot_during"
    assert new.verify(after.body, after.headers)["data"]["id"] == "evt_rot_after"
    with pytest.raises(WebhookVerificationError):
        old.verify(after.body, after.headers)
