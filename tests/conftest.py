"""Fixtures shared by every test: the real broker, a unique topic prefix, receivers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Generator
from pathlib import Path

import pytest
from aiokafka.errors import KafkaError
from hypothesis import settings

from tests.support import services
from tests.support.broker import PrivateBroker
from tests.support.receiver import Receiver
from tests.support.topics import delete_topics_of

DELETE_TIMEOUT_S = 10.0
# Lines of each service's log that go with a failed test's report.
FAILURE_LOG_LINES = 80

# No time limit per example: on the 2-core machine with a broker beside the suite, a first
# example or a busy moment took longer than hypothesis's 200 ms default and failed a test that
# checks what is computed, not how fast (speed is make bench's).
settings.register_profile("clickhook", deadline=None)
settings.load_profile("clickhook")


def pytest_runtest_setup() -> None:
    services.STARTED.clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport() -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report carries the logs of the services it started: a click that never
    arrived in CI is otherwise a timeout and nothing more."""
    report = yield
    if report.failed:
        for service in services.STARTED:
            report.sections.append(
                (f"{service.name} log ({service.log_path})", service.log_tail(FAILURE_LOG_LINES))
            )
    return report


@pytest.fixture(name="kafka_bootstrap", scope="session")
def fixture_kafka_bootstrap() -> str:
    bootstrap = os.environ.get("CLICKHOOK_KAFKA_BOOTSTRAP")
    if not bootstrap:
        pytest.fail(
            "CLICKHOOK_KAFKA_BOOTSTRAP is not set: run `make test`, which starts a broker "
            "(deploy/local/kafka.sh start), or deselect with -m 'not kafka'"
        )
    return bootstrap


@pytest.fixture(name="prefix")
async def fixture_prefix() -> AsyncIterator[str]:
    """Topics and groups of one test never meet another test's; its topics are deleted after
    it (on the broker of ``make test``, when there is one)."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    yield prefix
    bootstrap = os.environ.get("CLICKHOOK_KAFKA_BOOTSTRAP")
    if bootstrap:
        # A broker that a test stopped or left unreachable keeps the topics: not this test's
        # failure to report.
        with contextlib.suppress(KafkaError, OSError, asyncio.TimeoutError):
            await asyncio.wait_for(delete_topics_of(bootstrap, prefix), DELETE_TIMEOUT_S)


@pytest.fixture(name="private_broker")
async def fixture_private_broker(tmp_path: Path) -> AsyncIterator[PrivateBroker]:
    """A broker of this test's own, for tests that stop it."""
    broker = PrivateBroker.in_dir(tmp_path)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


@pytest.fixture(name="receiver")
async def fixture_receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    await receiver.start()
    yield receiver
    await receiver.stop()
