"""The ingest HTTP API in process, publishing to and reading from the real broker."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from shared.kafka.service_base import ServiceBase
from shared.ops.settings import Settings
from tests.integration.conftest import ACCOUNT_A, ACCOUNT_B, ADMIN, PUBLISH, auth
from tests.support.topics import produce, read_records

pytestmark = pytest.mark.kafka

Client = TestClient[Any, Any]


def click(link_id: str = "lnk_1", **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "link.clicked",
        "occurred_at": datetime.now(UTC).isoformat(),
        "account_id": "acc_a",
        "link": {"id": link_id, "domain": "短.be", "key": "abc", "url": "https://例え.jp/パス?q=1"},
        "click": {"country": "JP"},
        "extra": {"kept": True},
    }
    event.update(overrides)
    return event


async def test_batch_is_published_keyed_by_link_with_unknown_fields_kept(
    ingest: Client, settings: Settings
) -> None:
    batch = [click("lnk_1"), click("lnk_2", id="evt_given"), click("lnk_3")]

    response = await ingest.post("/v1/clicks", json=batch, headers=auth(PUBLISH))
    body = await response.json()
    records = await read_records(settings.kafka_bootstrap, settings.topic_prefix + "clicks", 3)

    assert response.status == 202
    assert body["accepted"] == 3
    assert body["ids"][1] == "evt_given"
    assert sorted(r.key for r in records) == [b"lnk_1", b"lnk_2", b"lnk_3"]
    published = {orjson.loads(r.value)["id"]: orjson.loads(r.value) for r in records}
    assert set(published) == set(body["ids"])
    assert published["evt_given"]["extra"] == {"kept": True}
    assert published["evt_given"]["link"]["domain"] == "短.be"
    assert published["evt_given"]["link"]["url"] == "https://例え.jp/パス?q=1"


async def test_large_batch_keeps_each_links_order_on_the_partition_any_producer_picks(
    ingest: Client, settings: Settings
) -> None:
    # 500 events of ~1.6 KB for one link fill several producer batches of one partition.
    batch = [click("lnk_busy", id=f"evt_{n:03}", pad="x" * 1500) for n in range(500)]
    batch += [click(f"lnk_{n}") for n in range(6)]
    topic = settings.topic_prefix + "clicks"

    response = await ingest.post("/v1/clicks", json=batch, headers=auth(PUBLISH))
    await produce(settings.kafka_bootstrap, topic, [b"{}"], key=b"lnk_busy")
    records = await read_records(settings.kafka_bootstrap, topic, len(batch) + 1)

    assert response.status == 202
    busy = [r for r in records if r.key == b"lnk_busy"]
    probe = next(r for r in busy if r.value == b"{}")
    assert len(busy) == 501
    assert {r.partition for r in busy} == {probe.partition}
    ids = [orjson.loads(r.value).get("id") for r in sorted(busy, key=lambda r: r.offset)]
    assert ids == [f"evt_{n:03}" for n in range(500)] + [None]
    assert len(records) == len(batch) + 1


async def test_batch_with_one_bad_event_publishes_nothing(
    ingest: Client, settings: Settings
) -> None:
    batch = [click(), {**click(), "account_id": 7}, click(occurred_at="yesterday")]

    response = await ingest.post("/v1/clicks", json=batch, headers=auth(PUBLISH))
    error = (await response.json())["error"]
    records = await read_records(settings.kafka_bootstrap, settings.topic_prefix + "clicks", 1, 3)

    assert response.status == 422
    assert error["code"] == "invalid_request"
    assert [(d["index"], d["field"]) for d in error["details"]] == [
        (1, "account_id"),
        (2, "occurred_at"),
    ]
    assert records == []


async def test_ndjson_body_is_accepted(ingest: Client) -> None:
    body = b"\n".join(orjson.dumps(click(f"lnk_{n}")) for n in range(5)) + b"\n"

    response = await ingest.post(
        "/v1/clicks",
        data=body,
        headers={**auth(PUBLISH), "content-type": "application/x-ndjson"},
    )

    assert response.status == 202
    assert (await response.json())["accepted"] == 5


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (click(occurred_at=(datetime.now(UTC) + timedelta(days=2)).isoformat()), "occurred_at"),
        (click(occurred_at="2026-11-27T11:00:00"), "occurred_at"),
        (click(type="x" * 101), "type"),
        ({**click(), "link": {"id": "l", "tags": ["t" * 201]}}, "link.tags[0]"),
        ({k: v for k, v in click().items() if k != "account_id"}, "account_id"),
    ],
)
async def test_invalid_event_is_refused_with_the_field_named(
    ingest: Client, event: dict[str, Any], field: str
) -> None:
    response = await ingest.post("/v1/clicks", json=event, headers=auth(PUBLISH))
    details = (await response.json())["error"]["details"]

    assert response.status == 422
    assert details[0]["field"] == field


async def test_an_empty_event_gets_one_detail_per_required_field(ingest: Client) -> None:
    response = await ingest.post("/v1/clicks", json=[click(), {}], headers=auth(PUBLISH))
    details = (await response.json())["error"]["details"]

    assert response.status == 422
    assert details == [
        {"field": "type", "problem": "is required", "index": 1},
        {"field": "account_id", "problem": "is required", "index": 1},
        {"field": "occurred_at", "problem": "is required", "index": 1},
        {"field": "link", "problem": "is required", "index": 1},
    ]


async def test_a_click_from_the_future_is_refused_with_the_rule(ingest: Client) -> None:
    response = await ingest.post(
        "/v1/clicks",
        json={**click(), "occurred_at": "2999-01-01T00:00:00Z"},
        headers=auth(PUBLISH),
    )
    [detail] = (await response.json())["error"]["details"]

    assert response.status == 422
    assert detail["field"] == "occurred_at"
    assert detail["problem"].startswith("must be at most 1 hour after now (")


async def test_malformed_json_is_a_400(ingest: Client) -> None:
    response = await ingest.post(
        "/v1/clicks",
        data=b'{"type": NaN}',
        headers={**auth(PUBLISH), "content-type": "application/json"},
    )

    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_request"


async def test_wrong_content_type_is_a_415(ingest: Client) -> None:
    response = await ingest.post(
        "/v1/clicks", data=b"hello", headers={**auth(PUBLISH), "content-type": "text/plain"}
    )

    assert response.status == 415
    assert (await response.json())["error"]["code"] == "unsupported_media_type"


async def test_oversized_body_is_a_413(ingest: Client, settings: Settings) -> None:
    huge = io.BytesIO(b"[" + b" " * settings.max_body_bytes + b"]")

    response = await ingest.post(
        "/v1/clicks", data=huge, headers={**auth(PUBLISH), "content-type": "application/json"}
    )

    assert response.status == 413
    error = (await response.json())["error"]
    assert error["code"] == "payload_too_large"
    assert error["message"] == "the body is too large: at most 1,048,576 bytes"


async def test_too_many_events_is_a_413(ingest: Client, settings: Settings) -> None:
    batch = [{"type": "t"}] * (settings.max_batch_events + 1)

    response = await ingest.post("/v1/clicks", json=batch, headers=auth(PUBLISH))

    assert response.status == 413
    error = (await response.json())["error"]
    assert error["code"] == "too_many_events"
    assert error["message"] == "too many events: at most 1,000 per request"


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer nope"}, {"authorization": "Basic dG9rLXB1Ymxpc2g6"}],
)
async def test_missing_or_wrong_token_is_a_401(ingest: Client, headers: dict[str, str]) -> None:
    response = await ingest.post("/v1/clicks", json=click(), headers=headers)

    assert response.status == 401
    assert (await response.json())["error"]["code"] == "unauthorized"


async def test_account_token_may_not_publish(ingest: Client) -> None:
    response = await ingest.post("/v1/clicks", json=click(), headers=auth(ACCOUNT_A))

    assert response.status == 403
    assert (await response.json())["error"]["code"] == "insufficient_scope"


async def test_publish_token_may_not_manage_endpoints(ingest: Client) -> None:
    response = await ingest.get("/v1/endpoints", headers=auth(PUBLISH))

    assert response.status == 403


async def create_endpoint(ingest: Client, token: str, **fields: Any) -> dict[str, Any]:
    body = {"url": "https://hooks.example.com/clicks", **fields}
    response = await ingest.post("/v1/endpoints", json=body, headers=auth(token))
    created: dict[str, Any] = await response.json()
    assert response.status == 201, created
    return created


async def test_created_endpoint_is_readable_at_once(ingest: Client) -> None:
    created = await create_endpoint(ingest, ACCOUNT_A, filters={"tags": ["spring"]})

    response = await ingest.get(f"/v1/endpoints/{created['id']}", headers=auth(ACCOUNT_A))
    shown = await response.json()

    assert response.status == 200
    assert created["id"].startswith("ep_")
    assert created["secret"].startswith("whsec_")
    assert shown["filters"] == {"tags": ["spring"]}
    assert "secret" not in shown
    assert "secrets" not in shown


async def test_another_accounts_endpoint_is_a_404(ingest: Client) -> None:
    created = await create_endpoint(ingest, ACCOUNT_A)
    path = f"/v1/endpoints/{created['id']}"

    get = await ingest.get(path, headers=auth(ACCOUNT_B))
    patch = await ingest.patch(path, json={"enabled": False}, headers=auth(ACCOUNT_B))
    delete = await ingest.delete(path, headers=auth(ACCOUNT_B))
    rotate = await ingest.post(f"{path}/rotate-secret", headers=auth(ACCOUNT_B))
    listed = await (await ingest.get("/v1/endpoints", headers=auth(ACCOUNT_B))).json()
    as_admin = await ingest.get(path, headers=auth(ADMIN))

    assert [get.status, patch.status, delete.status, rotate.status] == [404, 404, 404, 404]
    assert listed["data"] == []
    assert as_admin.status == 200


async def test_endpoint_patch_and_delete(ingest: Client, base: ServiceBase) -> None:
    created = await create_endpoint(ingest, ACCOUNT_A)
    path = f"/v1/endpoints/{created['id']}"

    patched = await ingest.patch(
        path, json={"enabled": False, "rate_limit_per_s": 5}, headers=auth(ACCOUNT_A)
    )
    stored = base.endpoints.table.get(created["id"])
    deleted = await ingest.delete(path, headers=auth(ACCOUNT_A))
    after = await ingest.get(path, headers=auth(ACCOUNT_A))

    assert patched.status == 200
    assert stored is not None
    assert not stored.enabled
    assert stored.rate_limit_per_s == 5
    assert deleted.status == 204
    assert after.status == 404
    assert base.endpoints.table.get(created["id"]) is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://hooks.example.com/x", "must use"),
        ("https://user:pw@hooks.example.com/x", "user name or password"),
        ("https://hooks.example.com/" + "a" * 2100, "longer than"),
        ("/relative", "must use"),
        ("https://10.0.0.7/hook", "private"),
    ],
)
async def test_bad_endpoint_url_is_refused(ingest: Client, url: str, problem: str) -> None:
    response = await ingest.post("/v1/endpoints", json={"url": url}, headers=auth(ACCOUNT_A))
    details = (await response.json())["error"]["details"]

    assert response.status == 422
    assert any(problem in d["problem"] for d in details), details


async def test_caller_supplied_secret_is_kept_and_a_bad_one_refused(ingest: Client) -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    good = await create_endpoint(ingest, ACCOUNT_A, secret=secret)
    bad = await ingest.post(
        "/v1/endpoints",
        json={"url": "https://hooks.example.com/x", "secret": "whsec_c2hvcnQ="},
        headers=auth(ACCOUNT_A),
    )

    assert good["secret"] == secret
    assert bad.status == 422


async def test_unknown_endpoint_field_is_refused(ingest: Client) -> None:
    response = await ingest.post(
        "/v1/endpoints",
        json={"url": "https://hooks.example.com/x", "colour": "red"},
        headers=auth(ACCOUNT_A),
    )

    assert response.status == 422


async def test_health_and_readiness(ingest: Client) -> None:
    health = await ingest.get("/healthz")
    ready = await ingest.get("/readyz")

    assert health.status == 200
    assert ready.status == 200
    assert (await ready.json())["checks"]["endpoints_loaded"] is True
