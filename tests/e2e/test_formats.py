"""Payload formats and signature styles through the whole pipeline, and the docs' recipes.

Receivers are loopback servers shaped like the real services: a fake Slack that checks messages
as Slack does and answers like it, an IFTTT-shaped trigger, a Zapier-shaped catch hook, and the
database receiver of the docs' recipes (docs/guides/recipes.md), run from the page's own code
block.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from shared.model.messages import MASK, decode_attempt, decode_dead_letter
from shared.model.signing import generate_secret
from tests.e2e.conftest import ACCOUNT_ID, StartPipeline
from tests.support.clicks import make_click
from tests.support.receiver import Receiver
from tests.support.services import ROOT, free_port
from tests.support.slack import ARCHIVED_PATH, NO_SERVICE_PATH, FakeSlack
from tests.support.topics import read_records

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

QUIET_S = 1.0  # how long to wait for a delivery that must not come
RECIPES_PAGE = ROOT / "docs" / "guides" / "recipes.md"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture(name="slack")
async def fixture_slack() -> AsyncIterator[FakeSlack]:
    slack = FakeSlack()
    await slack.start()
    yield slack
    await slack.stop()


def hex_hmac(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def test_slack_recipe_posts_each_campaign_click_to_the_channel(
    start_pipeline: StartPipeline, slack: FakeSlack
) -> None:
    pipeline = await start_pipeline()
    endpoint = await pipeline.create_endpoint(
        slack.url(), format="slack", description="spring campaign", filters={"tags": ["spring"]}
    )
    other_campaign = make_click("evt_autumn", account_id=ACCOUNT_ID, tags=["autumn"])
    campaign = make_click("evt_spring", account_id=ACCOUNT_ID, tags=["spring"])
    campaign["link"]["key"] = "spring&<sale>"

    # One link, so one partition: the autumn click is handled before the spring one.
    await pipeline.post_clicks([other_campaign, campaign])
    await slack.wait_for(1, timeout_s=15)
    await asyncio.sleep(QUIET_S)

    [post] = slack.posts
    assert (post.status, post.answer, post.problems) == (200, "ok", [])
    message = Webhook(endpoint["secret"]).verify(post.body, post.headers)
    text = orjson.dumps(message).decode()
    assert "短.be/spring&amp;&lt;sale&gt;" in text
    assert "🇯🇵 JP" in text
    assert "evt_spring" in text


async def test_fake_slack_answers_an_invalid_message_like_slack(slack: FakeSlack) -> None:
    answers = []
    async with aiohttp.ClientSession() as session:
        for message in ({"text": "<!channel> & all"}, {}, {"text": "hello &amp; welcome"}):
            async with session.post(slack.url(), json=message) as response:
                answers.append((response.status, await response.text()))

    assert answers == [(400, "invalid_payload"), (400, "no_text"), (200, "ok")]


async def test_slack_archived_channel_disables_and_revoked_hook_is_retried(
    start_pipeline: StartPipeline, slack: FakeSlack
) -> None:
    pipeline = await start_pipeline(CLICKHOOK_RETRY_SCHEDULE="1s,1s")
    archived = await pipeline.create_endpoint(slack.url(ARCHIVED_PATH), format="slack")
    revoked = await pipeline.create_endpoint(slack.url(NO_SERVICE_PATH), format="slack")

    await pipeline.post_clicks(make_click("evt_slack_errors", account_id=ACCOUNT_ID))
    await slack.wait_for(3, timeout_s=15, path=NO_SERVICE_PATH)
    dead_letters = await read_records(pipeline.bootstrap, pipeline.topic("webhook.dlq"), 1, 15)
    [dead] = [r for r in dead_letters if r.key == archived["id"].encode()]
    shown = await pipeline.disabled_endpoint(archived["id"])

    letter = decode_dead_letter(dead.value)
    assert (letter.reason, letter.envelope.endpoint_id) == ("endpoint_gone", archived["id"])
    assert letter.envelope.attempts[0].response_body == "channel_is_archived"
    assert shown["enabled"] is False
    assert "410" in shown["disabled_reason"]
    assert len(slack.on_path(ARCHIVED_PATH)) == 1
    revoked_posts = slack.on_path(NO_SERVICE_PATH)
    assert [p.answer for p in revoked_posts] == ["no_service"] * 3
    assert len({p.headers["webhook-id"] for p in revoked_posts}) == 1
    assert (await pipeline.endpoint(revoked["id"]))["enabled"] is True


IFTTT_PATH = "/trigger/short_link_clicked/with/key/k3y"


def ifttt_answer(request: Any, _n: int) -> int:
    """IFTTT takes a JSON object of up to three string values; anything else is a 400."""
    try:
        values = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        return 400
    ok = isinstance(values, dict) and set(values) <= {"value1", "value2", "value3"}
    return 200 if ok and all(isinstance(v, str) for v in values.values()) else 400


async def test_ifttt_trigger_gets_three_values_signed_in_every_style(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    receiver.respond = ifttt_answer
    pipeline = await start_pipeline()
    endpoint = await pipeline.create_endpoint(
        receiver.url(IFTTT_PATH), format="ifttt", signature_styles=["github", "dub"]
    )

    await pipeline.post_clicks(make_click("evt_ifttt", account_id=ACCOUNT_ID))
    [arrival] = await receiver.wait_for(1, timeout_s=15)

    secret = endpoint["secret"]
    assert arrival.status == 200
    assert Webhook(secret).verify(arrival.body, arrival.headers) == {
        "value1": "短.be/abc",
        "value2": "https://example.com/x",
        "value3": "JP",
    }
    assert arrival.headers["X-Hub-Signature-256"] == "sha256=" + hex_hmac(secret, arrival.body)
    assert arrival.headers["Dub-Signature"] == hex_hmac(secret, arrival.body)


ZAPIER_PATH = "/hooks/catch/123456/abcdef/"


async def test_zapier_recipe_catch_hook_gets_the_standard_body(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    pipeline = await start_pipeline()
    endpoint = await pipeline.create_endpoint(receiver.url(ZAPIER_PATH))
    event = make_click("evt_zap", account_id=ACCOUNT_ID)

    await pipeline.post_clicks(event)
    [arrival] = await receiver.wait_for(1, timeout_s=15)

    assert endpoint["format"] == "standard"
    assert arrival.path == ZAPIER_PATH
    assert arrival.headers["Content-Type"] == "application/json"
    body = orjson.loads(arrival.body)
    assert body == {"type": "link.clicked", "timestamp": event["occurred_at"], "data": event}
    Webhook(endpoint["secret"]).verify(arrival.body, arrival.headers)


def recipe_receiver_code() -> str:
    """The code block of the "Feeding a database" recipe (docs/guides/recipes.md)."""
    page = RECIPES_PAGE.read_text()
    recipe = page[page.index("## Feeding a database") :]
    found = re.search(r"```python\n(.*?)```", recipe, re.DOTALL)
    assert found is not None, "the recipe lost its code block"
    return found.group(1)


@dataclass
class RecipeReceiver:
    url: str
    secret: str
    database: Path
    answers: list[tuple[str, int]] = field(default_factory=list)  # (webhook-id, status)
    answered: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_for(self, count: int, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s), self.answered:
            await self.answered.wait_for(lambda: len(self.answers) >= count)


@pytest.fixture(name="recipe_receiver")
async def fixture_recipe_receiver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RecipeReceiver]:
    """The recipe's receiver served on a loopback port, its answers recorded."""
    secret, database = generate_secret(), tmp_path / "clicks.db"
    monkeypatch.setenv("CLICKHOOK_SECRET", secret)
    monkeypatch.setenv("CLICKS_DB", str(database))
    namespace: dict[str, Any] = {"__name__": "clicks_receiver"}
    code = compile(recipe_receiver_code(), "docs/guides/recipes.md#feeding-a-database", "exec")
    exec(code, namespace)
    served = RecipeReceiver("", secret, database)

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        served.answers.append((request.headers.get("webhook-id", ""), response.status))
        async with served.answered:
            served.answered.notify_all()
        return response

    app: web.Application = namespace["app"]
    app.middlewares.append(record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    served.url = f"http://127.0.0.1:{port}/clicks"
    yield served
    await runner.cleanup()
    namespace["db"].close()


async def test_database_recipe_from_the_docs_stores_each_click_once(
    start_pipeline: StartPipeline, recipe_receiver: RecipeReceiver
) -> None:
    pipeline = await start_pipeline()
    await pipeline.create_endpoint(recipe_receiver.url, secret=recipe_receiver.secret)
    event = make_click("evt_db", account_id=ACCOUNT_ID)

    await pipeline.post_clicks(event)
    await pipeline.post_clicks(event)  # a publisher's retry: same id, so delivered twice
    await recipe_receiver.wait_for(2, timeout_s=15)

    [(first_id, first_status), (second_id, second_status)] = recipe_receiver.answers
    assert (first_status, second_status) == (204, 204)
    assert first_id == second_id
    [(webhook_id, link_id, country, occurred_at, stored)] = rows_in(recipe_receiver.database)
    assert (webhook_id, link_id, country) == (first_id, "lnk_9", "JP")
    assert occurred_at == event["occurred_at"]
    assert orjson.loads(stored) == event


def rows_in(database: Path) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(database)) as db:
        return db.execute("SELECT * FROM clicks").fetchall()


async def test_custom_headers_reach_the_receiver_signed_and_stay_masked_in_the_log(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    pipeline = await start_pipeline()
    endpoint = await pipeline.create_endpoint(
        receiver.url("/with-headers"),
        headers={"Authorization": "Bearer receiver-token", "X-Tenant": "t 42"},
        signature_styles=["github"],
    )

    await pipeline.post_clicks(make_click("evt_headers", account_id=ACCOUNT_ID))
    [arrival] = await receiver.wait_for(1, timeout_s=15)
    [logged] = await read_records(pipeline.bootstrap, pipeline.topic("webhook.attempts"), 1, 15)

    assert arrival.headers["Authorization"] == "Bearer receiver-token"
    assert arrival.headers["X-Tenant"] == "t 42"
    Webhook(endpoint["secret"]).verify(arrival.body, arrival.headers)
    assert arrival.headers["X-Hub-Signature-256"] == "sha256=" + hex_hmac(
        endpoint["secret"], arrival.body
    )
    request_headers = decode_attempt(logged.value).request_headers
    assert request_headers is not None
    assert request_headers["Authorization"] == MASK
    assert b"receiver-token" not in logged.value
