"""GET /v1/meta through the real ingest app, in process: no token, cached, revalidated."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from services.ingest.meta_api import META_MAX_AGE_S
from shared.ops.settings import Settings
from tests.integration.conftest import make_settings

pytestmark = pytest.mark.kafka

Client = TestClient[Any, Any]
EGRESS = ("203.0.113.0/28", "2001:db8:40::/48")


@pytest.fixture(name="settings")
def fixture_settings(kafka_bootstrap: str, prefix: str) -> Settings:
    egress = tuple(ipaddress.ip_network(cidr) for cidr in EGRESS)
    return make_settings(kafka_bootstrap, prefix, egress_cidrs=egress)


async def test_meta_answers_without_a_token_and_may_be_cached(ingest: Client) -> None:
    response = await ingest.get("/v1/meta")
    body = await response.json()

    assert response.status == 200
    assert response.headers["cache-control"] == f"public, max-age={META_MAX_AGE_S}"
    assert response.headers["etag"].startswith('"')
    assert body["egress_cidrs"] == list(EGRESS)
    assert body["signature_schemes"][0]["headers"] == [
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    ]
    assert body["retry_schedule"]["written"] == "5s,5m,30m,2h,5h,10h,10h"
    assert body["event_types"] == ["link.clicked"]


async def test_meta_with_its_etag_is_a_304_without_a_body(ingest: Client) -> None:
    etag = (await ingest.get("/v1/meta")).headers["etag"]

    again = await ingest.get("/v1/meta", headers={"if-none-match": etag})
    changed = await ingest.get("/v1/meta", headers={"if-none-match": '"other"'})

    assert again.status == 304
    assert await again.read() == b""
    assert again.headers["etag"] == etag
    assert changed.status == 200


async def test_openapi_documents_meta_as_tokenless(ingest: Client) -> None:
    document = await (await ingest.get("/openapi.json")).json()
    operation = document["paths"]["/v1/meta"]["get"]

    assert operation["security"] == []
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ServiceMeta"
    }
    assert "egress_cidrs" in document["components"]["schemas"]["ServiceMeta"]["required"]
