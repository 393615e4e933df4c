"""/v1/endpoints/{id}/backfill in process, reading ``clicks`` from the real broker.

Every answer is also checked against the OpenAPI document the service publishes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

import services.ingest.backfill
from services.ingest.openapi import openapi_document
from shared.kafka.clients import Record
from shared.kafka.window import read_window
from shared.model.messages import decode_envelope
from shared.model.signing import webhook_id
from shared.model.topics import HEADER_DUE_AT_MS, Topics
from shared.ops.settings import Settings
from tests.integration.conftest import ACCOUNT_A, ACCOUNT_B, auth
from tests.support.timed_clicks import click_at, produce_at_click_time
from tests.support.topics import read_records

pytestmark = pytest.mark.kafka

Client = TestClient[Any, Any]
PATH = "/v1/endpoints/{endpoint_id}/backfill"


async def checked(response: ClientResponse, method: str) -> dict[str, Any]:
    """The JSON answer, validated against the documented schema of its status."""
    body: dict[str, Any] = await response.json()
    document = openapi_document()
    responses = document["paths"][PATH][method]["responses"]
    assert str(response.status) in responses, f"undocumented {response.status}: {body}"
    schema = responses[str(response.status)]["content"]["application/json"]["schema"]
    jsonschema.validate(body, {**schema, "components": document["components"]})
    return body


async def create_endpoint(ingest: Client, token: str = ACCOUNT_A, **fields: Any) -> str:
    body = {"url": "https://hooks.example.com/clicks", **fields}
    response = await ingest.post("/v1/endpoints", json=body, headers=auth(token))
    assert response.status == 201
    endpoint_id: str = (await response.json())["id"]
    return endpoint_id


def iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


async def start(ingest: Client, endpoint_id: str, **body: Any) -> ClientResponse:
    return await ingest.post(
        PATH.format(endpoint_id=endpoint_id), json=body, headers=auth(ACCOUNT_A)
    )


async def wait_until_ended(ingest: Client, endpoint_id: str) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            response = await ingest.get(
                PATH.format(endpoint_id=endpoint_id), headers=auth(ACCOUNT_A)
            )
            status = await checked(response, "get")
            if status["state"] != "running":
                return status
            await asyncio.sleep(0.1)


async def test_backfill_queues_the_windows_matching_clicks_for_that_endpoint_alone(
    ingest: Client, settings: Settings
) -> None:
    now = datetime.now(UTC)
    since, until = now - timedelta(hours=3), now - timedelta(hours=1)
    wanted = await create_endpoint(ingest, filters={"tags": ["spring"]})
    await create_endpoint(ingest)  # wants every click of the account: must get none of these
    inside = now - timedelta(hours=2)
    clicks = [  # in the order they happened, all on one partition (one link)
        click_at("evt_long_before", now - timedelta(hours=5), account_id="acc_a"),
        click_at("evt_in_1", inside, account_id="acc_a"),
        click_at("evt_in_2", inside + timedelta(minutes=30), account_id="acc_a"),
        click_at("evt_in_other_tag", inside, account_id="acc_a", tags=["autumn"]),
        click_at("evt_in_other_account", inside, account_id="acc_b"),
        click_at("evt_after", now - timedelta(minutes=30), account_id="acc_a"),
    ]
    await produce_at_click_time(
        settings.kafka_bootstrap, Topics(settings.topic_prefix).clicks, clicks
    )

    started = await start(ingest, wanted, since=iso(since), until=iso(until))
    first = await checked(started, "post")
    final = await wait_until_ended(ingest, wanted)
    tier = Topics(settings.topic_prefix).retry(settings.retry_schedule_s[0])
    records = await read_records(settings.kafka_bootstrap, tier, 3, timeout_s=3)

    assert started.status == 202
    assert first["state"] == "running"
    assert final["state"] == "completed"
    # Read from an hour before ``since``: the click five hours back is never even read.
    assert final["scanned"] == 5
    assert (final["matched"], final["scheduled"]) == (2, 2)
    envelopes = [decode_envelope(r.value) for r in records]
    assert sorted(e.event_id for e in envelopes) == ["evt_in_1", "evt_in_2"]
    assert {e.endpoint_id for e in envelopes} == {wanted}
    assert all(e.webhook_id == webhook_id(e.event_id, wanted) for e in envelopes)
    assert all(r.key == wanted.encode() for r in records)
    assert all(e.attempts_made == 0 and e.tier == -1 for e in envelopes)
    for record, envelope in zip(records, envelopes, strict=True):
        due_ms = int(dict(record.headers)[HEADER_DUE_AT_MS])
        assert due_ms == envelope.due_at_ms <= int(datetime.now(UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"since": "2026-11-01T00:00:00Z", "until": "2026-11-09T00:00:00Z"}, "until"),
        ({"since": "2026-11-02T00:00:00Z", "until": "2026-11-01T00:00:00Z"}, "until"),
        ({"since": "2999-01-01T00:00:00Z"}, "since"),
        ({"since": "2026-11-01T00:00:00"}, "since"),
        ({"since": "last tuesday"}, "since"),
        ({"since": "24h", "until": 1_000}, "until"),
        ({"since": "2026-11-01T00:00:00Z", "max_clicks": 100_001}, "max_clicks"),
        ({"since": "2026-11-01T00:00:00Z", "colour": "red"}, "colour"),
        ({"until": "2026-11-01T00:00:00Z"}, "since"),
    ],
)
async def test_backfill_beyond_its_bounds_is_a_422_naming_the_field(
    ingest: Client, body: dict[str, Any], field: str
) -> None:
    endpoint_id = await create_endpoint(ingest)

    response = await start(ingest, endpoint_id, **body)
    error = await checked(response, "post")

    assert response.status == 422
    assert [d["field"] for d in error["error"]["details"]] == [field]


async def test_another_accounts_backfill_is_a_404_and_so_is_one_never_started(
    ingest: Client,
) -> None:
    endpoint_id = await create_endpoint(ingest)
    path = PATH.format(endpoint_id=endpoint_id)
    body = {"since": iso(datetime.now(UTC) - timedelta(hours=1))}

    foreign_start = await ingest.post(path, json=body, headers=auth(ACCOUNT_B))
    never_started = await ingest.get(path, headers=auth(ACCOUNT_A))
    nothing_to_cancel = await ingest.delete(path, headers=auth(ACCOUNT_A))

    assert foreign_start.status == 404
    assert never_started.status == 404
    assert nothing_to_cancel.status == 404
    await checked(never_started, "get")
    await checked(nothing_to_cancel, "delete")


async def test_backfill_of_a_disabled_endpoint_is_a_409(ingest: Client) -> None:
    endpoint_id = await create_endpoint(ingest, enabled=False)

    response = await start(ingest, endpoint_id, since=iso(datetime.now(UTC) - timedelta(hours=1)))

    assert response.status == 409
    assert (await checked(response, "post"))["error"]["code"] == "endpoint_disabled"


async def test_running_backfill_refuses_a_second_and_can_be_cancelled(
    ingest: Client, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window's records come from the broker; then the read is held open, as a long
    window's would be, until the backfill is cancelled."""
    read_all = asyncio.Event()

    async def held_open(s: Settings, topic: str, since_ms: int) -> AsyncGenerator[Record, None]:
        async for record in read_window(s, topic, since_ms):
            yield record
        read_all.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(services.ingest.backfill, "read_window", held_open)
    now = datetime.now(UTC)
    endpoint_id = await create_endpoint(ingest)
    clicks = [
        click_at(f"evt_{n}", now - timedelta(minutes=10), account_id="acc_a") for n in range(3)
    ]
    await produce_at_click_time(
        settings.kafka_bootstrap, Topics(settings.topic_prefix).clicks, clicks
    )
    path = PATH.format(endpoint_id=endpoint_id)

    await start(ingest, endpoint_id, since=iso(now - timedelta(hours=1)))
    await asyncio.wait_for(read_all.wait(), timeout=20)
    second = await start(ingest, endpoint_id, since=iso(now - timedelta(hours=1)))
    running = await checked(await ingest.get(path, headers=auth(ACCOUNT_A)), "get")
    cancel = await ingest.delete(path, headers=auth(ACCOUNT_A))
    cancelled = await checked(cancel, "delete")
    again = await ingest.delete(path, headers=auth(ACCOUNT_A))

    assert second.status == 409
    assert (await checked(second, "post"))["error"]["code"] == "backfill_running"
    assert (running["state"], running["scanned"], running["matched"]) == ("running", 3, 3)
    assert cancel.status == 200
    assert cancelled["state"] == "cancelled"
    assert cancelled["finished_at"] is not None
    assert again.status == 409
    await checked(again, "delete")
