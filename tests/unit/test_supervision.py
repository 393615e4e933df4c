"""Supervised background tasks: a task that dies fails the service, loudly and at once."""

from __future__ import annotations

import asyncio

import pytest

from shared.ops.health import Readiness
from shared.ops.supervision import BackgroundTaskFailed, Supervisor


class Broken(RuntimeError):
    pass


async def _fails() -> None:
    await asyncio.sleep(0)
    raise Broken("injected")


async def _returns() -> None:
    await asyncio.sleep(0)


async def _runs() -> None:
    await asyncio.Event().wait()


@pytest.fixture(name="stop")
def fixture_stop() -> asyncio.Event:
    return asyncio.Event()


@pytest.fixture(name="readiness")
def fixture_readiness(stop: asyncio.Event) -> Readiness:
    return Readiness(draining_on=stop)


@pytest.fixture(name="supervisor")
def fixture_supervisor(readiness: Readiness, stop: asyncio.Event) -> Supervisor:
    return Supervisor(readiness, stop)


async def test_a_running_task_has_a_green_check_named_for_it(
    supervisor: Supervisor, readiness: Readiness
) -> None:
    supervisor.start("follower", _runs())
    await asyncio.sleep(0)

    ready, checks = readiness.report()

    assert ready
    assert checks["follower"] is True
    await supervisor.close()


async def test_a_task_that_raises_turns_its_check_red_and_stops_the_service(
    supervisor: Supervisor, readiness: Readiness, stop: asyncio.Event
) -> None:
    task = supervisor.start("follower", _fails())
    await asyncio.wait([task])
    await asyncio.sleep(0)  # done callbacks run on the next loop turn

    ready, checks = readiness.report()

    assert not ready
    assert checks["follower"] is False
    assert stop.is_set()
    assert supervisor.failure is not None
    assert isinstance(supervisor.failure.cause, Broken)


async def test_a_task_that_returns_fails_the_service_too(
    supervisor: Supervisor, stop: asyncio.Event
) -> None:
    task = supervisor.start("probe", _returns())
    await asyncio.wait([task])
    await asyncio.sleep(0)

    assert stop.is_set()
    with pytest.raises(BackgroundTaskFailed, match="background task probe returned"):
        supervisor.raise_if_failed()


async def test_tasks_cancelled_at_close_are_not_failures(
    supervisor: Supervisor, stop: asyncio.Event
) -> None:
    supervisor.start("follower", _runs())
    supervisor.start("probe", _runs())
    await asyncio.sleep(0)

    await supervisor.close()

    assert not stop.is_set()
    supervisor.raise_if_failed()


async def test_the_first_failure_is_the_one_reported(supervisor: Supervisor) -> None:
    first = supervisor.start("first", _fails())
    await asyncio.wait([first])
    await asyncio.sleep(0)
    second = supervisor.start("second", _fails())
    await asyncio.wait([second])
    await asyncio.sleep(0)

    assert supervisor.failure is not None
    assert supervisor.failure.task == "first"


async def test_two_tasks_may_not_share_a_name(supervisor: Supervisor) -> None:
    supervisor.start("follower", _runs())

    with pytest.raises(ValueError, match="already supervised"):
        supervisor.start("follower", _runs())
    await supervisor.close()


async def test_a_task_cancelled_by_name_is_not_a_failure_and_others_run_on(
    supervisor: Supervisor, readiness: Readiness, stop: asyncio.Event
) -> None:
    supervisor.start("writer", _runs())
    follower = supervisor.start("follower", _runs())
    await asyncio.sleep(0)

    await supervisor.cancel("writer")
    ready, checks = readiness.report()

    assert ready
    assert "writer" not in checks
    assert not stop.is_set()
    assert not follower.done()
    await supervisor.close()
