"""The delivery log in PostgreSQL, against the real broker and a real server: two ingest
replicas share one store (both answer, whichever indexes), and a PostgreSQL that goes down, or
a store over its byte budget, degrades only the log's routes (503 with Retry-After) until it
is back, without losing a record; over its budget within one day, it drops its oldest hours
and goes on answering (test_delivery_log_pg_hours: the same at the store)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY

from services.ingest.delivery_log.log import DeliveryLog
from services.ingest.delivery_log.pg_store import PgWriter
from services.ingest.delivery_log.store import HOUR_MS, RESPONSE_BODY_CHARS, Fetched
from shared.kafka.service_base import service_base
from shared.model.messages import encode
from shared.model.topics import Topics
from tests.integration.conftest import (
    ACCOUNT_A,
    assert_only_the_log_is_degraded,
    auth,
    make_settings,
    serving,
)
from tests.support.attempts import KeyedProducer, attempt, eventually, now_ms
from tests.support.postgres import PostgresServer, running_postgres

pytestmark = pytest.mark.kafka

Client = TestClient[Any, Any]
REPLICAS = 2
# An empty store takes 376 KiB; past this, the current hour's attempts alone are over the budget.
SMALL_BUDGET = 512 * 1024
FILL_ATTEMPTS = 300
# Five hours of them fit in one page of the listing (250).
HOUR_ATTEMPTS = 40
# The budget's check, every 60 s in service.
CHECK_EVERY_S = 0.2
# The longest the tests of the current hour take, with room (``clear_of_the_hour_turning``).
HOUR_MARGIN_S = 150  # the full-store test alone can wait 3 x 30 s, plus replicas starting
ANSWER = "<html>" + "x" * (RESPONSE_BODY_CHARS - 6)


@pytest.fixture(name="own_postgres")
def fixture_own_postgres() -> Iterator[PostgresServer]:
    """A server of this test's own, which it stops and starts."""
    with running_postgres() as server:
        yield server


async def replica(
    kafka_bootstrap: str, prefix: str, url: str, **overrides: Any
) -> AsyncGenerator[Client]:
    """An ingest on its own base; ``aclose()`` closes the app, then the base."""
    settings = make_settings(kafka_bootstrap, prefix, delivery_log_url=url, **overrides)
    delivery_log = DeliveryLog(settings, expire_every_s=CHECK_EVERY_S)
    async with service_base(settings) as base:
        await base.endpoints.loaded.wait()
        async with serving(base, delivery_log=delivery_log) as client:
            yield client


@pytest.fixture(name="replicas")
async def fixture_replicas(
    kafka_bootstrap: str, prefix: str, postgres: PostgresServer
) -> AsyncIterator[list[Client]]:
    url = postgres.new_schema()
    first = replica(kafka_bootstrap, prefix, url)
    second = replica(kafka_bootstrap, prefix, url)
    clients = [await anext(first), await anext(second)]
    yield clients
    for started in (second, first):
        await started.aclose()


async def create_endpoint(ingest: Client) -> str:
    created = await ingest.post(
        "/v1/endpoints", json={"url": "http://127.0.0.1:9/hook"}, headers=auth(ACCOUNT_A)
    )
    assert created.status == 201, await created.text()
    endpoint_id: str = (await created.json())["id"]
    return endpoint_id


async def listed(ingest: Client, endpoint_id: str) -> list[str] | None:
    """The event ids of the endpoint's first page; None while the log answers 503."""
    response = await ingest.get(
        f"/v1/endpoints/{endpoint_id}/attempts", params={"limit": "250"}, headers=auth(ACCOUNT_A)
    )
    if response.status == 503:
        return None
    assert response.status == 200, await response.text()
    return [a["event_id"] for a in (await response.json())["data"]]


async def test_every_replica_answers_from_the_one_store_and_each_record_counts_once(
    replicas: list[Client], kafka_bootstrap: str, prefix: str
) -> None:
    endpoints = [await create_endpoint(replicas[0]) for _ in range(6)]
    base = now_ms() - 60_000
    async with KeyedProducer(kafka_bootstrap) as producer:
        for n, endpoint_id in enumerate(endpoints):
            records = [attempt(endpoint_id, f"evt_{n}_{i}", at_ms=base + i) for i in range(5)]
            await producer.send(Topics(prefix).attempts, endpoint_id, records)

    async def all_listed() -> bool:
        for ingest in replicas:
            for endpoint_id in endpoints:
                if len(await listed(ingest, endpoint_id) or []) != 5:
                    return False
        return True

    await eventually(all_listed, timeout_s=30.0)
    for ingest in replicas:
        stats = await ingest.get(f"/v1/endpoints/{endpoints[0]}/stats", headers=auth(ACCOUNT_A))
        assert (await stats.json())["last_hour"]["attempts"] == 5  # once, whoever indexed it


async def test_a_down_postgresql_degrades_only_the_log_routes_and_recovers(
    own_postgres: PostgresServer,
    kafka_bootstrap: str,
    prefix: str,
) -> None:
    started = replica(kafka_bootstrap, prefix, own_postgres.new_schema())
    ingest = await anext(started)
    try:
        endpoint_id = await create_endpoint(ingest)
        topic = Topics(prefix).attempts
        async with KeyedProducer(kafka_bootstrap) as producer:
            await producer.send(topic, endpoint_id, [attempt(endpoint_id, "evt_before")])
            await eventually(lambda: _shows(ingest, endpoint_id, "evt_before"))

            own_postgres.stop()
            await producer.send(topic, endpoint_id, [attempt(endpoint_id, "evt_during")])

            async def degraded() -> bool:
                return await listed(ingest, endpoint_id) is None

            await eventually(degraded, timeout_s=30.0)
            await assert_only_the_log_is_degraded(ingest, endpoint_id)

            own_postgres.start()
            # Back by itself: what was written meanwhile is indexed, and the routes answer.
            await eventually(lambda: _shows(ingest, endpoint_id, "evt_during"), timeout_s=90.0)
            assert REGISTRY.get_sample_value("clickhook_delivery_log_unavailable") == 0
    finally:
        await started.aclose()


async def test_a_store_over_its_budget_with_only_the_current_hour_left_degrades_the_log_only(
    postgres: PostgresServer, kafka_bootstrap: str, prefix: str
) -> None:
    """As a full SQLite index: the log's routes answer 503 `delivery_log_unavailable` (reason
    `full`), nothing else does; the records it refused wait in the topic, and an ingest with
    room (here: a larger budget) indexes every one."""
    await clear_of_the_hour_turning()
    url = postgres.new_schema()
    started = replica(kafka_bootstrap, prefix, url, delivery_log_max_bytes=SMALL_BUDGET)
    ingest = await anext(started)
    try:
        endpoint_id = await create_endpoint(ingest)
        failures_before = _sample("clickhook_delivery_log_failures_total", reason="full")
        async with KeyedProducer(kafka_bootstrap) as producer:
            await producer.send(Topics(prefix).attempts, endpoint_id, _filling(endpoint_id))

            async def over_budget() -> bool:
                return _sample("clickhook_delivery_log_index_bytes") > SMALL_BUDGET

            await eventually(over_budget, timeout_s=30.0)
            # Indexed in one batch while within the budget; the next one does not fit.
            await producer.send(Topics(prefix).attempts, endpoint_id, [_over(endpoint_id)])

            async def degraded() -> bool:
                return await listed(ingest, endpoint_id) is None

            await eventually(degraded, timeout_s=30.0)
            await assert_only_the_log_is_degraded(ingest, endpoint_id)
        assert _sample("clickhook_delivery_log_unavailable") == 1
        assert _sample("clickhook_delivery_log_failures_total", reason="full") > failures_before
        used = _sample("clickhook_delivery_log_index_bytes")
        assert used > _sample("clickhook_delivery_log_budget_bytes") == SMALL_BUDGET
    finally:
        await ingest.close()  # its delivery log leaves the group: the next one indexes all
        await started.aclose()

    roomier = replica(kafka_bootstrap, prefix, url)
    ingest = await anext(roomier)
    try:
        await eventually(lambda: _shows(ingest, endpoint_id, "evt_over"), timeout_s=30.0)
        assert _sample("clickhook_delivery_log_unavailable") == 0
    finally:
        await roomier.aclose()


async def clear_of_the_hour_turning() -> None:
    """Waits, within the last ``HOUR_MARGIN_S`` of an hour, for the next one. The store's
    clock is the real one in a running service: a test of records of the current hour, or of
    which hours the budget keeps, must not see the hour turn (the budget would then drop the
    hour its records are in)."""
    left_ms = HOUR_MS - now_ms() % HOUR_MS
    if left_ms < HOUR_MARGIN_S * 1000:
        await asyncio.sleep(left_ms / 1000 + 1)


def _filling(endpoint_id: str) -> list[Any]:
    """The current hour's failed attempts, each with a receiver's answer of 1 KiB: about
    600 KiB (a minute back, but never in the previous hour, which the budget would drop)."""
    now = now_ms()
    base = max(now - 60_000, now // HOUR_MS * HOUR_MS)
    return [
        attempt(endpoint_id, f"evt_{n:04}", at_ms=base + n, outcome="http_5xx", status=502,
                response_body=ANSWER)
        for n in range(FILL_ATTEMPTS)
    ]  # fmt: skip


def _over(endpoint_id: str) -> Any:
    return attempt(endpoint_id, "evt_over", outcome="http_5xx", status=502, response_body=ANSWER)


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _shows(ingest: Client, endpoint_id: str, event_id: str) -> bool:
    return event_id in (await listed(ingest, endpoint_id) or [])


async def test_over_its_budget_within_one_day_the_store_drops_its_oldest_hours_and_answers(
    postgres: PostgresServer, kafka_bootstrap: str, prefix: str
) -> None:
    """Five hours of attempts (the last four and the current one), past 90 % of the budget:
    the log's routes go on answering, without the oldest hours and saying the log is complete
    after the newest of them, and it indexes the next records. By day the store refused every
    batch until midnight (all of it was the current day). The budget is what the same
    records take in another schema, so they end past 90 % of it."""
    await clear_of_the_hour_turning()
    hour = now_ms() // HOUR_MS
    hours = list(range(hour - 4, hour + 1))
    budget = int(_bytes_of(postgres, _of_hours("ep_dry_run", hours)) / 0.95)
    started = replica(kafka_bootstrap, prefix, postgres.new_schema(), delivery_log_max_bytes=budget)
    ingest = await anext(started)
    try:
        endpoint_id = await create_endpoint(ingest)
        records = _of_hours(endpoint_id, hours)
        async with KeyedProducer(kafka_bootstrap) as producer:
            await producer.send(Topics(prefix).attempts, endpoint_id, records)

            async def dropped_and_said() -> bool:
                """The oldest hours are gone, and the log says it is complete after them (as
                every replica reads it from the store, every few seconds)."""
                shown = set(await listed(ingest, endpoint_id) or [])
                dropped = [h for h in hours if f"evt_{h}_0000" not in shown]
                since = await _complete_since(ingest, endpoint_id)
                return bool(dropped) and since == (dropped[-1] + 1) * HOUR_MS

            await eventually(dropped_and_said, timeout_s=30.0)
            shown = set(await listed(ingest, endpoint_id) or [])
            dropped = [h for h in hours if f"evt_{h}_0000" not in shown]
            assert dropped == hours[: len(dropped)]
            assert shown == {r.event_id for r in records if r.at_ms // HOUR_MS not in dropped}
            await producer.send(Topics(prefix).attempts, endpoint_id, [_over(endpoint_id)])
            await eventually(lambda: _shows(ingest, endpoint_id, "evt_over"), timeout_s=30.0)
        assert _sample("clickhook_delivery_log_unavailable") == 0
    finally:
        await started.aclose()


def _of_hours(endpoint_id: str, hours: list[int]) -> list[Any]:
    """``HOUR_ATTEMPTS`` failed attempts at the start of each hour, each with a 1 KiB answer."""
    return [
        attempt(endpoint_id, f"evt_{hour}_{n:04}", at_ms=hour * HOUR_MS + n, outcome="http_5xx",
                status=502, response_body=ANSWER)
        for hour in hours for n in range(HOUR_ATTEMPTS)
    ]  # fmt: skip


def _bytes_of(postgres: PostgresServer, records: list[Any]) -> int:
    """What ``records`` take in a store of their own (a schema with them alone)."""
    writer = PgWriter(
        postgres.new_schema(), per_endpoint=100_000, max_bytes=1 << 30, now_ms=now_ms()
    )
    try:
        fetched = [Fetched(0, n, encode(record)) for n, record in enumerate(records)]
        writer.add_attempts(fetched, now_ms())
        return writer.used_bytes()
    finally:
        writer.close()


async def _complete_since(ingest: Client, endpoint_id: str) -> int | None:
    page = await ingest.get(f"/v1/endpoints/{endpoint_id}/attempts", headers=auth(ACCOUNT_A))
    since = (await page.json())["index"]["complete_since"]
    return None if since is None else round(datetime.fromisoformat(since).timestamp() * 1000)
