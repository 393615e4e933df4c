"""A service's background tasks under supervision, on the real broker: the endpoint follower
that dies turns /readyz red at once and stops the service, which then fails."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from shared.kafka.service_base import ServiceBase, service_base
from shared.ops.health import add_ops_routes
from shared.ops.settings import Settings
from shared.ops.supervision import BackgroundTaskFailed

pytestmark = pytest.mark.kafka

RED_WITHIN_S = 1.0
POLL_S = 0.02
GIVE_UP_S = 10.0


class FollowerBroke(RuntimeError):
    pass


@contextlib.asynccontextmanager
async def ops_client(base: ServiceBase) -> AsyncIterator[TestClient[Any, Any]]:
    """The ops routes on ``base``, closed before it, as a service's are."""
    app = web.Application()
    add_ops_routes(app, base.readiness)
    async with TestClient(TestServer(app)) as client:
        yield client


def break_the_follower(base: ServiceBase) -> list[float]:
    """Make the follower's next fetch raise; returns where the moment it raised is kept."""
    raised_at: list[float] = []

    async def broken_fetch(*_: Any, **__: Any) -> NoReturn:
        raised_at.append(time.monotonic())
        raise FollowerBroke("injected")

    base.endpoints._consumer.getmany = broken_fetch
    return raised_at


async def red_after(client: TestClient[Any, Any], raised_at: list[float]) -> dict[str, Any]:
    """The first /readyz answer that is not ready, once the follower raised."""
    async with asyncio.timeout(GIVE_UP_S):  # the follower fetches at least once a second
        while True:
            response = await client.get("/readyz")
            if response.status == 503 and raised_at:
                body: dict[str, Any] = await response.json()
                body["after_s"] = time.monotonic() - raised_at[0]
                return body
            await asyncio.sleep(POLL_S)


async def readyz_as_the_follower_breaks(settings: Settings, seen: dict[str, Any]) -> None:
    """Run a service base, break its follower, and keep /readyz before and after in ``seen``.
    The broken follower stops nothing itself (it sets ``base.stop``; the base raises for it on
    its way out), so the ops app still closes first, then the base, as in a service."""
    async with service_base(settings) as base:
        await base.endpoints.loaded.wait()
        async with ops_client(base) as client:
            seen["before"] = (await client.get("/readyz")).status
            seen["red"] = await red_after(client, break_the_follower(base))


async def stopped_by_a_broken_follower(settings: Settings) -> None:
    async with service_base(settings) as base:
        await base.endpoints.loaded.wait()
        break_the_follower(base)
        async with asyncio.timeout(10):
            await base.stop.wait()


async def test_a_follower_that_raises_turns_readyz_red_within_a_second(
    settings: Settings,
) -> None:
    seen: dict[str, Any] = {}
    with pytest.raises(BackgroundTaskFailed):
        await readyz_as_the_follower_breaks(settings, seen)

    assert seen["before"] == 200
    assert seen["red"]["checks"]["endpoint_follower"] is False
    assert seen["red"]["after_s"] < RED_WITHIN_S


async def test_a_follower_that_raises_stops_the_service_and_fails_it(
    settings: Settings,
) -> None:
    with pytest.raises(BackgroundTaskFailed) as failed:
        await stopped_by_a_broken_follower(settings)

    assert failed.value.task == "endpoint_follower"
    assert isinstance(failed.value.cause, FollowerBroke)
