"""The endpoint fields ``format`` and ``signature_styles`` through the ingest API, in process."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from shared.kafka.service_base import ServiceBase
from tests.integration.conftest import ACCOUNT_A, auth

pytestmark = pytest.mark.kafka

Client = TestClient[Any, Any]


async def create(ingest: Client, **fields: Any) -> tuple[int, dict[str, Any]]:
    body = {"url": "https://hooks.slack.com/services/T0/B0/x", **fields}
    response = await ingest.post("/v1/endpoints", json=body, headers=auth(ACCOUNT_A))
    shown: dict[str, Any] = await response.json()
    return response.status, shown


async def test_format_and_signature_styles_default_to_standard_and_none(ingest: Client) -> None:
    status, shown = await create(ingest)

    assert status == 201
    assert (shown["format"], shown["signature_styles"]) == ("standard", [])


async def test_format_and_signature_styles_are_stored_and_shown(
    ingest: Client, base: ServiceBase
) -> None:
    status, shown = await create(ingest, format="slack", signature_styles=["github", "github"])
    stored = base.endpoints.table.get(shown["id"])

    assert status == 201
    assert (shown["format"], shown["signature_styles"]) == ("slack", ["github"])
    assert stored is not None
    assert (stored.format, stored.signature_styles) == ("slack", ["github"])


async def test_format_and_signature_styles_can_be_patched(ingest: Client) -> None:
    _, created = await create(ingest)

    response = await ingest.patch(
        f"/v1/endpoints/{created['id']}",
        json={"format": "ifttt", "signature_styles": ["dub", "github"]},
        headers=auth(ACCOUNT_A),
    )
    shown = await response.json()

    assert response.status == 200
    assert (shown["format"], shown["signature_styles"]) == ("ifttt", ["dub", "github"])


@pytest.mark.parametrize(
    "fields",
    [
        {"format": "telegram"},
        {"signature_styles": ["stripe"]},
        {"signature_styles": "github"},
        {"signature_styles": ["github", "dub", "github"]},
    ],
)
async def test_unknown_format_or_signature_style_is_a_422(
    ingest: Client, fields: dict[str, Any]
) -> None:
    status, shown = await create(ingest, **fields)

    assert status == 422
    assert shown["error"]["code"] == "invalid_request"
