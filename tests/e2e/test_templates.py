"""Payload templates through the whole pipeline: the real dispatcher renders, signs and sends to
a loopback receiver; a click the template fails on is a failed attempt in the delivery log."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from shared.model.messages import decode_attempt
from tests.e2e.conftest import ACCOUNT_ID, Pipeline, StartPipeline
from tests.support.clicks import make_click
from tests.support.receiver import Receiver
from tests.support.topics import read_records

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

RECIPES = Path(__file__).parents[1] / "unit" / "golden" / "templates"
TELEGRAM_PATH = "/bot123456:ABC/sendMessage"


async def attempts_of(pipeline: Pipeline, event_id: str) -> list[str | None]:
    records = await read_records(pipeline.bootstrap, pipeline.topic("webhook.attempts"), 2, 15)
    attempts = [decode_attempt(r.value) for r in records]
    return [a.error for a in attempts if a.event_id == event_id]


async def test_telegram_recipe_is_rendered_signed_and_sent_and_a_failing_click_is_logged(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    pipeline = await start_pipeline()
    # The recipe, plus a field that only some clicks carry, to fail the render on one of them.
    template = (RECIPES / "telegram.liquid").read_text().rstrip()[:-1] + (
        ', "note": {{ note | json }}}'
    )
    endpoint = await pipeline.create_endpoint(
        receiver.url(TELEGRAM_PATH), format="template", template=template
    )
    failing = make_click("evt_template_fails", account_id=ACCOUNT_ID)
    failing["note"] = "x" * 70_000  # past the 64 Ki characters a filter takes
    click = make_click("evt_template", account_id=ACCOUNT_ID)

    await pipeline.post_clicks([failing, click])
    [arrival] = await receiver.wait_for(1, timeout_s=15)

    assert arrival.path == TELEGRAM_PATH
    assert arrival.headers["Content-Type"] == "application/json"
    message = Webhook(endpoint["secret"]).verify(arrival.body, arrival.headers)
    assert message == orjson.loads(arrival.body)
    assert message["chat_id"] == "-1001234567890"
    assert message["text"] == "Click on 短.be/abc from JP\n→ https://example.com/x"
    assert message["note"] is None
    errors = await attempts_of(pipeline, "evt_template_fails")
    assert errors  # retried on the schedule: a fixed template would deliver it
    assert all((e or "").startswith("TemplateError: line 5: value limit") for e in errors)
