"""A real aiohttp webhook receiver on 127.0.0.1 that records what it gets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from tests.support.loopback import LoopbackReceiver

# (the request, how many requests that path had before it) -> status
Responder = Callable[["Received", int], int]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at_s: float
    status: int = 0  # what the receiver answered


@dataclass
class Receiver(LoopbackReceiver):
    """Answers each request with ``respond(request, n)`` after ``delay_s``; n counts earlier
    requests to the same path, so one receiver can play many endpoints (one path each)."""

    respond: Responder = lambda _request, _n: 200
    delay_s: float = 0.0
    received: list[Received] = field(default_factory=list)
    _per_path: dict[str, int] = field(default_factory=dict)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        received = Received(request.path, dict(request.headers), body, time.time())
        earlier = self._per_path.get(request.path, 0)
        self._per_path[request.path] = earlier + 1
        received.status = self.respond(received, earlier)
        self.received.append(received)
        await self._arrived_one()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return web.Response(status=received.status, text="ok")

    def on_path(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def wait_for(self, count: int, timeout_s: float) -> list[Received]:
        return await self.wait_until(lambda: len(self.received) >= count, timeout_s)

    async def wait_until(self, done: Callable[[], bool], timeout_s: float) -> list[Received]:
        await self._until(done, timeout_s)
        return list(self.received)
