"""Per-endpoint concurrency and rate caps."""

from __future__ import annotations

import asyncio

import pytest

from shared.delivery.endpoint_gate import EndpointGate, RecentCount
from shared.model.caps import Share

# --- EndpointGate ---------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


async def test_gate_admits_up_to_max_in_flight_at_once() -> None:
    gate = EndpointGate(max_in_flight=2, max_queued=0, max_wait_s=0.1)

    admitted = [await gate.enter("ep_1", None) for _ in range(3)]

    assert admitted == [True, True, False]
    assert gate.in_flight("ep_1") == 2


async def test_gate_lets_a_waiter_in_when_a_slot_frees_within_the_wait() -> None:
    gate = EndpointGate(max_in_flight=1, max_queued=1, max_wait_s=1.0)
    assert await gate.enter("ep_1", None)

    waiter = asyncio.create_task(gate.enter("ep_1", None))
    await asyncio.sleep(0.05)
    gate.leave("ep_1")

    assert await asyncio.wait_for(waiter, 1.0) is True
    assert gate.in_flight("ep_1") == 1


async def test_gate_defers_a_waiter_after_the_longest_wait() -> None:
    gate = EndpointGate(max_in_flight=1, max_queued=5, max_wait_s=0.05)
    assert await gate.enter("ep_1", None)

    admitted = await asyncio.wait_for(gate.enter("ep_1", None), 1.0)

    assert admitted is False
    assert gate.in_flight("ep_1") == 1


async def test_gate_defers_when_the_queue_is_full() -> None:
    gate = EndpointGate(max_in_flight=1, max_queued=1, max_wait_s=5.0)
    assert await gate.enter("ep_1", None)
    waiter = asyncio.create_task(gate.enter("ep_1", None))
    await asyncio.sleep(0.01)

    overflow = await asyncio.wait_for(gate.enter("ep_1", None), 1.0)
    gate.leave("ep_1")

    assert overflow is False
    assert await asyncio.wait_for(waiter, 1.0) is True


async def test_gate_defers_at_once_when_the_endpoint_hangs() -> None:
    clock = FakeClock()
    gate = EndpointGate(max_in_flight=2, max_queued=100, max_wait_s=1.0, clock=clock)
    assert await gate.enter("ep_hung", None)
    assert await gate.enter("ep_hung", None)
    clock.now_s += 5.0  # both attempts have been running for five seconds

    loop = asyncio.get_running_loop()
    started = loop.time()
    admitted = await gate.enter("ep_hung", None)

    assert admitted is False
    assert loop.time() - started < 0.1, "a hung endpoint's delivery should not queue"


async def test_gate_queues_a_burst_for_an_endpoint_that_answers_fast() -> None:
    clock = FakeClock()
    gate = EndpointGate(max_in_flight=1, max_queued=100, max_wait_s=1.0, clock=clock)
    for _ in range(5):  # teach the gate that attempts take 10 ms
        assert await gate.enter("ep_fast", None)
        clock.now_s += 0.01
        gate.leave("ep_fast")
    assert await gate.enter("ep_fast", None)

    waiters = [asyncio.create_task(gate.enter("ep_fast", None)) for _ in range(20)]
    await asyncio.sleep(0.01)
    for _ in range(20):
        gate.leave("ep_fast")
        await asyncio.sleep(0)

    assert await asyncio.gather(*waiters) == [True] * 20


async def test_gate_keeps_endpoints_apart() -> None:
    gate = EndpointGate(max_in_flight=1, max_queued=0, max_wait_s=0.01)

    assert await gate.enter("ep_slow", None)
    assert await gate.enter("ep_fast", None)
    assert await gate.enter("ep_slow", None) is False


async def test_gate_spaces_a_rate_limited_endpoint_one_slot_apart_and_defers_past_the_wait() -> (
    None
):
    # Rate 20/s: slots 50 ms apart, waits of 0, 50, 100 and 150 ms; 120 ms are allowed.
    gate = EndpointGate(max_in_flight=10, max_queued=10, max_wait_s=0.12, wall_clock=FakeClock())

    admitted = await asyncio.gather(*(gate.enter("ep_1", 20.0) for _ in range(4)))

    assert admitted == [True, True, True, False]


async def test_gate_with_no_share_defers_everything() -> None:
    nothing = Share.of(set(), 60)
    gate = EndpointGate(max_in_flight=10, max_queued=10, max_wait_s=1.0, share=lambda: nothing)

    assert await gate.enter("ep_1", None) is False
    assert await gate.enter("ep_1", 5.0) is False


async def test_gate_applies_its_share_of_the_concurrency_cap() -> None:
    quarter = Share.of(set(range(0, 60, 4)), 60)  # 15 of 60 partitions
    gate = EndpointGate(max_in_flight=10, max_queued=0, max_wait_s=0.01, share=lambda: quarter)

    admitted = [await gate.enter("ep_1", None) for _ in range(4)]

    assert admitted == [True, True, False, False]  # floor(10 x 15 / 60) = 2


async def test_gate_waits_for_a_rate_slot_that_comes_within_the_wait() -> None:
    gate = EndpointGate(max_in_flight=20, max_queued=10, max_wait_s=1.0, clock=FakeClock())
    for _ in range(10):
        assert await gate.enter("ep_1", 10.0)
        gate.leave("ep_1")
    loop = asyncio.get_running_loop()

    started = loop.time()
    admitted = await gate.enter("ep_1", 10.0)
    waited = loop.time() - started

    assert admitted is True
    assert 0.09 <= waited < 0.5


async def test_gate_forgets_idle_endpoints_without_a_rate() -> None:
    gate = EndpointGate(max_in_flight=1, max_queued=0, max_wait_s=0.01)
    assert await gate.enter("ep_1", None)

    gate.leave("ep_1")

    assert gate._lanes == {}
    assert gate.in_flight("ep_1") == 0


# --- judging a busy endpoint by its pace (issue 18: healthy bursts go direct) --------------


async def _entering(gate: EndpointGate, endpoint_id: str, count: int) -> list[asyncio.Task[bool]]:
    """``count`` deliveries asking for a slot, each past its decision to queue or defer."""
    tasks = [asyncio.create_task(gate.enter(endpoint_id, None)) for _ in range(count)]
    await asyncio.sleep(0)
    return tasks


async def _cancel(tasks: list[asyncio.Task[bool]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _deferred(tasks: list[asyncio.Task[bool]]) -> int:
    return sum(task.done() and task.result() is False for task in tasks)


async def test_gate_queues_a_burst_while_no_answer_was_read_anywhere() -> None:
    clock = FakeClock()
    gate = EndpointGate(max_in_flight=10, max_queued=1000, max_wait_s=1.0, clock=clock)
    burst = await _entering(gate, "ep_burst", 500)
    clock.now_s += 0.5  # taking the burst in held the loop: its attempts look slow
    more = await _entering(gate, "ep_burst", 400)

    try:
        assert _deferred(burst + more) == 0
    finally:
        await _cancel(burst + more)


async def test_gate_defers_early_when_other_endpoints_answers_were_read_meanwhile() -> None:
    clock = FakeClock()
    gate = EndpointGate(max_in_flight=2, max_queued=1000, max_wait_s=1.0, clock=clock)
    stalled = await _entering(gate, "ep_stalled", 3)  # two attempts, one waiting
    clock.now_s += 0.2
    assert await gate.enter("ep_fast", None)
    gate.leave("ep_fast")  # the loop reads answers: the stalled endpoint gave none

    newcomer = await gate.enter("ep_stalled", None)

    try:
        assert newcomer is False
    finally:
        await _cancel(stalled)


async def test_gate_lets_in_as_many_as_the_endpoint_finished_in_the_last_wait() -> None:
    clock = FakeClock()
    gate = EndpointGate(max_in_flight=1, max_queued=1000, max_wait_s=1.0, clock=clock)
    first = await _entering(gate, "ep_slow", 4)  # one attempt, three waiting
    for _ in range(2):  # two attempts finish in the next 0.6 s
        clock.now_s += 0.3
        gate.leave("ep_slow")
        await asyncio.sleep(0)
    clock.now_s += 0.5  # busy for 1.1 s, two attempts finished within the last second

    admitted = await _entering(gate, "ep_slow", 1)  # one waiting: a second may queue
    refused = await _entering(gate, "ep_slow", 1)  # two waiting: a third would wait too long

    try:
        assert _deferred(admitted) == 0
        assert _deferred(refused) == 1
    finally:
        await _cancel(first + admitted)


async def test_gate_takes_back_a_slot_handed_to_a_waiter_cancelled_before_it_ran() -> None:
    gate = EndpointGate(max_in_flight=1, max_queued=10, max_wait_s=5.0)
    assert await gate.enter("ep_1", None)
    waiter = asyncio.create_task(gate.enter("ep_1", None))
    await asyncio.sleep(0)

    gate.leave("ep_1")  # the slot goes to the waiter...
    waiter.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await waiter

    assert await asyncio.wait_for(gate.enter("ep_1", None), 1.0) is True


def test_recent_count_counts_within_its_window() -> None:
    count = RecentCount(window_s=1.0)
    for at_s in (10.0, 10.2, 10.5):
        count.add(at_s)

    assert count.total(10.6) == 3
    assert count.total(11.15) == 2
    assert count.total(12.0) == 0
