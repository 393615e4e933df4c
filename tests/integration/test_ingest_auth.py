"""Authentication and scopes of the ingest API beyond test_ingest_api.py: every route answers a
known token without the scope with 403, every endpoint route refuses a publish token, replay
and creation refuse another account, and a token that is not UTF-8 is a 401. Header parsing and
the timing-safe comparison: tests/unit/test_auth.py."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from shared.kafka.service_base import ServiceBase
from tests.integration.conftest import ACCOUNT_A, ACCOUNT_B, PUBLISH, auth

pytestmark = pytest.mark.kafka

Client = TestClient[Any, Any]

REPLAY_BODY = {"since": "2026-01-01T00:00:00Z"}


@pytest.fixture(name="endpoint_id")
async def fixture_endpoint_id(ingest: Client) -> str:
    """An endpoint of account A."""
    response = await ingest.post(
        "/v1/endpoints", json={"url": "https://hooks.example.com/a"}, headers=auth(ACCOUNT_A)
    )
    created: dict[str, Any] = await response.json()
    assert response.status == 201, created
    endpoint_id: str = created["id"]
    return endpoint_id


# Every endpoint-management route but GET /v1/endpoints (test_ingest_api.py has it); "{id}" is
# replaced by account A's endpoint.
ENDPOINT_ROUTES = [
    ("POST", "/v1/endpoints", {"url": "https://hooks.example.com/p"}),
    ("GET", "/v1/endpoints/{id}", None),
    ("PATCH", "/v1/endpoints/{id}", {"enabled": False}),
    ("DELETE", "/v1/endpoints/{id}", None),
    ("POST", "/v1/endpoints/{id}/rotate-secret", None),
    ("POST", "/v1/endpoints/{id}/replay", REPLAY_BODY),
]


@pytest.mark.parametrize(
    ("method", "path", "body"), ENDPOINT_ROUTES, ids=[f"{m} {p}" for m, p, _ in ENDPOINT_ROUTES]
)
async def test_publish_token_on_an_endpoint_route_is_a_403(
    ingest: Client, endpoint_id: str, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = await ingest.request(
        method, path.format(id=endpoint_id), json=body, headers=auth(PUBLISH)
    )

    assert response.status == 403
    assert (await response.json())["error"]["code"] == "insufficient_scope"


def routes_of(ingest: Client) -> list[tuple[str, str]]:
    """(method, path template) of every route the app serves."""
    found: list[tuple[str, str]] = []
    for resource in ingest.app.router.resources():
        info = resource.get_info()
        template = info.get("path") or info.get("formatter")
        if template:
            found.extend(
                (route.method, str(template))
                for route in resource
                if route.method not in ("HEAD", "OPTIONS", "*")
            )
    return found


async def error_code(response: Any) -> str | None:
    if response.content_type != "application/json":
        return None
    body = await response.json()
    code: str | None = body.get("error", {}).get("code") if isinstance(body, dict) else None
    return code


async def test_a_known_token_without_the_scope_is_a_403_on_every_route(
    ingest: Client, endpoint_id: str
) -> None:
    """RFC 6750: 401 for a missing or unknown token, 403 ``insufficient_scope`` for a known one
    whose scope does not allow the route. Every route the app serves, those added later too:
    each that refuses an anonymous request refuses the publish or the account token for scope."""
    wrong: list[str] = []
    for method, template in routes_of(ingest):
        path = re.sub(r"\{[^}]+\}", "x_unknown", template.replace("{endpoint_id}", endpoint_id))
        anonymous = await ingest.request(method, path)
        if anonymous.status != 401:
            continue  # a route without a token: health, metrics, the OpenAPI document
        answers = []
        for token in (PUBLISH, ACCOUNT_A):
            response = await ingest.request(method, path, json={}, headers=auth(token))
            answers.append((response.status, await error_code(response)))
        scoped = [status for status, code in answers if code == "insufficient_scope"]
        if not scoped or any(status != 403 for status in scoped):
            wrong.append(f"{method} {template}: {answers}")

    assert not wrong, "\n".join(wrong)


async def test_replay_of_another_accounts_endpoint_is_a_404_like_a_missing_one(
    ingest: Client, endpoint_id: str
) -> None:
    other = await ingest.post(
        f"/v1/endpoints/{endpoint_id}/replay", json=REPLAY_BODY, headers=auth(ACCOUNT_B)
    )
    missing = await ingest.post(
        "/v1/endpoints/ep_missing/replay", json=REPLAY_BODY, headers=auth(ACCOUNT_B)
    )

    assert other.status == 404
    assert await other.json() == await missing.json()


async def test_account_token_may_not_create_an_endpoint_for_another_account(
    ingest: Client, base: ServiceBase
) -> None:
    response = await ingest.post(
        "/v1/endpoints",
        json={"url": "https://hooks.example.com/x", "account_id": "acc_a"},
        headers=auth(ACCOUNT_B),
    )

    assert response.status == 404
    assert base.endpoints.table.for_account("acc_a") == []


async def test_another_accounts_endpoint_is_unchanged_after_its_routes_were_refused(
    ingest: Client, base: ServiceBase, endpoint_id: str
) -> None:
    before = base.endpoints.table.get(endpoint_id)
    path = f"/v1/endpoints/{endpoint_id}"

    for method, route, body in ENDPOINT_ROUTES[1:]:
        await ingest.request(
            method, route.format(id=endpoint_id), json=body, headers=auth(ACCOUNT_B)
        )
    after = await ingest.get(path, headers=auth(ACCOUNT_A))

    assert after.status == 200
    assert base.endpoints.table.get(endpoint_id) == before


async def test_token_that_is_not_utf8_is_a_401_not_a_500(ingest: Client) -> None:
    """aiohttp hands such header bytes over as lone surrogates, which ``str.encode`` refuses."""
    host, port = ingest.server.host, ingest.server.port
    assert port is not None
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            b"GET /v1/endpoints HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
            b"Authorization: Bearer tok-\xff\xfe\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=5)
    finally:
        writer.close()
        await writer.wait_closed()

    assert status_line.split()[1] == b"401"
