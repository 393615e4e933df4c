"""Custom headers (write-only) and metadata through the ingest API, in process."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from shared.kafka.service_base import ServiceBase
from shared.model.messages import MASK
from tests.integration.conftest import ACCOUNT_A, auth
from tests.integration.test_portal_access import open_portal

pytestmark = pytest.mark.kafka

Client = TestClient[Any, Any]
URL = "https://hooks.example.com/in"


async def create(ingest: Client, **fields: Any) -> tuple[int, dict[str, Any]]:
    response = await ingest.post(
        "/v1/endpoints", json={"url": URL, **fields}, headers=auth(ACCOUNT_A)
    )
    shown: dict[str, Any] = await response.json()
    return response.status, shown


async def test_headers_are_stored_but_every_answer_masks_their_values(
    ingest: Client, base: ServiceBase
) -> None:
    headers = {"Authorization": "Bearer receiver-token", "X-Tenant": "42"}
    status, created = await create(ingest, headers=headers)
    got = await ingest.get(f"/v1/endpoints/{created['id']}", headers=auth(ACCOUNT_A))
    listed = await ingest.get("/v1/endpoints", headers=auth(ACCOUNT_A))
    stored = base.endpoints.table.get(created["id"])

    assert status == 201
    masked = {"Authorization": MASK, "X-Tenant": MASK}
    assert created["headers"] == masked
    assert (await got.json())["headers"] == masked
    assert [e["headers"] for e in (await listed.json())["data"]] == [masked]
    assert "receiver-token" not in await got.text() + await listed.text()
    assert stored is not None
    assert stored.headers == headers


async def test_metadata_round_trips_as_given(ingest: Client) -> None:
    metadata = {"campaign": "Frühling 🌸", "owner": "growth", "empty": ""}
    _, created = await create(ingest, metadata=metadata)
    got = await ingest.get(f"/v1/endpoints/{created['id']}", headers=auth(ACCOUNT_A))

    assert created["metadata"] == metadata
    assert (await got.json())["metadata"] == metadata


async def test_an_endpoint_without_them_shows_empty_objects(ingest: Client) -> None:
    _, created = await create(ingest)

    assert (created["headers"], created["metadata"]) == ({}, {})


async def test_patch_replaces_headers_and_metadata_and_leaves_them_when_absent(
    ingest: Client, base: ServiceBase
) -> None:
    _, created = await create(ingest, headers={"X-A": "1"}, metadata={"a": "1"})
    path = f"/v1/endpoints/{created['id']}"

    replaced = await ingest.patch(
        path, json={"headers": {"X-B": "2"}, "metadata": {"b": "2"}}, headers=auth(ACCOUNT_A)
    )
    untouched = await ingest.patch(path, json={"description": "d"}, headers=auth(ACCOUNT_A))
    cleared = await ingest.patch(path, json={"headers": {}}, headers=auth(ACCOUNT_A))

    assert replaced.status == 200
    assert ((await replaced.json())["headers"], (await replaced.json())["metadata"]) == (
        {"X-B": MASK},
        {"b": "2"},
    )
    assert (await untouched.json())["headers"] == {"X-B": MASK}
    stored = base.endpoints.table.get(created["id"])
    assert stored is not None
    assert (stored.headers, stored.metadata) == ({}, {"b": "2"})
    assert (await cleared.json())["headers"] == {}


@pytest.mark.parametrize(
    ("headers", "field", "problem"),
    [
        ({"webhook-signature": "v1,x"}, "headers.webhook-signature", "is set by clickhook"),
        ({"X-Hub-Signature-256": "x"}, "headers.X-Hub-Signature-256", "is set by clickhook"),
        ({"Content-Type": "text/plain"}, "headers.Content-Type", "is set by clickhook"),
        ({"Transfer-Encoding": "chunked"}, "headers.Transfer-Encoding", "hop-by-hop"),
        ({"Proxy-Authorization": "x"}, "headers.Proxy-Authorization", "hop-by-hop"),
        ({"X-Bad Name": "x"}, "headers.X-Bad Name", "HTTP token"),
        ({"X-Split": "a\r\nInjected: 1"}, "headers.X-Split", "visible ASCII"),
        ({"X-Text": "café"}, "headers.X-Text", "visible ASCII"),
    ],
)
async def test_a_forbidden_or_unsendable_header_is_a_422_naming_it(
    ingest: Client, headers: dict[str, str], field: str, problem: str
) -> None:
    _, created = await create(ingest)

    for status, shown in (
        await create(ingest, headers=headers),
        await patch(ingest, created["id"], headers=headers),
    ):
        assert status == 422
        [detail] = shown["error"]["details"]
        assert detail["field"] == field
        assert problem in detail["problem"]


async def patch(ingest: Client, endpoint_id: str, **fields: Any) -> tuple[int, dict[str, Any]]:
    response = await ingest.patch(
        f"/v1/endpoints/{endpoint_id}", json=fields, headers=auth(ACCOUNT_A)
    )
    return response.status, await response.json()


@pytest.mark.parametrize(
    ("fields", "field", "problem"),
    [
        ({"headers": {f"X-{i}": "v" for i in range(21)}}, "headers", "at most 20"),
        ({"headers": {"X-Long": "v" * 1025}}, "headers.X-Long", "longer than 1024 bytes"),
        ({"metadata": {f"k{i}": "" for i in range(51)}}, "metadata", "at most 50"),
        ({"metadata": {"k": "v" * 513}}, "metadata.k", "longer than 512 characters"),
        ({"metadata": {f"k{i}": "v" * 500 for i in range(17)}}, "metadata", "at most 8192"),
        ({"metadata": {"k": 1}}, "metadata.k", "must be a string"),
        ({"headers": {"X-A": None}}, "headers.X-A", "must be a string"),
        ({"headers": ["X-A"]}, "headers", "Expected `object`"),
    ],
)
async def test_limits_and_types_are_a_422_naming_the_limit(
    ingest: Client, fields: dict[str, Any], field: str, problem: str
) -> None:
    status, shown = await create(ingest, **fields)

    assert status == 422
    [detail] = shown["error"]["details"]
    assert detail["field"] == field
    assert problem in detail["problem"]


async def test_the_openapi_document_states_the_limits(ingest: Client) -> None:
    document = await (await ingest.get("/openapi.json")).json()
    create_schema = document["components"]["schemas"]["EndpointCreate"]["properties"]

    headers, metadata = create_schema["headers"], create_schema["metadata"]
    assert headers["maxProperties"] == 20
    assert headers["propertyNames"]["maxLength"] == 64
    assert headers["additionalProperties"]["maxLength"] == 1024
    assert metadata["maxProperties"] == 50
    assert metadata["propertyNames"]["maxLength"] == 64
    assert metadata["additionalProperties"]["maxLength"] == 512
    assert "8192 bytes" in metadata["description"]
    shown = document["components"]["schemas"]["Endpoint"]["properties"]["headers"]
    assert MASK in shown["description"]


async def test_the_portal_shows_header_names_masked_and_the_metadata(ingest: Client) -> None:
    _, created = await create(
        ingest, headers={"Authorization": "Bearer receiver-token"}, metadata={"team": "growth"}
    )
    await open_portal(ingest)

    page = await (await ingest.get(f"/portal/endpoints/{created['id']}")).text()

    assert "Authorization" in page
    assert MASK in page
    assert "growth" in page
    assert "receiver-token" not in page
