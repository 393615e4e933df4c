"""Per-endpoint caps on rate (a pure token bucket) and concurrency (an async gate)."""

from __future__ import annotations

import asyncio

import pytest

from shared.limits import EndpointGate, TokenBucket


def _bucket(rate_per_s: float, now_s: float = 100.0) -> TokenBucket:
    return TokenBucket(rate_per_s=rate_per_s, tokens=max(1.0, rate_per_s), updated_s=now_s)


async def _enter(
    gate: EndpointGate, rate_per_s: float | None = None, now_s: float = 0.0, endpoint: str = "ep_1"
) -> bool:
    """Enter an endpoint; an answer that should be immediate may not hang the suite."""
    return await asyncio.wait_for(gate.enter(endpoint, rate_per_s, now_s), timeout=1.0)


async def _settle() -> None:
    """Let every ready task run until it blocks."""
    for _ in range(5):
        await asyncio.sleep(0)


# --- TokenBucket ----------------------------------------------------------------------------


def test_bucket_allows_a_burst_of_its_rate() -> None:
    bucket = _bucket(3.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]


def test_bucket_refills_at_its_rate() -> None:
    bucket = _bucket(2.0)
    assert [bucket.take(100.0) for _ in range(3)] == [True, True, False]
    assert bucket.take(100.4) is False
    assert bucket.take(100.5) is True
    assert bucket.take(100.5) is False


def test_bucket_caps_the_refill_at_the_burst() -> None:
    bucket = _bucket(2.0)
    assert bucket.take(100.0)
    assert [bucket.take(10_000.0) for _ in range(3)] == [True, True, False]


def test_bucket_with_a_slow_rate_allows_one_at_a_time() -> None:
    bucket = _bucket(0.5)
    assert bucket.take(100.0) is True
    assert bucket.take(101.0) is False
    assert bucket.take(102.0) is True


def test_bucket_gains_nothing_when_time_goes_back() -> None:
    bucket = _bucket(1.0)
    assert bucket.take(100.0) is True
    assert bucket.take(50.0) is False
    assert bucket.tokens == 0.0


# --- EndpointGate ---------------------------------------------------------------------------


async def test_gate_admits_up_to_max_in_flight() -> None:
    gate = EndpointGate(max_in_flight=2, max_queued=0)
    assert await _enter(gate)
    assert await _enter(gate)
    assert gate.in_flight("ep_1") == 2


async def test_gate_refuses_when_the_queue_is_full() -> None:
    gate = EndpointGate(max_in_flight=1, max_queued=0)
    assert await _enter(gate)
    assert await _enter(gate) is False
    assert gate.in_flight("ep_1") == 1


async def test_gate_queues_until_a_slot_is_left() -> None:
    gate = EndpointGate(max_in_flight=1, max_queued=1)
    assert await _enter(gate)
    waiting = asyncio.create_task(gate.enter("ep_1", None, 0.0))
    await _settle()
    assert not waiting.done()
    assert await _enter(gate) is False
    gate.leave("ep_1")
    assert await asyncio.wait_for(waiting, timeout=1.0) is True
    assert gate.in_flight("ep_1") == 1


async def test_gate_keeps_endpoints_apart() -> None:
    gate = EndpointGate(max_in_flight=1, max_queued=0)
    assert await _enter(gate)
    assert await _enter(gate, endpoint="ep_2")
    assert (gate.in_flight("ep_1"), gate.in_flight("ep_2")) == (1, 1)


async def test_gate_frees_the_slot_on_leave() -> None:
    gate = EndpointGate(max_in_flight=1, max_queued=0)
    assert await _enter(gate)
    gate.leave("ep_1")
    assert gate.in_flight("ep_1") == 0
    assert await _enter(gate)


async def test_gate_frees_the_queue_place_of_a_cancelled_waiter() -> None:
    gate = EndpointGate(max_in_flight=1, max_queued=1)
    assert await _enter(gate)
    cancelled = asyncio.create_task(gate.enter("ep_1", None, 0.0))
    await _settle()
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    waiting = asyncio.create_task(gate.enter("ep_1", None, 0.0))
    await _settle()
    assert not waiting.done()
    gate.leave("ep_1")
    assert await asyncio.wait_for(waiting, timeout=1.0) is True


async def test_gate_refuses_over_the_endpoint_rate() -> None:
    gate = EndpointGate(max_in_flight=10, max_queued=0)
    assert await _enter(gate, 1.0, 100.0)
    assert await _enter(gate, 1.0, 100.5) is False
    assert await _enter(gate, 1.0, 101.0)
    assert gate.in_flight("ep_1") == 2


async def test_gate_rate_survives_an_idle_endpoint() -> None:
    gate = EndpointGate(max_in_flight=10, max_queued=0)
    assert await _enter(gate, 1.0, 100.0)
    gate.leave("ep_1")
    assert await _enter(gate, 1.0, 100.1) is False


async def test_gate_starts_a_new_bucket_when_the_rate_changes() -> None:
    gate = EndpointGate(max_in_flight=10, max_queued=0)
    assert await _enter(gate, 1.0, 100.0)
    assert await _enter(gate, 5.0, 100.0)
    assert gate.in_flight("ep_1") == 2


def test_gate_reports_nothing_in_flight_for_an_unknown_endpoint() -> None:
    assert EndpointGate(max_in_flight=1, max_queued=1).in_flight("ep_x") == 0
