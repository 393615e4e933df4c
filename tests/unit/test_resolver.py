"""The caching resolver: TTLs within a floor and a ceiling, failures cached briefly, lookup
timeouts, and its concurrency bounds driven past their limits. A fake backend and a fake
clock; no sockets. Deliveries around a name that never resolves are in
tests/integration/test_resolver.py."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from shared.delivery.resolver import (
    Answer,
    CachingResolver,
    LookupFailed,
    LookupTimedOut,
    ResolverLimits,
)
from shared.model.routing import classify_exception

LIMITS = ResolverLimits(
    lookup_timeout_s=5.0,
    max_lookups=3,
    ttl_floor_s=5.0,
    ttl_ceiling_s=300.0,
    ttl_unknown_s=30.0,
    failure_ttl_s=2.0,
)
PUBLIC = (("93.184.216.34", socket.AF_INET), ("2606:2800:220:1::1", socket.AF_INET6))


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeLookup:
    """Answers from ``answers`` (an exception is raised); names in ``gated`` wait for their
    gate. Counts calls and the most lookups ever running at once."""

    answers: dict[str, Answer | OSError] = field(default_factory=dict)
    ttl_s: float | None = None
    gated: dict[str, asyncio.Event] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    running: int = 0
    most_running: int = 0
    started: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def lookup(self, host: str) -> Answer:
        self.calls.append(host)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        self.started.set()
        async with self._changed:
            self._changed.notify_all()
        try:
            if host in self.gated:
                await self.gated[host].wait()
            answer = self.answers.get(host, Answer(PUBLIC, self.ttl_s))
        finally:
            self.running -= 1
            self.ended.set()
        if isinstance(answer, OSError):
            raise answer
        return answer

    async def close(self) -> None:
        return None

    async def until_called(self, times: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.calls) >= times)

    def gate(self, *hosts: str) -> Callable[[], None]:
        """Hold lookups of ``hosts`` until the returned function is called."""
        gates = [self.gated.setdefault(host, asyncio.Event()) for host in hosts]

        def release() -> None:
            for gate in gates:
                gate.set()

        return release


@pytest.fixture(name="clock")
def fixture_clock() -> Clock:
    return Clock()


@pytest.fixture(name="backend")
def fixture_backend() -> FakeLookup:
    return FakeLookup()


@pytest.fixture(name="resolver")
async def fixture_resolver(backend: FakeLookup, clock: Clock) -> AsyncIterator[CachingResolver]:
    resolver = CachingResolver(backend, LIMITS, clock)
    yield resolver
    await resolver.close()


async def hosts_of(resolver: CachingResolver, name: str) -> list[str]:
    return [result["host"] for result in await resolver.resolve(name, 443, socket.AF_UNSPEC)]


# --- results ---------------------------------------------------------------------------------


async def test_resolve_gives_every_address_with_the_port(resolver: CachingResolver) -> None:
    results = await resolver.resolve("hooks.example.com", 8443, socket.AF_UNSPEC)

    assert [(r["host"], r["port"], r["family"]) for r in results] == [
        ("93.184.216.34", 8443, socket.AF_INET),
        ("2606:2800:220:1::1", 8443, socket.AF_INET6),
    ]


async def test_resolve_for_one_family_keeps_only_its_addresses(resolver: CachingResolver) -> None:
    results = await resolver.resolve("hooks.example.com", 443, socket.AF_INET6)

    assert [r["host"] for r in results] == ["2606:2800:220:1::1"]


# --- the cache -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reported_ttl_s", "kept_s"),
    [(60.0, 60.0), (1.0, 5.0), (86_400.0, 300.0), (None, 30.0)],
    ids=["as-reported", "raised-to-the-floor", "cut-to-the-ceiling", "unknown-ttl"],
)
async def test_answer_is_cached_for_its_ttl_within_the_floor_and_the_ceiling(
    resolver: CachingResolver,
    backend: FakeLookup,
    clock: Clock,
    reported_ttl_s: float | None,
    kept_s: float,
) -> None:
    backend.ttl_s = reported_ttl_s
    await hosts_of(resolver, "hooks.example.com")

    clock.now += kept_s - 0.01
    await hosts_of(resolver, "hooks.example.com")
    calls_within_ttl = len(backend.calls)
    clock.now += 0.02
    await hosts_of(resolver, "hooks.example.com")

    assert (calls_within_ttl, len(backend.calls)) == (1, 2)


async def test_each_name_is_cached_on_its_own(
    resolver: CachingResolver, backend: FakeLookup
) -> None:
    for name in ("a.example", "b.example", "a.example", "b.example"):
        await hosts_of(resolver, name)

    assert backend.calls == ["a.example", "b.example"]


async def test_cache_keeps_at_most_max_names_dropping_the_oldest(
    backend: FakeLookup, clock: Clock
) -> None:
    resolver = CachingResolver(backend, ResolverLimits(max_names=2), clock)
    for name in ("a.example", "b.example", "c.example", "c.example", "b.example", "a.example"):
        await hosts_of(resolver, name)

    assert backend.calls == ["a.example", "b.example", "c.example", "a.example"]


async def test_failure_is_cached_briefly(
    resolver: CachingResolver, backend: FakeLookup, clock: Clock
) -> None:
    backend.answers["gone.example"] = socket.gaierror(
        socket.EAI_NONAME, "Name or service not known"
    )

    for _ in range(3):
        with pytest.raises(LookupFailed, match="not known"):
            await resolver.resolve("gone.example")
    calls_within_failure_ttl = len(backend.calls)
    clock.now += LIMITS.failure_ttl_s + 0.01
    with pytest.raises(LookupFailed):
        await resolver.resolve("gone.example")

    assert (calls_within_failure_ttl, len(backend.calls)) == (1, 2)


async def test_answer_without_addresses_is_a_failure(
    resolver: CachingResolver, backend: FakeLookup
) -> None:
    backend.answers["empty.example"] = Answer((), 60.0)

    with pytest.raises(LookupFailed, match="no address"):
        await resolver.resolve("empty.example")


@pytest.mark.parametrize(
    ("failure", "outcome"),
    [(LookupTimedOut("slow.example", 5.0), "timeout"), (LookupFailed("x", "no"), "connect_error")],
)
def test_lookup_failures_are_attempt_outcomes(failure: Exception, outcome: str) -> None:
    assert classify_exception(failure) == outcome


# --- timeouts --------------------------------------------------------------------------------


async def test_lookup_that_never_answers_times_out(backend: FakeLookup, clock: Clock) -> None:
    backend.gate("hung.example")
    resolver = CachingResolver(backend, ResolverLimits(lookup_timeout_s=0.05), clock)

    with pytest.raises(LookupTimedOut) as timed_out:
        await resolver.resolve("hung.example")

    assert timed_out.value.host == "hung.example"
    assert resolver.running_lookups == 1  # it runs on; only the caller gave up
    await resolver.close()


async def test_timed_out_name_fails_at_once_while_the_failure_is_cached(
    backend: FakeLookup, clock: Clock
) -> None:
    backend.gate("hung.example")
    resolver = CachingResolver(backend, ResolverLimits(lookup_timeout_s=0.2), clock)
    with pytest.raises(LookupTimedOut):
        await resolver.resolve("hung.example")

    # Waiting again would take the whole lookup timeout, longer than this bound allows.
    async with asyncio.timeout(0.1):
        with pytest.raises(LookupTimedOut):
            await resolver.resolve("hung.example")

    assert backend.calls == ["hung.example"]
    await resolver.close()


async def test_answer_that_comes_after_its_callers_gave_up_is_cached(
    backend: FakeLookup, clock: Clock
) -> None:
    release = backend.gate("late.example")
    resolver = CachingResolver(backend, ResolverLimits(lookup_timeout_s=0.05), clock)
    with pytest.raises(LookupTimedOut):
        await resolver.resolve("late.example")

    release()
    await backend.ended.wait()  # the resolver stores the answer in the same step
    hosts = await hosts_of(resolver, "late.example")

    assert hosts == [address for address, _ in PUBLIC]
    assert backend.calls == ["late.example"]
    await resolver.close()


# --- concurrency bounds ----------------------------------------------------------------------


async def test_concurrent_lookups_of_one_name_share_one_backend_call(
    resolver: CachingResolver, backend: FakeLookup
) -> None:
    release = backend.gate("busy.example")
    asking = [asyncio.create_task(hosts_of(resolver, "busy.example")) for _ in range(100)]
    await backend.started.wait()

    release()
    answers = await asyncio.gather(*asking)

    assert backend.calls == ["busy.example"]
    assert all(hosts == [address for address, _ in PUBLIC] for hosts in answers)


async def test_lookups_beyond_the_overall_bound_wait_for_a_slot(
    resolver: CachingResolver, backend: FakeLookup
) -> None:
    names = [f"n{n}.example" for n in range(10)]
    release = backend.gate(*names)
    asking = [asyncio.create_task(hosts_of(resolver, name)) for name in names]
    await backend.until_called(LIMITS.max_lookups)
    for _ in range(10):
        await asyncio.sleep(0)  # room for any lookup past the bound to start (none may)
    started_while_held = len(backend.calls)

    release()
    await asyncio.gather(*asking)

    assert started_while_held == LIMITS.max_lookups
    assert backend.most_running == LIMITS.max_lookups
    assert sorted(backend.calls) == sorted(names)


async def test_abandoned_lookup_keeps_its_slot_until_it_really_ends(
    backend: FakeLookup, clock: Clock
) -> None:
    """A caller's timeout frees the caller, not the thread still blocked in the lookup."""
    release = backend.gate("hung.example")
    limits = ResolverLimits(lookup_timeout_s=0.05, max_lookups=1)
    resolver = CachingResolver(backend, limits, clock)
    with pytest.raises(LookupTimedOut):
        await resolver.resolve("hung.example")

    with pytest.raises(LookupTimedOut):
        await resolver.resolve("other.example")  # no slot: the hung lookup still holds it
    release()
    clock.now += limits.failure_ttl_s + 0.01
    hosts = await hosts_of(resolver, "other.example")

    assert hosts == [address for address, _ in PUBLIC]
    assert backend.most_running == 1
    await resolver.close()


async def test_close_cancels_running_lookups(backend: FakeLookup, clock: Clock) -> None:
    backend.gate("hung.example")
    resolver = CachingResolver(backend, LIMITS, clock)
    asking = asyncio.create_task(resolver.resolve("hung.example"))
    await backend.started.wait()

    await resolver.close()

    with pytest.raises(asyncio.CancelledError):
        await asking
    assert backend.running == 0
