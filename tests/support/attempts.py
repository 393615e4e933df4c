"""Delivery log records (attempts, dead letters, replay jobs) built and produced by a test, as
the deliverer and the replay jobs would write them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaProducer

from shared.model.messages import (
    AttemptRecord,
    DeadLetter,
    DeliveryEnvelope,
    ReplayJob,
    encode,
)
from shared.model.signing import webhook_id

AttemptDefaults = dict[str, Any]


def now_ms() -> int:
    return int(time.time() * 1000)


def attempt(
    endpoint_id: str,
    event_id: str,
    *,
    account_id: str = "acc_a",
    at_ms: int | None = None,
    **fields: Any,
) -> AttemptRecord:
    """An attempt record; a success in 12 ms unless ``fields`` say otherwise."""
    values: dict[str, Any] = {
        "attempt": 1,
        "duration_ms": 12.0,
        "outcome": "success",
        "status": 200,
        "breaker": "closed",
        "service": "dispatcher",
        **fields,
    }
    return AttemptRecord(
        webhook_id=webhook_id(event_id, endpoint_id),
        event_id=event_id,
        endpoint_id=endpoint_id,
        account_id=account_id,
        at_ms=at_ms if at_ms is not None else now_ms(),
        **values,
    )


def dead_letter(
    endpoint_id: str,
    event_id: str,
    history: list[AttemptRecord],
    *,
    account_id: str = "acc_a",
    dead_at_ms: int | None = None,
) -> DeadLetter:
    envelope = DeliveryEnvelope(
        webhook_id=webhook_id(event_id, endpoint_id),
        event_id=event_id,
        endpoint_id=endpoint_id,
        account_id=account_id,
        event={"id": event_id, "type": "link.clicked"},
        attempts_made=len(history),
        tier=len(history),
        due_at_ms=0,
        attempts=history,
    )
    return DeadLetter(
        reason="exhausted",
        dead_at_ms=dead_at_ms if dead_at_ms is not None else now_ms(),
        envelope=envelope,
    )


def replay_job(endpoint_id: str, *, partition: int, end_offset: int, **fields: Any) -> ReplayJob:
    started = now_ms()
    values: dict[str, Any] = {
        "id": f"rpl_{endpoint_id}",
        "account_id": "acc_a",
        "since_ms": 0,
        "until_ms": started + 60_000,
        "position": end_offset,
        "state": "completed",
        "started_at_ms": started,
        "updated_at_ms": started,
        **fields,
    }
    return ReplayJob(
        endpoint_id=endpoint_id, dlq_partition=partition, end_offset=end_offset, **values
    )


class KeyedProducer:
    """Produces structs to a topic, keyed as the services key them; returns where they went."""

    def __init__(self, bootstrap: str) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)

    async def __aenter__(self) -> KeyedProducer:
        await self._producer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._producer.stop()

    async def send(self, topic: str, key: str, messages: list[Any]) -> list[tuple[int, int]]:
        futures = [
            await self._producer.send(topic, key=key.encode(), value=encode(message))
            for message in messages
        ]
        sent = await asyncio.gather(*futures)
        return [(meta.partition, meta.offset) for meta in sent]


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    """Poll ``check`` until it holds: the index follows the topics asynchronously."""
    async with asyncio.timeout(timeout_s):
        while not await check():  # noqa: ASYNC110 - another component's state, over its API
            await asyncio.sleep(0.1)
