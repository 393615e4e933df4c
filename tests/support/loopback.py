"""Serving a test's aiohttp app on 127.0.0.1 at a free port."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from aiohttp import web


async def read_http_request(reader: asyncio.StreamReader) -> bytes:
    """One HTTP/1.1 request with a content-length body, read off a raw connection; its head."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)
    return head


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    """The runner (to clean up) and the port. Handlers are cancelled at shutdown, which takes
    at most a second, so a receiver that sleeps never holds a test's teardown."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port: int = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    return runner, port


@dataclass
class LoopbackReceiver:
    """What the tests' fake receivers share: serving POSTs on 127.0.0.1 and waking waiters as
    requests arrive. Subclasses record requests in ``_handle`` and call ``_arrived_one``."""

    default_path: ClassVar[str] = "/hook"
    port: int = 0
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def url(self, path: str | None = None) -> str:
        return f"http://127.0.0.1:{self.port}{path or self.default_path}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner, self.port = await serve(app)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        raise NotImplementedError

    async def _arrived_one(self) -> None:
        async with self._arrived:
            self._arrived.notify_all()

    async def _until(self, done: Callable[[], bool], timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s), self._arrived:
            await self._arrived.wait_for(done)
