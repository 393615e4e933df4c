"""/healthz, /readyz and /metrics: the small HTTP surface every service exposes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest


class Readiness:
    """Named checks that must all pass, and a draining flag: set by hand, or at once when the
    ``draining_on`` event is set (the service's stop event)."""

    def __init__(self, *, draining_on: asyncio.Event | None = None) -> None:
        self._checks: dict[str, Callable[[], bool]] = {}
        self._draining = False
        self._draining_on = draining_on

    @property
    def draining(self) -> bool:
        return self._draining or (self._draining_on is not None and self._draining_on.is_set())

    @draining.setter
    def draining(self, draining: bool) -> None:
        self._draining = draining

    def add(self, name: str, check: Callable[[], bool]) -> None:
        self._checks[name] = check

    def remove(self, name: str) -> None:
        self._checks.pop(name, None)

    def report(self) -> tuple[bool, dict[str, bool]]:
        results = {name: check() for name, check in self._checks.items()}
        results["not_draining"] = not self.draining
        return all(results.values()), results


READINESS = web.AppKey("readiness", Readiness)


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    ready, checks = request.app[READINESS].report()
    return web.json_response(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status=200 if ready else 503,
    )


async def metrics_endpoint(_: web.Request) -> web.Response:
    response = web.Response(body=generate_latest(REGISTRY))
    response.headers["content-type"] = CONTENT_TYPE_LATEST
    return response


def add_ops_routes(app: web.Application, readiness: Readiness) -> None:
    app[READINESS] = readiness
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)


async def start_ops_server(readiness: Readiness, host: str, port: int) -> web.AppRunner:
    """Serve the ops routes alone (dispatcher and retry); returns the runner to clean up."""
    app = web.Application()
    add_ops_routes(app, readiness)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
