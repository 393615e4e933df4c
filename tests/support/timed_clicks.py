"""Clicks of the past, written to ``clicks`` with their record timestamp at their click time,
as a shortener that produces with its event time does; backfill tests read them by time."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from tests.support.clicks import make_click


def click_at(event_id: str, when: datetime, **fields: Any) -> dict[str, Any]:
    return make_click(event_id, occurred_at=when.isoformat().replace("+00:00", "Z"), **fields)


async def produce_at_click_time(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic,
                key=event["link"]["id"].encode(),
                value=orjson.dumps(event),
                timestamp_ms=int(datetime.fromisoformat(event["occurred_at"]).timestamp() * 1000),
            )
            for event in events
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
