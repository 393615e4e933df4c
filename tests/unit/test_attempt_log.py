"""The delivery log's writer never makes a delivery wait or fail, and says what it dropped.

The producer here is a stand-in that fails or stalls on demand; the broker outage itself is
tested end to end in tests/e2e/test_attempt_log.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import REGISTRY

from shared.delivery.attempt_log import AttemptLog
from shared.model.messages import AttemptRecord, decode_attempt


class StandInProducer:
    """Sends succeed, fail at once, or wait until released, as the test says."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.fail = False
        self.stalled = asyncio.Event()
        self.stalled.set()

    async def send(self, topic: str, *, key: bytes, value: bytes) -> asyncio.Future[Any]:
        await self.stalled.wait()
        if self.fail:
            raise TimeoutError("the buffer stayed full")
        self.sent.append(value)
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def flush(self) -> None:
        return None


def record(n: int) -> AttemptRecord:
    return AttemptRecord(
        webhook_id=f"msg_{n}",
        event_id=f"evt_{n}",
        endpoint_id="ep_1",
        account_id="acc_1",
        attempt=1,
        at_ms=n,
        duration_ms=1.0,
        outcome="success",
    )


def dropped(service: str, reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "clickhook_attempt_log_dropped_total", {"service": service, "reason": reason}
    )
    return value or 0.0


@pytest.fixture(name="producer")
def fixture_producer() -> StandInProducer:
    return StandInProducer()


async def test_records_are_written_in_the_background(producer: StandInProducer) -> None:
    log = AttemptLog(producer, "webhook.attempts", service="unit-ok")
    writer = asyncio.create_task(log.run())
    for n in range(5):
        log.record(record(n))
    await asyncio.sleep(0.01)
    writer.cancel()

    assert [decode_attempt(v).webhook_id for v in producer.sent] == [f"msg_{n}" for n in range(5)]


async def test_a_stalled_broker_never_blocks_a_delivery_and_bounds_memory(
    producer: StandInProducer,
) -> None:
    """10,000 records while every send is stuck: handing each over returns at once, at most
    ``max_queued`` wait, and the rest are counted as dropped."""
    producer.stalled.clear()
    log = AttemptLog(producer, "webhook.attempts", service="unit-stalled", max_queued=100)
    writer = asyncio.create_task(log.run())
    await asyncio.sleep(0)
    before = dropped("unit-stalled", "full")
    for n in range(10_000):
        log.record(record(n))  # no await: a delivery never waits for the log

    assert log.queued <= 100
    assert dropped("unit-stalled", "full") - before >= 10_000 - 101
    producer.stalled.set()
    await asyncio.sleep(0.01)
    writer.cancel()
    assert len(producer.sent) >= 100


async def test_failed_sends_are_counted_and_the_writer_goes_on(producer: StandInProducer) -> None:
    producer.fail = True
    log = AttemptLog(producer, "webhook.attempts", service="unit-failed")
    writer = asyncio.create_task(log.run())
    before = dropped("unit-failed", "send_failed")
    for n in range(3):
        log.record(record(n))
    await asyncio.sleep(0.01)
    producer.fail = False
    log.record(record(99))
    await asyncio.sleep(0.01)
    writer.cancel()

    assert dropped("unit-failed", "send_failed") - before == 3
    assert [decode_attempt(v).webhook_id for v in producer.sent] == ["msg_99"]
