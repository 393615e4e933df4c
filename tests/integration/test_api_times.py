"""Every time a request gives (replay, backfill, the delivery log) takes the CLI's formats, and
a bad one is a 422 naming its field, never ``$``."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.integration.conftest import ACCOUNT_A, auth

pytestmark = pytest.mark.kafka

Client = TestClient[Any, Any]


async def create_endpoint(ingest: Client) -> str:
    body = {"url": "https://hooks.example.com/clicks"}
    response = await ingest.post("/v1/endpoints", json=body, headers=auth(ACCOUNT_A))
    assert response.status == 201
    endpoint_id: str = (await response.json())["id"]
    return endpoint_id


@pytest.mark.parametrize("since", ["24h", "2026-11-27T10:00:00Z", 1_764_237_600_000])
async def test_a_replay_takes_an_age_rfc_3339_or_unix_ms(ingest: Client, since: Any) -> None:
    endpoint_id = await create_endpoint(ingest)

    response = await ingest.post(
        f"/v1/endpoints/{endpoint_id}/replay", json={"since": since}, headers=auth(ACCOUNT_A)
    )

    assert response.status == 202, await response.text()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"since": "last tuesday"}, "since"),
        ({"since": "24h", "until": "soon"}, "until"),
        ({"since": 1.5}, "since"),
        ({}, "since"),
        ([], "body"),
    ],
)
async def test_a_replay_with_a_bad_time_names_the_field(
    ingest: Client, body: Any, field: str
) -> None:
    endpoint_id = await create_endpoint(ingest)

    response = await ingest.post(
        f"/v1/endpoints/{endpoint_id}/replay", json=body, headers=auth(ACCOUNT_A)
    )

    assert response.status == 422
    details = (await response.json())["error"]["details"]
    assert [detail["field"] for detail in details] == [field]
