"""The delivery log with its index filled to its limit, against the real broker: click intake,
the endpoint API and readiness go on; only the log's routes answer 503 (with Retry-After), and
the log recovers by itself, never by stopping ingest."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY

from services.ingest.delivery_log.store import RESPONSE_BODY_CHARS
from shared.kafka.service_base import service_base
from shared.model.topics import Topics
from tests.integration.conftest import (
    ACCOUNT_A,
    assert_only_the_log_is_degraded,
    auth,
    make_settings,
    serving,
)
from tests.support.attempts import KeyedProducer, attempt, eventually, now_ms
from tests.support.index_files import fill_to_the_limit

pytestmark = pytest.mark.kafka

Client = TestClient[Any, Any]
BUDGET = 1 << 20
ANSWER = "<html>" + "x" * (RESPONSE_BODY_CHARS - 6)


@pytest.fixture(name="small_ingest")
async def fixture_small_ingest(
    kafka_bootstrap: str, prefix: str, tmp_path: Path
) -> AsyncIterator[Client]:
    settings = make_settings(
        kafka_bootstrap, prefix, state_dir=str(tmp_path), delivery_log_max_bytes=BUDGET
    )
    async with service_base(settings) as base:
        await base.endpoints.loaded.wait()
        async with serving(base) as client:
            yield client


def failed_attempts(endpoint_id: str, first: int, count: int) -> list[Any]:
    base = now_ms() - 3_600_000
    return [
        attempt(endpoint_id, f"evt_{n:04}", account_id="acc_a", at_ms=base + n,
                outcome="http_5xx", status=502, response_body=ANSWER)
        for n in range(first, first + count)
    ]  # fmt: skip


def fill_the_index(state_dir: Path) -> None:
    (index_file,) = state_dir.glob("clickhook-delivery-log-*.sqlite3")
    fill_to_the_limit(index_file, BUDGET // 4096)


def full_failures() -> float:
    value = REGISTRY.get_sample_value("clickhook_delivery_log_failures_total", {"reason": "full"})
    return value or 0.0


async def test_a_full_index_degrades_only_the_log_routes_and_recovers(
    small_ingest: Client, kafka_bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    ingest = small_ingest
    created = await ingest.post(
        "/v1/endpoints", json={"url": "http://127.0.0.1:9/hook"}, headers=auth(ACCOUNT_A)
    )
    endpoint_id = (await created.json())["id"]
    log_path = f"/v1/endpoints/{endpoint_id}/attempts"
    async with KeyedProducer(kafka_bootstrap) as producer:
        await producer.send(
            Topics(prefix).attempts, endpoint_id, failed_attempts(endpoint_id, 0, 5)
        )

        async def indexed(count: int) -> bool:
            response = await ingest.get(log_path, params={"limit": "1"}, headers=auth(ACCOUNT_A))
            if response.status != 200:
                return False
            page = await response.json()
            return bool(page["data"]) and page["data"][0]["event_id"] == f"evt_{count - 1:04}"

        await eventually(lambda: indexed(5))
        await asyncio.to_thread(fill_the_index, tmp_path)
        failures_before = full_failures()
        # More than evicting the index's own rows (five) can make room for.
        await producer.send(
            Topics(prefix).attempts, endpoint_id, failed_attempts(endpoint_id, 5, 300)
        )

        async def degraded() -> bool:
            response = await ingest.get(log_path, headers=auth(ACCOUNT_A))
            return response.status == 503

        await eventually(degraded)
        assert full_failures() > failures_before
        assert REGISTRY.get_sample_value("clickhook_delivery_log_unavailable") == 1

        await assert_only_the_log_is_degraded(ingest, endpoint_id)

        # Recovered by itself: the newest attempt is served again, the index within budget.
        await eventually(lambda: indexed(305), timeout_s=30.0)
        assert REGISTRY.get_sample_value("clickhook_delivery_log_unavailable") == 0
        assert (
            await ingest.get(f"/v1/endpoints/{endpoint_id}", headers=auth(ACCOUNT_A))
        ).status == 200
