"""Ingest never answers 202 for events the broker did not acknowledge."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from shared.kafka.service_base import service_base
from tests.integration.conftest import PUBLISH, auth, make_settings, serving
from tests.support.broker import PrivateBroker

pytestmark = pytest.mark.kafka


async def test_broker_down_is_a_503_with_retry_after(
    private_broker: PrivateBroker, prefix: str
) -> None:
    settings = make_settings(private_broker.bootstrap, prefix, publish_timeout_s=2.0)
    event: dict[str, Any] = {
        "type": "link.clicked",
        "occurred_at": datetime.now(UTC).isoformat(),
        "account_id": "acc_a",
        "link": {"id": "lnk_1"},
    }
    async with service_base(settings) as base:
        await base.endpoints.loaded.wait()
        # What stops here is the broker, not the service: the app still closes before its
        # base, as ingest shuts down, both with the broker down.
        async with serving(base) as client:
            before = await client.post("/v1/clicks", json=event, headers=auth(PUBLISH))
            await private_broker.stop()
            after = await client.post("/v1/clicks", json=event, headers=auth(PUBLISH))
            error = (await after.json())["error"]

    assert before.status == 202
    assert after.status == 503
    assert after.headers["retry-after"] == "5"
    assert error["code"] == "broker_unavailable"
