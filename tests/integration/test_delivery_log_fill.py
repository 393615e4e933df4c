"""A fresh delivery log index against the real broker, with six hours of attempts (records with
their real, older Kafka timestamps) already in the topics: it serves the newest hour first,
then fills the older history behind it (held by the test to look in between), with no record
twice and cursors still valid; a restart during the fill resumes it; a byte budget too small
for the whole history ends the fill, and ``complete_since`` says what it kept."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiokafka import AIOKafkaProducer

from services.ingest.app import create_app
from services.ingest.delivery_log.api import DELIVERY_LOG
from services.ingest.delivery_log.history import HistoryReader
from services.ingest.delivery_log.log import DeliveryLog
from services.ingest.delivery_log.store import RESPONSE_BODY_CHARS
from shared.kafka.clients import ensure_topics
from shared.kafka.service_base import service_base
from shared.model.messages import AttemptRecord, encode
from shared.model.topics import Topics
from shared.ops.settings import Settings
from tests.integration.conftest import ACCOUNT_A, AiohttpClient, auth, make_settings
from tests.support.attempts import attempt, dead_letter, eventually, now_ms
from tests.support.endpoints import endpoint_to

pytestmark = pytest.mark.kafka

Client = TestClient[Any, Any]
ENDPOINT_ID = "ep_history"
PARTITIONS = 3
HOURS = 6
EVERY_MS = 300_000  # one attempt every five minutes: 72 in six hours
LOG_PATH = f"/v1/endpoints/{ENDPOINT_ID}/attempts"
# Sixteen hours of attempts with 1 KiB answers, one every 30 s (1,920: about 2.7 MB in the
# index), against a budget that holds about eleven of them; an hour (a step of the fill) is
# well below the budget's margin (170 KB), as a batch is of a real budget's.
SMALL_BUDGET = 2 << 20
SMALL_HOURS = 16
SMALL_EVERY_MS = 30_000
ANSWER = "<html>" + "x" * (RESPONSE_BODY_CHARS - 6)


def history(now: int) -> list[AttemptRecord]:
    """Six hours of attempts, oldest first, the newest a minute old."""
    count = HOURS * 3_600_000 // EVERY_MS
    return [
        attempt(ENDPOINT_ID, f"evt_{n:03}", account_id="acc_a", at_ms=now - 60_000 - n * EVERY_MS)
        for n in reversed(range(count))
    ]


async def six_hours_in_the_topics(settings: Settings) -> list[AttemptRecord]:
    """The attempts of ``history`` and the rest of ``produce_history``, in the topics."""
    now = now_ms()
    records = history(now)
    await produce_history(settings, records, now)
    return records


async def produce_history(settings: Settings, records: list[AttemptRecord], now: int) -> None:
    """The endpoint, the attempts across the partitions and two dead letters (3 h and 10 min
    old), each record with its own time as its Kafka timestamp."""
    await ensure_topics(settings)
    topics = Topics(settings.topic_prefix)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        endpoint = endpoint_to("http://127.0.0.1:9/x", endpoint_id=ENDPOINT_ID, account_id="acc_a")
        await producer.send_and_wait(topics.endpoints, encode(endpoint), key=ENDPOINT_ID.encode())
        for n, record in enumerate(records):
            await producer.send(topics.attempts, encode(record), key=ENDPOINT_ID.encode(),
                                partition=n % PARTITIONS, timestamp_ms=record.at_ms)  # fmt: skip
        for event_id, age_ms in (("evt_dead_old", 3 * 3_600_000), ("evt_dead_new", 600_000)):
            letter = dead_letter(ENDPOINT_ID, event_id, [], account_id="acc_a",
                                 dead_at_ms=now - age_ms)  # fmt: skip
            await producer.send(topics.dlq, encode(letter), key=ENDPOINT_ID.encode(),
                                timestamp_ms=letter.dead_at_ms)  # fmt: skip
        await producer.flush()
    finally:
        await producer.stop()


def fill_of(delivery_log: DeliveryLog) -> HistoryReader:
    """The embedded index's history fill (a shared store has none)."""
    assert delivery_log.history is not None
    return delivery_log.history


@asynccontextmanager
async def ingest_on(
    settings: Settings, aiohttp_client: AiohttpClient, batches_allowed: int | None
) -> AsyncIterator[tuple[Client, DeliveryLog]]:
    """An ingest whose delivery log's fill may read ``batches_allowed`` batches (None: all)."""
    async with service_base(settings) as base:
        await base.endpoints.loaded.wait()
        app = create_app(base)
        delivery_log = app[DELIVERY_LOG]
        fill_of(delivery_log).batches_allowed = batches_allowed
        client = await aiohttp_client(app)
        try:
            yield client, delivery_log
        finally:
            await client.close()


async def page(ingest: Client, path: str = LOG_PATH, **query: str) -> Any:
    response = await ingest.get(path, params={"limit": "250", **query}, headers=auth(ACCOUNT_A))
    assert response.status == 200, await response.text()
    return await response.json()


def caught_up_on(ingest: Client) -> Callable[[], Awaitable[bool]]:
    async def caught_up() -> bool:
        return bool((await page(ingest))["index"]["caught_up"])

    return caught_up


def complete_on(ingest: Client) -> Callable[[], Awaitable[bool]]:
    async def complete() -> bool:
        return (await page(ingest))["index"]["complete_since"] is None

    return complete


def event_ids(found: Any) -> list[str]:
    return [a["event_id"] for a in found["data"]]


def since_ms(found: Any) -> int:
    return int(datetime.fromisoformat(found["index"]["complete_since"]).timestamp() * 1000)


@pytest.fixture(name="settings")
def fixture_settings(kafka_bootstrap: str, prefix: str, tmp_path: Path) -> Settings:
    return make_settings(
        kafka_bootstrap, prefix, state_dir=str(tmp_path), delivery_log_resumes=True
    )


async def test_a_fresh_index_serves_the_newest_hour_before_the_older_history(
    settings: Settings, aiohttp_client: AiohttpClient
) -> None:
    records = await six_hours_in_the_topics(settings)
    newest_first = [r.event_id for r in reversed(records)]

    async with ingest_on(settings, aiohttp_client, batches_allowed=0) as (ingest, delivery_log):
        await eventually(caught_up_on(ingest))
        newest_hour = await page(ingest)
        since = since_ms(newest_hour)
        newest_ms = records[-1].at_ms + 60_000  # when they were produced
        assert abs(since - (newest_ms - 3_600_000)) < 30_000, "the newest hour, by Kafka time"
        expected = [r.event_id for r in reversed(records) if r.at_ms >= since]
        assert event_ids(newest_hour) == expected, "the newest hour, whole, and nothing older"
        assert 11 <= len(expected) <= 13
        first = await page(ingest, limit="5")
        letters = await page(ingest, f"/v1/endpoints/{ENDPOINT_ID}/dead-letters")
        assert [d["event_id"] for d in letters["data"]] == ["evt_dead_new"]

        fill_of(delivery_log).batches_allowed = None
        await eventually(complete_on(ingest))
        everything = await page(ingest)
        assert event_ids(everything) == newest_first, "every attempt once, newest first"
        older = await page(ingest, limit="5", cursor=first["next_cursor"])
        assert event_ids(older) == newest_first[5:10], "a cursor from before the fill holds"
        letters = await page(ingest, f"/v1/endpoints/{ENDPOINT_ID}/dead-letters")
        assert [d["event_id"] for d in letters["data"]] == ["evt_dead_new", "evt_dead_old"]


async def test_a_restart_during_the_fill_resumes_it(
    settings: Settings, aiohttp_client: AiohttpClient
) -> None:
    records = await six_hours_in_the_topics(settings)

    async with ingest_on(settings, aiohttp_client, batches_allowed=0) as (ingest, delivery_log):
        await eventually(caught_up_on(ingest))
        newest_hour = event_ids(await page(ingest))
        fill_of(delivery_log).batches_allowed = 1

        async def one_batch_filled() -> bool:
            return len(event_ids(await page(ingest))) > len(newest_hour)

        await eventually(one_batch_filled)
        before = await page(ingest)
        assert before["index"]["complete_since"] is not None, "the fill is not done"
        stats = await page(ingest, f"/v1/endpoints/{ENDPOINT_ID}/stats")

    async with ingest_on(settings, aiohttp_client, batches_allowed=0) as (ingest, delivery_log):
        resumed = await page(ingest)
        assert resumed == before, "the same rows, the fill where it stood"
        assert await page(ingest, f"/v1/endpoints/{ENDPOINT_ID}/stats") == stats
        fill_of(delivery_log).batches_allowed = None
        await eventually(complete_on(ingest))
        assert event_ids(await page(ingest)) == [r.event_id for r in reversed(records)]
        stats = await page(ingest, f"/v1/endpoints/{ENDPOINT_ID}/stats")
        assert stats["last_24h"]["attempts"] == len(records), "no record counted twice"


async def every_page(ingest: Client, path: str) -> list[Any]:
    """Every item of a log's route, following the cursors."""
    found = await page(ingest, path)
    items: list[Any] = found["data"]
    while found["next_cursor"] is not None:
        found = await page(ingest, path, cursor=found["next_cursor"])
        items += found["data"]
    return items


def as_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


async def test_a_budget_too_small_for_the_history_ends_the_fill_and_says_what_it_kept(
    settings: Settings, aiohttp_client: AiohttpClient
) -> None:
    now = now_ms()
    records = [
        attempt(ENDPOINT_ID, f"evt_{n:04}", account_id="acc_a",
                at_ms=now - 60_000 - n * SMALL_EVERY_MS, outcome="http_5xx", status=502,
                response_body=ANSWER)
        for n in reversed(range(SMALL_HOURS * 3_600_000 // SMALL_EVERY_MS))
    ]  # fmt: skip
    await produce_history(settings, records, now)
    small = dataclasses.replace(settings, delivery_log_max_bytes=SMALL_BUDGET)

    async with ingest_on(small, aiohttp_client, batches_allowed=None) as (ingest, delivery_log):

        async def fill_ended() -> bool:
            return (
                bool((await page(ingest))["index"]["caught_up"])
                and not fill_of(delivery_log).wanted
            )

        await eventually(fill_ended)
        since = (await page(ingest))["index"]["complete_since"]
        attempts = {a["event_id"] for a in await every_page(ingest, LOG_PATH)}
        letters_path = f"/v1/endpoints/{ENDPOINT_ID}/dead-letters"
        letters = {d["event_id"] for d in await every_page(ingest, letters_path)}

    assert since is not None, "the budget dropped history: the log is not complete"
    since_ms = as_ms(since)
    missing = [r for r in records if r.event_id not in attempts]
    assert missing, "the budget dropped the oldest attempts"
    assert all(r.at_ms < since_ms for r in missing), "complete since: nothing after it missing"
    assert since_ms <= now - 3_600_000, "the newest hour is kept whole"
    assert max(r.at_ms for r in missing) >= since_ms - SMALL_EVERY_MS, "and no later than that"
    assert "evt_dead_new" in letters
    assert "evt_dead_old" in letters or now - 3 * 3_600_000 < since_ms
