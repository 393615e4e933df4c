"""The delivery log after a restart of ingest (a real process) on the same state directory:
resumed from the index it left (not read again from the topics' beginning), the same pages, and
a cursor from before the restart still valid after it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from shared.model.topics import Topics
from tests.e2e.conftest import ACCOUNT_ID, ACCOUNT_TOKEN
from tests.support.attempts import KeyedProducer, attempt, eventually, now_ms
from tests.support.services import ServiceProcess, launch, service_env

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

HEADERS = {"authorization": f"Bearer {ACCOUNT_TOKEN}"}


async def get_json(session: aiohttp.ClientSession, url: str, **query: str) -> Any:
    async with session.get(url, params=query, headers=HEADERS) as response:
        assert response.status == 200, await response.text()
        return await response.json()


def opened_events(log_path: Path) -> list[dict[str, Any]]:
    """The ``delivery_log_opened`` lines a process logged (JSON lines)."""
    lines = log_path.read_text().splitlines()
    events = [orjson.loads(line) for line in lines if '"delivery_log_opened"' in line]
    return [e for e in events if e.get("event") == "delivery_log_opened"]


async def test_a_restart_resumes_the_index_it_left(
    kafka_bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    env = service_env(
        kafka_bootstrap,
        prefix,
        CLICKHOOK_API_KEYS=f"{ACCOUNT_TOKEN}:account:{ACCOUNT_ID}",
        CLICKHOOK_STATE_DIR=str(state_dir),
    )
    ingest: ServiceProcess = (await launch(("ingest",), env, tmp_path))["ingest"]
    async with aiohttp.ClientSession() as session:
        base_url = f"http://127.0.0.1:{ingest.port}"
        async with session.post(
            f"{base_url}/v1/endpoints", json={"url": "http://127.0.0.1:9/x"}, headers=HEADERS
        ) as response:
            endpoint_id = (await response.json())["id"]
        start = now_ms() - 600_000
        records = [
            attempt(endpoint_id, f"evt_{i:02}", account_id=ACCOUNT_ID, at_ms=start + i * 1000)
            for i in range(60)
        ]
        async with KeyedProducer(kafka_bootstrap) as producer:
            await producer.send(Topics(prefix).attempts, endpoint_id, records)
        log_path = f"/v1/endpoints/{endpoint_id}/attempts"

        async def all_indexed() -> bool:
            page = await get_json(session, f"{base_url}{log_path}", limit="100")
            return len(page["data"]) == 60 and bool(page["index"]["caught_up"])

        await eventually(all_indexed)
        first = await get_json(session, f"{base_url}{log_path}", limit="20")
        second = await get_json(session, f"{base_url}{log_path}", limit="20",
                                cursor=first["next_cursor"])  # fmt: skip
        stats = await get_json(session, f"{base_url}/v1/endpoints/{endpoint_id}/stats")
        assert ingest.terminate() == 0
        (kept,) = [p.name for p in state_dir.iterdir() if p.suffix == ".sqlite3"]
        assert kept.startswith("clickhook-delivery-index-"), "the index outlives its process"

        restarted = (await launch(("ingest",), env, tmp_path))["ingest"]
        try:
            base_url = f"http://127.0.0.1:{restarted.port}"
            await eventually(all_indexed)
            assert await get_json(session, f"{base_url}{log_path}", limit="20") == first
            again = await get_json(session, f"{base_url}{log_path}", limit="20",
                                   cursor=first["next_cursor"])  # fmt: skip
            assert again == second
            restarted_stats = await get_json(
                session, f"{base_url}/v1/endpoints/{endpoint_id}/stats"
            )
            assert restarted_stats == stats
            opened = opened_events(restarted.log_path)
            assert [e["resumed"] for e in opened][-1] is True, opened
        finally:
            restarted.terminate()
