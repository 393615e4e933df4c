"""Ingest never answers 202 for events the broker did not acknowledge."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.ingest.app import create_app
from shared.runtime import kafka_runtime
from tests.integration.conftest import PUBLISH, AiohttpClient, auth, make_settings
from tests.support.services import ROOT

pytestmark = pytest.mark.kafka


async def test_broker_down_is_a_503_with_retry_after(
    private_broker: str, prefix: str, tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    settings = make_settings(private_broker, prefix, publish_timeout_s=2.0)
    event: dict[str, Any] = {
        "type": "link.clicked",
        "occurred_at": datetime.now(UTC).isoformat(),
        "account_id": "acc_a",
        "link": {"id": "lnk_1"},
    }
    async with kafka_runtime(settings) as rt:
        await rt.endpoints.loaded.wait()
        client = await aiohttp_client(create_app(rt))
        before = await client.post("/v1/clicks", json=event, headers=auth(PUBLISH))
        stopping = await asyncio.create_subprocess_exec(
            "bash",
            str(ROOT / "deploy" / "local" / "kafka.sh"),
            "stop",
            env={**os.environ, "KAFKA_STATE_DIR": str(tmp_path / "kafka")},
            stdout=asyncio.subprocess.DEVNULL,
        )
        assert await stopping.wait() == 0
        after = await client.post("/v1/clicks", json=event, headers=auth(PUBLISH))
        error = (await after.json())["error"]

    assert before.status == 202
    assert after.status == 503
    assert after.headers["retry-after"] == "5"
    assert error["code"] == "broker_unavailable"
