"""Fixtures shared by every test: the real broker, a unique topic prefix, receivers."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.broker import PrivateBroker
from tests.support.receiver import Receiver


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
def fixture_prefix() -> str:
    """Topics and groups of one test never meet another test's."""
    return f"t{uuid.uuid4().hex[:10]}."


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
