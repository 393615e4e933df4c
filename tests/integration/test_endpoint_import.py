"""POST /v1/endpoints/import: NDJSON of endpoint creates in, one result line each out, each
line answered as a single create would be; on the real broker."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from services.ingest.api_types import IMPORT_MAX_LINES
from tests.integration.conftest import ACCOUNT_A, ADMIN, auth

pytestmark = pytest.mark.kafka

Client = TestClient[Any, Any]
NDJSON = "application/x-ndjson"
GOOD = {"url": "https://hooks.example.com/in", "description": "imported"}
BAD_LINES = [
    b'{"url": "https://hooks.example.com/in", ',  # malformed JSON
    orjson.dumps({"url": "https://hooks.example.com/in", "filters": {"tag": ["x"]}}),
    orjson.dumps({"url": "ftp://hooks.example.com/in"}),
    orjson.dumps({"url": "https://hooks.example.com/in", "account_id": "acc_b"}),
]


async def import_lines(client: Client, lines: list[bytes], token: str = ACCOUNT_A) -> Any:
    return await client.post(
        "/v1/endpoints/import",
        data=b"\n".join(lines) + b"\n",
        headers={**auth(token), "content-type": NDJSON},
    )


async def result_lines(response: Any) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (await response.read()).splitlines()]


async def test_good_lines_are_created_and_bad_ones_answered_as_a_single_create_would(
    ingest: Client,
) -> None:
    good = orjson.dumps(GOOD)
    lines = [good, BAD_LINES[0], good, b"", BAD_LINES[1], BAD_LINES[2], BAD_LINES[3], good]

    response = await import_lines(ingest, lines)
    results = await result_lines(response)

    assert response.status == 200
    assert response.content_type == NDJSON
    assert [r["line"] for r in results] == [1, 2, 3, 5, 6, 7, 8]  # the blank line 4 skipped
    created = [r for r in results if r["status"] == 201]
    assert [r["line"] for r in created] == [1, 3, 8]
    for result in created:
        read = await ingest.get(f"/v1/endpoints/{result['id']}", headers=auth(ACCOUNT_A))
        assert read.headers["etag"] == f'"{result["version"]}"'
        assert (await read.json())["description"] == "imported"
        assert result["secret"].startswith("whsec_")
    for result in (r for r in results if r["status"] != 201):
        single = await ingest.post(
            "/v1/endpoints",
            data=BAD_LINES[[2, 5, 6, 7].index(result["line"])],
            headers={**auth(ACCOUNT_A), "content-type": "application/json"},
        )
        assert result["status"] == single.status
        assert result["error"] == (await single.json())["error"]


async def test_an_admin_import_names_the_account_on_each_line(ingest: Client) -> None:
    lines = [orjson.dumps({**GOOD, "account_id": "acc_a"}), orjson.dumps(GOOD)]

    results = await result_lines(await import_lines(ingest, lines, ADMIN))

    assert [r["status"] for r in results] == [201, 422]
    assert results[1]["error"]["details"] == [
        {"field": "account_id", "problem": "is required for admin tokens"}
    ]


async def test_an_import_over_the_line_limit_is_a_413_and_creates_nothing(
    ingest: Client,
) -> None:
    lines = [orjson.dumps(GOOD)] * (IMPORT_MAX_LINES + 1)

    response = await import_lines(ingest, lines)
    listed = await (await ingest.get("/v1/endpoints", headers=auth(ACCOUNT_A))).json()

    assert response.status == 413
    assert (await response.json())["error"]["code"] == "payload_too_large"
    assert listed["data"] == []


async def test_an_import_in_json_is_a_415(ingest: Client) -> None:
    response = await ingest.post("/v1/endpoints/import", json=GOOD, headers=auth(ACCOUNT_A))

    assert response.status == 415
