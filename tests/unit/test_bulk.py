"""Waiting on the batches a request's records went into: the batches are shared with other
requests, so one request giving up must leave them be."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from shared.kafka.bulk import acknowledged


async def test_a_cancelled_wait_leaves_the_shared_batches_pending() -> None:
    batch: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    waiting = asyncio.create_task(acknowledged([batch]))
    await asyncio.sleep(0)

    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting

    assert not batch.done()


async def test_it_returns_once_every_batch_is_acknowledged() -> None:
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    waiting = asyncio.create_task(acknowledged([first, second]))
    first.set_result(None)
    await asyncio.sleep(0)
    assert not waiting.done()

    second.set_result(None)
    await waiting


async def test_a_failed_batch_fails_the_wait_with_its_error() -> None:
    loop = asyncio.get_running_loop()
    sent, failed = loop.create_future(), loop.create_future()
    sent.set_result(None)
    error = KafkaTimeoutError()
    failed.set_exception(error)

    with pytest.raises(KafkaTimeoutError) as raised:
        await acknowledged([sent, failed])

    assert raised.value is not error  # a copy: other requests raise the same batch's error
