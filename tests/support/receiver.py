"""A real aiohttp webhook receiver on 127.0.0.1 that records what it gets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

Responder = Callable[[int], int]


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at_s: float


@dataclass
class Receiver:
    """Answers each request with ``respond(n)`` (n counts requests from 0) after ``delay_s``."""

    respond: Responder = lambda _: 200
    delay_s: float = 0.0
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        index = len(self.received)
        self.received.append(Received(request.path, dict(request.headers), body, time.time()))
        async with self._arrived:
            self._arrived.notify_all()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return web.Response(status=self.respond(index), text="ok")

    async def wait_for(self, count: int, timeout_s: float) -> list[Received]:
        async with asyncio.timeout(timeout_s), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= count)
        return list(self.received)
