"""A producer that stops getting records out is replaced."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from shared.kafka import RenewingProducer


class FakeProducer:
    def __init__(self, wedged: bool) -> None:
        self.wedged = wedged
        self.started = False
        self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send_and_wait(self, topic: str, **_: Any) -> str:
        if self.wedged:
            raise KafkaTimeoutError
        return f"sent to {topic}"


class Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture(name="made")
def fixture_made() -> list[FakeProducer]:
    return []


def renewing(made: list[FakeProducer], clock: Clock) -> RenewingProducer:
    def factory() -> Any:
        made.append(FakeProducer(wedged=not made))  # only the first one is wedged
        return made[-1]

    return RenewingProducer(factory, renew_after_s=30.0, clock=clock)


async def test_a_producer_timing_out_long_enough_is_replaced(made: list[FakeProducer]) -> None:
    clock = Clock()
    producer = renewing(made, clock)
    await producer.start()

    with pytest.raises(KafkaTimeoutError):
        await producer.send_and_wait("t")
    clock.now_s = 31.0
    with pytest.raises(KafkaTimeoutError):
        await producer.send_and_wait("t")
    result = await producer.send_and_wait("t")

    assert result == "sent to t"
    assert len(made) == 2
    assert made[0].stopped
    assert made[1].started


async def test_timeouts_on_one_key_are_not_reset_by_successes_elsewhere() -> None:
    class PartlyWedged(FakeProducer):
        async def send_and_wait(self, topic: str, **kwargs: Any) -> str:
            if self.wedged and kwargs.get("key") == b"stuck":
                raise KafkaTimeoutError
            return f"sent to {topic}"

    made: list[FakeProducer] = []
    clock = Clock()

    def factory() -> Any:
        made.append(PartlyWedged(wedged=not made))
        return made[-1]

    producer = RenewingProducer(factory, renew_after_s=30.0, clock=clock)
    await producer.start()
    for now_s in (0.0, 15.0, 31.0):
        clock.now_s = now_s
        assert await producer.send_and_wait("t", key=b"fine") == "sent to t"
        with pytest.raises(KafkaTimeoutError):
            await producer.send_and_wait("t", key=b"stuck")

    assert await producer.send_and_wait("t", key=b"stuck") == "sent to t"
    assert len(made) == 2


async def test_short_timeouts_do_not_replace_the_producer(made: list[FakeProducer]) -> None:
    clock = Clock()
    producer = renewing(made, clock)
    await producer.start()

    for now_s in (0.0, 10.0, 29.0):
        clock.now_s = now_s
        with pytest.raises(KafkaTimeoutError):
            await producer.send_and_wait("t")

    assert len(made) == 1
    assert not made[0].stopped
