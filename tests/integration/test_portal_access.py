"""Portal access in process against the real broker: one-time links, the session cookie, CSRF,
headers, and one account never seeing another's endpoints."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from shared.kafka.service_base import service_base
from shared.ops.settings import Settings
from tests.integration.conftest import (
    ACCOUNT_A,
    ACCOUNT_B,
    ADMIN,
    PUBLISH,
    auth,
    serving,
)

pytestmark = pytest.mark.kafka

Client = TestClient[Any, Any]


async def portal_link(ingest: Client, token: str = ACCOUNT_A, **body: str) -> str:
    response = await ingest.post("/v1/portal/sessions", json=body or None, headers=auth(token))
    assert response.status == 201, await response.text()
    url: str = (await response.json())["url"]
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def open_portal(ingest: Client, token: str = ACCOUNT_A) -> None:
    response = await ingest.get(await portal_link(ingest, token), allow_redirects=False)
    assert response.status == 303
    assert response.headers["location"] == "/portal/"


async def create_endpoint(ingest: Client, token: str) -> str:
    response = await ingest.post(
        "/v1/endpoints", json={"url": "http://127.0.0.1:9/hook"}, headers=auth(token)
    )
    assert response.status == 201
    endpoint_id: str = (await response.json())["id"]
    return endpoint_id


async def test_a_link_opens_a_session_with_a_locked_down_cookie(ingest: Client) -> None:
    response = await ingest.get(await portal_link(ingest), allow_redirects=False)
    assert response.status == 303
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie  # plain HTTP; over HTTPS it is SameSite=None; Secure
    assert "Path=/portal/" in cookie
    assert "Max-Age=3600" in cookie


async def test_portal_pages_carry_a_strict_policy_and_are_never_cached(
    ingest: Client, settings: Settings
) -> None:
    await open_portal(ingest)
    response = await ingest.get("/portal/")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self'" in policy
    assert f"frame-ancestors {settings.portal_frame_ancestors}" in policy
    assert response.headers["cache-control"] == "no-store"


async def test_a_link_opens_once(ingest: Client) -> None:
    link = await portal_link(ingest)
    first = await ingest.get(link, allow_redirects=False)
    assert first.status == 303
    ingest.session.cookie_jar.clear()
    again = await ingest.get(link, allow_redirects=False)
    assert again.status == 401
    assert "set-cookie" not in again.headers


async def test_a_used_link_reopened_in_its_session_goes_to_the_portal(ingest: Client) -> None:
    link = await portal_link(ingest)
    await ingest.get(link, allow_redirects=False)
    again = await ingest.get(link, allow_redirects=False)
    assert again.status == 303
    assert again.headers["location"] == "/portal/"
    assert "set-cookie" not in again.headers  # the session it has goes on; nothing new


async def test_a_used_link_reopened_in_another_accounts_session_is_not_valid(
    ingest: Client,
) -> None:
    link = await portal_link(ingest, ACCOUNT_A)
    await ingest.get(link, allow_redirects=False)
    await open_portal(ingest, ACCOUNT_B)
    again = await ingest.get(link, allow_redirects=False)
    assert again.status == 401
    assert "Link not valid" in await again.text()


async def test_a_tampered_link_is_refused(ingest: Client) -> None:
    link = await portal_link(ingest)
    response = await ingest.get(link[:-3] + "AAA", allow_redirects=False)
    assert response.status == 401


@pytest.mark.parametrize("key", ["", "ab" * 16], ids=["no key", "16 bytes"])
async def test_without_a_usable_key_there_is_no_portal(settings: Settings, key: str) -> None:
    async with contextlib.AsyncExitStack() as stack:  # the app closes first, then the base
        base = await stack.enter_async_context(
            service_base(dataclasses.replace(settings, portal_key=key))
        )
        with capture_logs() as logs:
            ingest = await stack.enter_async_context(serving(base))
        link = await ingest.post("/v1/portal/sessions", headers=auth(ACCOUNT_A))
        await link.read()  # its body, read below once the client has closed
        anonymous = await ingest.post("/v1/portal/sessions")
        page = await ingest.get("/portal/")
        opened = await ingest.get("/portal/open?token=x")
        clicks_route = await ingest.get("/v1/endpoints", headers=auth(ACCOUNT_A))

    assert link.status == 503
    assert (await link.json())["error"]["code"] == "portal_disabled"
    assert anonymous.status == 401
    assert (page.status, opened.status) == (404, 404)
    assert clicks_route.status == 200  # the rest of ingest is there
    assert [line["event"] for line in logs].count("portal_disabled") == 1


@pytest.mark.parametrize("token", ["é", "ü.ü", "eyJr.é", "..", "%00"])
async def test_a_malformed_or_non_ascii_link_is_not_valid(ingest: Client, token: str) -> None:
    response = await ingest.get(f"/portal/open?token={quote(token)}", allow_redirects=False)
    assert response.status == 401
    assert "Link not valid" in await response.text()


@pytest.mark.parametrize("cookie", ["é", "ü.ü", "not-a-session", "e30.e30"])
async def test_a_malformed_or_non_ascii_cookie_is_no_session(ingest: Client, cookie: str) -> None:
    endpoint_id = await create_endpoint(ingest, ACCOUNT_A)
    header = {"cookie": f"clickhook_portal={quote(cookie) if not cookie.isascii() else cookie}"}
    raw = {"cookie": f"clickhook_portal={cookie}".encode().decode("latin-1")}
    for headers in (header, raw):
        page = await ingest.get("/portal/", headers=headers)
        write = await ingest.post(
            f"/portal/endpoints/{endpoint_id}/disable", data={"csrf": "é"}, headers=headers
        )
        assert page.status == 401
        assert "Session expired" in await page.text()
        assert write.status == 401


async def test_a_non_ascii_csrf_token_is_refused(ingest: Client) -> None:
    endpoint_id = await create_endpoint(ingest, ACCOUNT_A)
    await open_portal(ingest)
    response = await ingest.post(f"/portal/endpoints/{endpoint_id}/disable", data={"csrf": "é"})
    assert response.status == 403


async def test_without_a_session_the_portal_says_so(ingest: Client) -> None:
    response = await ingest.get("/portal/")
    assert response.status == 401
    assert "Session expired" in await response.text()


async def test_a_write_without_its_csrf_token_is_refused(ingest: Client) -> None:
    endpoint_id = await create_endpoint(ingest, ACCOUNT_A)
    await open_portal(ingest)
    response = await ingest.post(f"/portal/endpoints/{endpoint_id}/disable", data={})
    assert response.status == 403
    wrong = await ingest.post(f"/portal/endpoints/{endpoint_id}/disable", data={"csrf": "x"})
    assert wrong.status == 403
    endpoint = await ingest.get(f"/v1/endpoints/{endpoint_id}", headers=auth(ACCOUNT_A))
    assert (await endpoint.json())["enabled"] is True


async def test_another_accounts_endpoint_is_a_404_page(ingest: Client) -> None:
    foreign = await create_endpoint(ingest, ACCOUNT_B)
    await open_portal(ingest)
    for path in ("", "/edit", "/dead-letters", "/log", "/attempts/att_0_0"):
        response = await ingest.get(f"/portal/endpoints/{foreign}{path}")
        assert response.status == 404, path
    listing = await ingest.get("/portal/")
    assert foreign not in await listing.text()


async def test_admin_names_the_account_and_publish_tokens_get_no_link(ingest: Client) -> None:
    assert (await portal_link(ingest, ADMIN, account_id="acc_b")).startswith("/portal/open")
    response = await ingest.post("/v1/portal/sessions", headers=auth(ADMIN))
    assert response.status == 422
    response = await ingest.post("/v1/portal/sessions", headers=auth(PUBLISH))
    assert response.status == 403
    response = await ingest.post(
        "/v1/portal/sessions", json={"account_id": "acc_b"}, headers=auth(ACCOUNT_A)
    )
    assert response.status == 404


async def test_every_page_of_an_own_endpoint_renders(ingest: Client) -> None:
    endpoint_id = await create_endpoint(ingest, ACCOUNT_A)
    await open_portal(ingest)
    for path in ("", "/edit", "/dead-letters", "/dead-letters?part=1", "/log?status=5xx"):
        response = await ingest.get(f"/portal/endpoints/{endpoint_id}{path}")
        assert response.status == 200, (path, await response.text())
    response = await ingest.get("/portal/endpoints/new")
    assert response.status == 200
