"""The delivery log API against the real broker, on both stores (the SQLite index and
PostgreSQL): records produced to the topics the way the services write them, read back through
ingest's routes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from shared.model.messages import AttemptRecord
from shared.model.signing import webhook_id
from shared.model.times import to_ms
from shared.model.topics import HEADER_ENDPOINT, Topics, header_value
from shared.ops.settings import Settings
from tests.integration.conftest import ACCOUNT_A, ACCOUNT_B, ADMIN, PUBLISH, auth, make_settings
from tests.support.attempts import (
    KeyedProducer,
    attempt,
    dead_letter,
    eventually,
    now_ms,
    replay_job,
)
from tests.support.topics import read_records

pytestmark = pytest.mark.kafka

Client = TestClient[Any, Any]


@pytest.fixture(name="settings")
def fixture_settings(kafka_bootstrap: str, prefix: str, delivery_log_url: str) -> Settings:
    return make_settings(kafka_bootstrap, prefix, delivery_log_url=delivery_log_url)


async def create_endpoint(ingest: Client, token: str = ACCOUNT_A) -> str:
    response = await ingest.post(
        "/v1/endpoints", json={"url": "http://127.0.0.1:9/hook"}, headers=auth(token)
    )
    assert response.status == 201, await response.text()
    endpoint_id: str = (await response.json())["id"]
    return endpoint_id


async def get_json(ingest: Client, path: str, token: str = ACCOUNT_A, **query: str) -> Any:
    response = await ingest.get(path, params=query, headers=auth(token))
    assert response.status == 200, await response.text()
    return await response.json()


async def until_listed(ingest: Client, endpoint_id: str, count: int) -> None:
    async def listed() -> bool:
        page = await get_json(ingest, f"/v1/endpoints/{endpoint_id}/attempts", limit="250")
        return len(page["data"]) >= count

    await eventually(listed)


async def all_pages(ingest: Client, path: str, **query: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = await get_json(ingest, path, **query, **({"cursor": cursor} if cursor else {}))
        found += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return found


async def test_attempts_are_listed_newest_first_with_what_happens_next(
    ingest: Client, producer: KeyedProducer, topics: Topics
) -> None:
    endpoint_id = await create_endpoint(ingest)
    base = now_ms() - 60_000
    records = [
        attempt(endpoint_id, "evt_1", at_ms=base, outcome="http_5xx", status=503,
                response_body="busy", next_attempt_at_ms=base + 5_000, breaker="closed"),
        attempt(endpoint_id, "evt_1", at_ms=base + 5_000, attempt=2, outcome="timeout",
                status=None, error="read timed out", dead_letter_reason="exhausted"),
        attempt(endpoint_id, "evt_2", at_ms=base + 6_000),
    ]  # fmt: skip
    await producer.send(topics.attempts, endpoint_id, records)
    await until_listed(ingest, endpoint_id, 3)

    page = await get_json(ingest, f"/v1/endpoints/{endpoint_id}/attempts")
    assert [(a["event_id"], a["attempt"], a["outcome"]) for a in page["data"]] == [
        ("evt_2", 1, "success"),
        ("evt_1", 2, "timeout"),
        ("evt_1", 1, "http_5xx"),
    ]
    failed = page["data"][2]
    assert failed["webhook_id"] == webhook_id("evt_1", endpoint_id)
    assert failed["status"] == 503
    assert failed["response_body"] == "busy"
    assert failed["next_attempt_at"] is not None
    assert page["data"][1]["dead_letter_reason"] == "exhausted"
    assert page["data"][1]["error"] == "read timed out"
    assert page["next_cursor"] is None
    assert page["index"]["behind"] == 0


async def test_filters_pick_status_class_outcome_window_and_event(
    ingest: Client, producer: KeyedProducer, topics: Topics
) -> None:
    endpoint_id = await create_endpoint(ingest)
    base = now_ms() - 600_000
    records = [
        attempt(endpoint_id, "evt_a", at_ms=base, outcome="http_5xx", status=500),
        attempt(endpoint_id, "evt_a", at_ms=base + 1_000, attempt=2, outcome="http_4xx",
                status=404),
        attempt(endpoint_id, "evt_b", at_ms=base + 2_000, outcome="deferred", status=None,
                deferred_because="breaker_open", duration_ms=0.0),
        attempt(endpoint_id, "evt_c", at_ms=base + 3_000),
    ]  # fmt: skip
    await producer.send(topics.attempts, endpoint_id, records)
    await until_listed(ingest, endpoint_id, 4)
    path = f"/v1/endpoints/{endpoint_id}/attempts"

    async def events(**query: str) -> list[tuple[str, int]]:
        page = await get_json(ingest, path, **query)
        return [(a["event_id"], a["attempt"]) for a in page["data"]]

    assert await events(status="5xx") == [("evt_a", 1)]
    assert await events(status="404") == [("evt_a", 2)]
    assert await events(status="failure") == [("evt_a", 2), ("evt_a", 1)]
    assert await events(status="deferred") == [("evt_b", 1)]
    assert await events(status="success") == [("evt_c", 1)]
    assert await events(event_id="evt_a") == [("evt_a", 2), ("evt_a", 1)]
    since = _rfc3339(base + 1_000)
    until = _rfc3339(base + 3_000)
    assert await events(since=since, until=until) == [("evt_b", 1), ("evt_a", 2)]
    # The same window in unix milliseconds, and an age back from now: the CLI's formats too.
    in_ms = {"since": str(base + 1_000), "until": str(base + 3_000)}
    assert await events(**in_ms) == [("evt_b", 1), ("evt_a", 2)]
    assert len(await events(since="3650d")) == 4


async def test_bad_query_parameters_are_422_with_the_field(ingest: Client) -> None:
    endpoint_id = await create_endpoint(ingest)
    path = f"/v1/endpoints/{endpoint_id}/attempts"
    for query, field in (
        ({"status": "broken"}, "status"),
        ({"since": "last tuesday"}, "since"),
        ({"since": "1764237600"}, "since"),  # unix seconds, not milliseconds
        ({"until": "2026-11-27T11:00:00"}, "until"),
        ({"cursor": "!!"}, "cursor"),
        ({"limit": "0"}, "limit"),
    ):
        response = await ingest.get(path, params=query, headers=auth(ACCOUNT_A))
        assert response.status == 422, query
        body = await response.json()
        assert body["error"]["details"][0]["field"] == field


async def test_pagination_is_stable_while_new_attempts_arrive(
    ingest: Client, producer: KeyedProducer, topics: Topics
) -> None:
    endpoint_id = await create_endpoint(ingest)
    base = now_ms() - 3_600_000
    # Several attempts share each millisecond: the cursor must break ties the same way.
    older = [attempt(endpoint_id, f"evt_{i:03}", at_ms=base + i // 3) for i in range(120)]
    await producer.send(topics.attempts, endpoint_id, older)
    await until_listed(ingest, endpoint_id, 120)
    path = f"/v1/endpoints/{endpoint_id}/attempts"

    seen: list[str] = []
    cursor: str | None = None
    newer = 0
    while True:
        query = {"limit": "25", **({"cursor": cursor} if cursor else {})}
        page = await get_json(ingest, path, **query)
        seen += [a["event_id"] for a in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        # Between pages, newer attempts arrive (and are indexed) at the head of the log.
        fresh = [attempt(endpoint_id, f"new_{newer + i}") for i in range(30)]
        newer += len(fresh)
        await producer.send(topics.attempts, endpoint_id, fresh)
        await until_listed(ingest, endpoint_id, 120 + newer)

    assert seen == [f"evt_{i:03}" for i in reversed(range(120))]
    assert newer == 4 * 30  # the arrivals happened while paging


async def test_event_attempts_span_the_accounts_endpoints_and_no_others(
    ingest: Client, producer: KeyedProducer, topics: Topics
) -> None:
    first = await create_endpoint(ingest)
    second = await create_endpoint(ingest)
    foreign = await create_endpoint(ingest, ACCOUNT_B)
    await producer.send(topics.attempts, first, [attempt(first, "evt_x")])
    await producer.send(topics.attempts, second, [attempt(second, "evt_x", outcome="http_5xx")])
    await producer.send(topics.attempts, foreign, [attempt(foreign, "evt_x", account_id="acc_b")])
    await until_listed(ingest, second, 1)
    await until_listed(ingest, first, 1)

    async def listed() -> bool:
        page = await get_json(ingest, "/v1/events/evt_x/attempts", ADMIN)
        return len(page["data"]) == 3

    await eventually(listed)
    page = await get_json(ingest, "/v1/events/evt_x/attempts")
    assert sorted(a["endpoint_id"] for a in page["data"]) == sorted([first, second])
    other = await get_json(ingest, "/v1/events/evt_x/attempts", ACCOUNT_B)
    assert [a["endpoint_id"] for a in other["data"]] == [foreign]


async def test_another_accounts_endpoint_is_404_on_every_route(ingest: Client) -> None:
    endpoint_id = await create_endpoint(ingest, ACCOUNT_B)
    for method, suffix in (
        ("GET", "attempts"),
        ("GET", "attempts/att_0_0"),
        ("GET", "stats"),
        ("GET", "dead-letters"),
        ("POST", "test"),
    ):
        response = await ingest.request(
            method, f"/v1/endpoints/{endpoint_id}/{suffix}", headers=auth(ACCOUNT_A)
        )
        assert response.status == 404, suffix
        assert (await response.json())["error"]["code"] == "not_found"


async def test_stats_sum_the_last_hour_and_day(
    ingest: Client, producer: KeyedProducer, topics: Topics
) -> None:
    endpoint_id = await create_endpoint(ingest)
    now = now_ms()
    fine = [attempt(endpoint_id, f"ok{i}", at_ms=now - 60_000, duration_ms=10.0) for i in range(98)]
    records = [
        *fine,
        attempt(endpoint_id, "evt_old", at_ms=now - 5 * 3_600_000, outcome="http_5xx",
                status=502, duration_ms=900.0),
        attempt(endpoint_id, "evt_t", at_ms=now - 120_000, outcome="timeout", status=None,
                error="read timed out", duration_ms=15_000.0, next_attempt_at_ms=now + 60_000,
                breaker="open"),
        attempt(endpoint_id, "evt_d", at_ms=now - 30_000, outcome="deferred", status=None,
                deferred_because="breaker_open", duration_ms=0.0,
                next_attempt_at_ms=now + 60_000, breaker="open"),
    ]  # fmt: skip
    await producer.send(topics.attempts, endpoint_id, records)
    await until_listed(ingest, endpoint_id, len(records))

    stats = await get_json(ingest, f"/v1/endpoints/{endpoint_id}/stats")
    hour, day = stats["last_hour"], stats["last_24h"]
    assert (hour["attempts"], hour["successes"], hour["failures"]) == (99, 98, {"timeout": 1})
    assert hour["deferred"] == 1
    assert (day["attempts"], day["failures"]) == (100, {"5xx": 1, "timeout": 1})
    assert day["success_rate"] == 0.98
    # Buckets are 2^(1/8) wide: 10 ms reads as at most 9 % more.
    assert 10.0 <= day["duration"]["p50_ms"] <= 10.9
    assert 900.0 <= day["duration"]["p99_ms"] <= 981.0
    assert stats["breaker"] == "open"
    assert stats["waiting"] == 2
    assert stats["last_error"]["outcome"] == "timeout"
    assert stats["last_error"]["error"] == "read timed out"


async def test_the_last_error_says_when_the_endpoint_recovered(
    ingest: Client, producer: KeyedProducer, topics: Topics
) -> None:
    endpoint_id = await create_endpoint(ingest)
    start = now_ms() - 60_000
    sent = 0

    async def last_error_after(*records: AttemptRecord) -> Any:
        nonlocal sent
        sent += len(records)
        await producer.send(topics.attempts, endpoint_id, list(records))
        await until_listed(ingest, endpoint_id, sent)
        return (await get_json(ingest, f"/v1/endpoints/{endpoint_id}/stats"))["last_error"]

    failing = await last_error_after(
        attempt(endpoint_id, "evt_1", at_ms=start, outcome="http_5xx", status=500),
        attempt(endpoint_id, "evt_2", at_ms=start + 1_000, outcome="timeout", status=None),
    )
    assert (failing["outcome"], failing["recovered_at"]) == ("timeout", None)
    recovered = await last_error_after(
        attempt(endpoint_id, "evt_3", at_ms=start + 2_000),
        attempt(endpoint_id, "evt_4", at_ms=start + 3_000),
    )
    # The first success after the error.
    assert to_ms(datetime.fromisoformat(recovered["recovered_at"])) == start + 2_000
    failing_again = await last_error_after(
        attempt(endpoint_id, "evt_5", at_ms=start + 4_000, outcome="http_5xx", status=502),
    )
    assert (failing_again["status"], failing_again["recovered_at"]) == (502, None)


async def test_dead_letters_show_history_and_whether_replayed(
    ingest: Client, producer: KeyedProducer, topics: Topics
) -> None:
    endpoint_id = await create_endpoint(ingest)
    dead_at = now_ms() - 60_000
    letters = [
        dead_letter(
            endpoint_id,
            f"evt_{n}",
            [attempt(endpoint_id, f"evt_{n}", outcome="http_5xx", status=500, at_ms=dead_at)],
            dead_at_ms=dead_at + n,
        )
        for n in range(3)
    ]
    placed = await producer.send(topics.dlq, endpoint_id, letters)
    partition, first_offset = placed[0]
    # A job replayed the first two; the delivery log then shows the first one delivered.
    job = replay_job(endpoint_id, partition=partition, end_offset=first_offset + 2)
    await producer.send(topics.replays, job.id, [job])
    delivered = attempt(endpoint_id, "evt_0", at_ms=dead_at + 30_000, attempt=2)
    await producer.send(topics.attempts, endpoint_id, [delivered])
    await until_listed(ingest, endpoint_id, 1)
    path = f"/v1/endpoints/{endpoint_id}/dead-letters"

    async def all_listed() -> bool:
        page = await get_json(ingest, path)
        return len(page["data"]) == 3 and page["data"][-1]["replayed"]

    await eventually(all_listed)
    page = await get_json(ingest, path)
    assert [(d["event_id"], d["replayed"], d["delivery"]) for d in page["data"]] == [
        ("evt_2", False, "dead"),
        ("evt_1", True, "dead"),
        ("evt_0", True, "delivered"),
    ]
    assert page["data"][2]["replay_id"] == job.id
    assert page["data"][0]["attempts"][0]["status"] == 500
    assert page["data"][0]["reason"] == "exhausted"
    stats = await get_json(ingest, f"/v1/endpoints/{endpoint_id}/stats")
    assert stats["dead_letters_open"] == 1
    paged = await all_pages(ingest, path, limit="2")
    assert [d["id"] for d in paged] == [d["id"] for d in page["data"]]


async def test_attempt_detail_shows_the_request_read_back_from_the_topic(
    ingest: Client, producer: KeyedProducer, topics: Topics
) -> None:
    endpoint_id = await create_endpoint(ingest)
    sent = attempt(
        endpoint_id,
        "evt_d",
        request_headers={"webhook-id": webhook_id("evt_d", endpoint_id), "user-agent": "x"},
        request_body='{"type":"link.clicked"}',
    )
    await producer.send(topics.attempts, endpoint_id, [sent])
    await until_listed(ingest, endpoint_id, 1)
    page = await get_json(ingest, f"/v1/endpoints/{endpoint_id}/attempts")
    attempt_id = page["data"][0]["id"]

    detail = await get_json(ingest, f"/v1/endpoints/{endpoint_id}/attempts/{attempt_id}")
    assert detail["request_available"] is True
    assert detail["request_headers"]["user-agent"] == "x"
    assert detail["request_body"] == '{"type":"link.clicked"}'
    assert detail["status"] == 200
    for missing in ("att_0_999999", "att_x", "dlq_0_0"):
        response = await ingest.get(
            f"/v1/endpoints/{endpoint_id}/attempts/{missing}", headers=auth(ACCOUNT_A)
        )
        assert response.status == 404, missing


async def test_a_retry_shows_the_body_its_run_s_first_attempt_logged(
    ingest: Client, producer: KeyedProducer, topics: Topics
) -> None:
    """A later attempt of a run does not copy the body it sent again (``request_body_of``):
    its detail shows the first attempt's, read back from that record."""
    endpoint_id = await create_endpoint(ingest)
    at_ms = now_ms()
    first = attempt(
        endpoint_id,
        "evt_r",
        at_ms=at_ms,
        outcome="http_5xx",
        status=503,
        request_headers={"user-agent": "x"},
        request_body='{"type":"link.clicked","n":1}',
    )
    other = attempt(
        endpoint_id, "evt_other", at_ms=at_ms + 1, request_body='{"type":"link.clicked","n":2}'
    )
    second = attempt(
        endpoint_id, "evt_r", at_ms=at_ms + 2, attempt=2,
        request_headers={"user-agent": "x"}, request_body_of=1,
    )  # fmt: skip
    await producer.send(topics.attempts, endpoint_id, [first, other, second])
    await until_listed(ingest, endpoint_id, 3)
    page = await get_json(ingest, f"/v1/endpoints/{endpoint_id}/attempts")
    newest = page["data"][0]
    assert newest["attempt"] == 2

    detail = await get_json(ingest, f"/v1/endpoints/{endpoint_id}/attempts/{newest['id']}")
    assert detail["request_available"] is True
    assert detail["request_body"] == '{"type":"link.clicked","n":1}'
    assert detail["request_headers"] == {"user-agent": "x"}


async def test_test_event_goes_to_clicks_addressed_to_the_endpoint(
    ingest: Client, kafka_bootstrap: str, topics: Topics
) -> None:
    endpoint_id = await create_endpoint(ingest)
    response = await ingest.post(f"/v1/endpoints/{endpoint_id}/test", headers=auth(ACCOUNT_A))
    assert response.status == 202
    sent = await response.json()
    assert sent["webhook_id"] == webhook_id(sent["event_id"], endpoint_id)

    (record,) = await read_records(kafka_bootstrap, topics.clicks, 1)
    assert header_value(record.headers, HEADER_ENDPOINT) == endpoint_id
    event = orjson.loads(record.value)
    assert event["id"] == sent["event_id"]
    assert event["test"] is True
    assert event["account_id"] == "acc_a"
    assert event["type"] == "link.clicked"


async def test_test_event_to_a_disabled_endpoint_is_409(ingest: Client) -> None:
    endpoint_id = await create_endpoint(ingest)
    response = await ingest.patch(
        f"/v1/endpoints/{endpoint_id}", json={"enabled": False}, headers=auth(ACCOUNT_A)
    )
    assert response.status == 200
    response = await ingest.post(f"/v1/endpoints/{endpoint_id}/test", headers=auth(ACCOUNT_A))
    assert response.status == 409


def _rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


async def test_the_endpoint_shows_its_delivery_health_in_short(
    ingest: Client, producer: KeyedProducer, topics: Topics
) -> None:
    endpoint_id = await create_endpoint(ingest)
    records = [
        attempt(endpoint_id, "evt_1"),
        attempt(endpoint_id, "evt_2", outcome="http_5xx", status=503, error="busy",
                next_attempt_at_ms=now_ms() + 60_000),
    ]  # fmt: skip
    await producer.send(topics.attempts, endpoint_id, records)
    await until_listed(ingest, endpoint_id, 2)

    shown = await get_json(ingest, f"/v1/endpoints/{endpoint_id}")
    assert shown["id"] == endpoint_id
    delivery = shown["delivery"]
    assert (delivery["attempts_24h"], delivery["success_rate_24h"]) == (2, 0.5)
    assert delivery["waiting"] == 1
    assert delivery["last_error"]["status"] == 503


async def test_a_publish_token_may_not_read_deliveries(ingest: Client) -> None:
    response = await ingest.get("/v1/events/evt_x/attempts", headers=auth(PUBLISH))
    assert response.status == 403
    assert (await response.json())["error"]["code"] == "insufficient_scope"
