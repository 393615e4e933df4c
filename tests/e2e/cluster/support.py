"""What the cluster tests share: readiness watched through faults, the ids a topic holds, and
the deliveries a receiver saw, per click."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import orjson

from shared.kafka.window import read_window
from shared.model.messages import decode_dead_letter
from shared.ops.settings import load_settings
from tests.e2e.conftest import Pipeline
from tests.support.receiver import Received, Receiver

REPLICATED = {"CLICKHOOK_TOPIC_REPLICATION": "3"}
READYZ_EVERY_S = 0.5


def event_id_of(arrival: Received) -> str:
    event_id: str = orjson.loads(arrival.body)["data"]["id"]
    return event_id


def delivered(arrivals: list[Received]) -> Counter[str]:
    """Event id → 2xx answers it got (one endpoint per click in these tests)."""
    return Counter(event_id_of(a) for a in arrivals if 200 <= a.status < 300)


async def topic_values(pipeline: Pipeline, name: str) -> list[bytes]:
    """Every record of a topic as it is now, read from the beginning."""
    settings = load_settings(
        {"CLICKHOOK_KAFKA_BOOTSTRAP": pipeline.bootstrap, "CLICKHOOK_TOPIC_PREFIX": pipeline.prefix}
    )
    return [record.value async for record in read_window(settings, pipeline.topic(name), 0)]


async def logged_click_ids(pipeline: Pipeline) -> set[str]:
    """The ids of every click in the ``clicks`` log."""
    return {orjson.loads(value)["id"] for value in await topic_values(pipeline, "clicks")}


async def dead_letter_reasons(pipeline: Pipeline) -> dict[str, str]:
    """Event id → why its delivery was dead-lettered."""
    letters = [decode_dead_letter(value) for value in await topic_values(pipeline, "webhook.dlq")]
    return {letter.envelope.event_id: letter.reason for letter in letters}


async def settle(
    pipeline: Pipeline, receiver: Receiver, ids: set[str], timeout_s: float
) -> tuple[Counter[str], dict[str, str]]:
    """Wait until every click of ``ids`` was delivered or dead-lettered (or time runs out);
    the deliveries per click and the dead letters' reasons."""
    deadline = time.monotonic() + timeout_s
    while True:
        counts, dead = delivered(receiver.received), await dead_letter_reasons(pipeline)
        if ids <= set(counts) | set(dead) or time.monotonic() > deadline:
            return counts, dead
        await asyncio.sleep(1.0)


@dataclass
class ReadinessWatch:
    """Polls every service's /readyz through a run: how long each was not ready, and whether
    any process exited."""

    pipeline: Pipeline
    unready_s: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    exited: set[str] = field(default_factory=set)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ReadinessWatch]:
        task = asyncio.create_task(self._watch())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self) -> None:
        timeout = aiohttp.ClientTimeout(total=READYZ_EVERY_S * 2)
        while True:
            started = time.monotonic()
            for name, service in list(self.pipeline.services.items()):
                if service.process is not None and service.process.poll() is not None:
                    self.exited.add(name)
                    continue
                if not await self._ready(service.port, timeout):
                    self.unready_s[name] += READYZ_EVERY_S
            await asyncio.sleep(max(0.0, READYZ_EVERY_S - (time.monotonic() - started)))

    async def _ready(self, port: int, limit: aiohttp.ClientTimeout) -> bool:
        url = f"http://127.0.0.1:{port}/readyz"
        try:
            async with self.pipeline.session.get(url, timeout=limit) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def all_ready(self, within_s: float) -> bool:
        """True once every running service answers ready (recovered on its own)."""
        timeout = aiohttp.ClientTimeout(total=2)
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            running = [s for n, s in self.pipeline.services.items() if n not in self.exited]
            if all([await self._ready(s.port, timeout) for s in running]):
                return True
            await asyncio.sleep(READYZ_EVERY_S)
        return False
