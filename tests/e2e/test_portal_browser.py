"""The customer portal in a real browser (Debian's headless Chromium) against the whole pipeline:
a customer's story from the link to a replayed dead letter, and the refusals.

The story saves the pictures the docs show (``PICTURES``) every time it passes, so that they
always show the portal as it is: ``portal.png`` (the endpoint list, one receiver failing),
``portal-endpoint.png`` (that endpoint's page: health, last error, delivery log with the retries
and the dead letter) and ``portal-preview.png`` (the edit form's template preview).
``CLICKHOOK_PORTAL_PICTURES=<dir>`` puts them elsewhere; ``make screenshot`` runs just this story.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import pytest

from services.ingest.portal.sessions import LINK_TTL_S, PortalSigner, portal_key
from shared.ops.settings import load_settings
from tests.e2e.conftest import ACCOUNT_ID, ACCOUNT_TOKEN, ADMIN_TOKEN, Pipeline, StartPipeline
from tests.support.browser import Browser, start_chromium
from tests.support.receiver import Received, Receiver
from tests.support.services import launch, service_env

pytestmark = [pytest.mark.kafka, pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(150)]

FAILING_PATH = "/broken"
PICTURES = Path(os.environ.get("CLICKHOOK_PORTAL_PICTURES") or Path(__file__).parents[2] / "docs")
SAMPLE_TEMPLATE = (
    '{"text": {{ "Click on " | append: link.url | json }}, "country": {{ click.country | json }}}'
)


@pytest.fixture(name="browser")
async def fixture_browser(tmp_path: Path) -> AsyncIterator[Browser]:
    browser = Browser(start_chromium(tmp_path / "chromium-profile"))
    try:
        yield browser
    finally:
        await browser.close()


async def portal_link(pipeline: Pipeline, token: str = ACCOUNT_TOKEN, **body: str) -> str:
    async with pipeline.session.post(
        f"{pipeline.ingest_url}/v1/portal/sessions",
        json=body or None,
        headers={"authorization": f"Bearer {token}"},
    ) as response:
        assert response.status == 201, await response.text()
        url: str = (await response.json())["url"]
        return url


def answer_by_path(request: Received, _: int) -> int:
    return 500 if request.path == FAILING_PATH else 200


async def show_a_template_preview(browser: Browser) -> None:
    """On the edit page: the format switched to "template" and a template typed, as a customer
    would (the form is not saved)."""
    await browser.run_script(
        "const form = document.getElementById('format').form;"
        "form.elements.format.value = 'template';"
        f"form.elements.template.value = {json.dumps(SAMPLE_TEMPLATE)};"
        "form.elements.format.dispatchEvent(new Event('change'));"
        # The template and the body it makes, both in the picture.
        "form.elements.format.scrollIntoView({block: 'start'});"
    )
    await browser.wait_for_text("#preview", "Click on https://")


def publish(pictures: Path) -> None:
    """Into the docs, only once the whole story passed: never a picture of a broken portal."""
    PICTURES.mkdir(parents=True, exist_ok=True)
    for picture in sorted(pictures.glob("*.png")):
        shutil.copyfile(picture, PICTURES / picture.name)


async def test_a_customer_sees_fixes_and_replays_their_deliveries(
    start_pipeline: StartPipeline, browser: Browser, receiver: Receiver, tmp_path: Path
) -> None:
    pictures = tmp_path / "pictures"
    receiver.respond = answer_by_path
    pipeline = await start_pipeline(
        CLICKHOOK_RETRY_SCHEDULE="1s,1s", CLICKHOOK_LOG_FORMAT="console"
    )

    # The shortener's backend asks for a link; the customer's browser opens it.
    await browser.open(await portal_link(pipeline))
    assert await browser.path() == "/portal/"
    assert "No endpoints yet" in await browser.text("main")

    # A new endpoint, pointing at the customer's (loopback) receiver.
    await browser.press("Add endpoint")
    await browser.fill("url", receiver.url("/clicks"))
    await browser.fill("description", "orders service")
    await browser.fill("tags", "spring, launch")
    await browser.press("Add endpoint")
    assert "Endpoint created" in await browser.text(".notice")
    endpoint_path = (await browser.path()).split("?")[0]
    endpoint_id = endpoint_path.split("/")[3]

    # A test event: its attempt shows up in the log (live refresh), delivered.
    await browser.press("Send test event")
    await browser.wait_for_text("#log-rows", "delivered")
    (delivered,) = receiver.on_path("/clicks")
    assert b'"test":true' in delivered.body

    # The receiver breaks: the failures appear, each with when the next try is due, and the
    # delivery ends as a dead letter after the schedule.
    await browser.press("Edit")
    await browser.fill("url", receiver.url(FAILING_PATH))
    await browser.press("Save")
    await browser.press("Send test event")
    rows = await browser.wait_for_text("#log-rows", "next try")
    assert "500" in rows
    rows = await browser.wait_for_text("#log-rows", "dead: exhausted")
    assert "500" in rows
    await browser.open(f"{pipeline.ingest_url}{endpoint_path}")
    assert "1\nnot replayed" in await browser.text(".stats")
    await browser.screenshot(pictures / "portal-endpoint.png")
    await browser.open(f"{pipeline.ingest_url}/portal/")
    assert "500" in await browser.text("table.list")
    await browser.screenshot(pictures / "portal.png")

    # The customer tries a payload template: the preview shows the body as they type.
    await browser.open(f"{pipeline.ingest_url}{endpoint_path}/edit")
    await show_a_template_preview(browser)
    await browser.screenshot(pictures / "portal-preview.png")

    # The customer fixes the URL and replays: the dead letter is delivered, same webhook-id.
    await browser.open(f"{pipeline.ingest_url}{endpoint_path}")  # the template left unsaved
    await browser.press("Edit")
    await browser.fill("url", receiver.url("/clicks"))
    await browser.press("Save")
    await browser.open(f"{pipeline.ingest_url}/portal/endpoints/{endpoint_id}/dead-letters")
    assert "Never replayed" in await browser.text("#replay-progress")
    await browser.press("Replay dead letters")
    await browser.wait_for_text("#replay-progress", "completed")
    await browser.wait_for_text("td.delivery", "delivered")
    failed = receiver.on_path(FAILING_PATH)
    replayed = receiver.on_path("/clicks")[-1]
    assert replayed.headers["webhook-id"] == failed[0].headers["webhook-id"]
    assert len(failed) == 3  # the first attempt and two retries, then dead

    # Delivering again, the endpoint has recovered: its last error says since when.
    await browser.open(f"{pipeline.ingest_url}{endpoint_path}")
    assert "recovered since" in await browser.text(".last-error.recovered")
    publish(pictures)


async def test_expired_replayed_and_foreign_links_and_forged_writes_are_refused(
    kafka_bootstrap: str, prefix: str, tmp_path: Path, browser: Browser
) -> None:
    tokens = f"{ACCOUNT_TOKEN}:account:{ACCOUNT_ID},{ADMIN_TOKEN}:admin"
    env = service_env(kafka_bootstrap, prefix, CLICKHOOK_API_KEYS=tokens)
    ingest = (await launch(("ingest",), env, tmp_path))["ingest"]
    pipeline = Pipeline(kafka_bootstrap, prefix, {"ingest": ingest}, aiohttp.ClientSession())
    try:
        # Expired: a link signed with the deployment's key five minutes and a second ago.
        signer = PortalSigner(portal_key(load_settings(env)))
        token, _ = signer.link_token(ACCOUNT_ID, now_s=time.time() - LINK_TTL_S - 1)
        await browser.open(f"{pipeline.ingest_url}/portal/open?{urlencode({'token': token})}")
        assert "Link not valid" in await browser.text("h1")

        # Replayed: a link opens once. Reopened in its own session (a reload of the iframe) it
        # goes to the portal; in another account's session, or in none, it is not valid.
        link = await portal_link(pipeline)
        await browser.open(link)
        assert await browser.path() == "/portal/"
        await browser.open(link)
        assert await browser.path() == "/portal/"
        await browser.open(await portal_link(pipeline, ADMIN_TOKEN, account_id="acc_other"))
        await browser.open(link)
        assert "Link not valid" in await browser.text("h1")
        await browser.forget_cookies()
        await browser.open(link)
        assert "Link not valid" in await browser.text("h1")
        await browser.open(await portal_link(pipeline))

        # Another account's endpoint, asked for by id: the page says it does not exist.
        foreign = await pipeline.create_endpoint("http://127.0.0.1:9/x", ADMIN_TOKEN,
                                                 account_id="acc_other")  # fmt: skip
        await browser.open(f"{pipeline.ingest_url}/portal/endpoints/{foreign['id']}")
        assert "Not found" in await browser.text("h1")

        # A write without its CSRF token: the form loses its token before it is sent.
        mine = await pipeline.create_endpoint("http://127.0.0.1:9/y")
        await browser.open(f"{pipeline.ingest_url}/portal/endpoints/{mine['id']}")
        await browser.run_script(
            "for (const f of document.querySelectorAll('input[name=csrf]')) f.remove();"
        )
        await browser.press("Disable")
        assert "Request refused" in await browser.text("h1")
        async with pipeline.session.get(
            f"{pipeline.ingest_url}/v1/endpoints/{mine['id']}",
            headers={"authorization": f"Bearer {ACCOUNT_TOKEN}"},
        ) as response:
            assert (await response.json())["enabled"] is True
    finally:
        await pipeline.session.close()
        ingest.terminate()
