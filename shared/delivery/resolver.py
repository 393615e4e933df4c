"""Name lookups for deliveries: cached, bounded, and unable to starve other endpoints.

Endpoint hostnames are chosen by customers, so one of them may name a zone whose servers
never answer. With a plain threaded resolver every delivery to it holds an executor thread
until the system resolver gives up, and once the threads are gone every new connection to
anyone waits. Here:

- at most one lookup per name runs at a time, and everyone asking for that name shares it
  (the per-host bound), so a name that never answers holds one slot, however many
  deliveries wait for it;
- at most ``max_lookups`` run at once overall (the executor has exactly that many threads,
  and a slot is given back only when its lookup really ends, not when a caller gave up);
- each caller waits at most ``lookup_timeout_s``, then fails with ``LookupTimedOut`` (a
  ``TimeoutError``: the ``timeout`` outcome); the lookup runs on and its answer is cached;
- answers are cached for their TTL kept within a floor and a ceiling; failures, timeouts
  included, for ``failure_ttl_s``, so a broken name is not asked again for every delivery.

The backend is chosen explicitly: ``getaddrinfo`` on a thread pool of our own (the system's
resolver, so /etc/hosts, search domains and nscd behave as for any program on the host). It
reports no TTL, so its answers are kept ``ttl_unknown_s``. aiodns is not a dependency; a
backend that knows TTLs (aiohttp's ``AsyncResolver`` through ``AiohttpLookup``, or one of
our own) plugs in through ``NameLookup``. The SSRF policy is not applied here: the client
applies it to every address, cached or not, before it opens a socket.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from aiohttp.abc import AbstractResolver, ResolveResult

Address = tuple[str, socket.AddressFamily]


@dataclass(frozen=True, slots=True)
class ResolverLimits:
    lookup_timeout_s: float = 5.0
    max_lookups: int = 16  # overall, and the threads of the getaddrinfo backend
    ttl_floor_s: float = 5.0
    ttl_ceiling_s: float = 300.0
    ttl_unknown_s: float = 30.0  # for backends that report no TTL (getaddrinfo)
    failure_ttl_s: float = 2.0
    max_names: int = 10_000  # cached names; the oldest entry goes first


DEFAULT_RESOLVER_LIMITS = ResolverLimits()


@dataclass(frozen=True, slots=True)
class Answer:
    addresses: tuple[Address, ...]
    ttl_s: float | None  # None: the backend does not know


class LookupFailed(OSError):
    """The name did not resolve (no such name, no address, a resolver error)."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"lookup of {host} failed: {reason}")
        self.host = host
        self.reason = reason


class LookupTimedOut(TimeoutError):
    """The name did not resolve within the lookup timeout."""

    def __init__(self, host: str, timeout_s: float) -> None:
        super().__init__(f"lookup of {host} took longer than {timeout_s:g} s")
        self.host = host
        self.timeout_s = timeout_s


class NameLookup(Protocol):
    """A resolver backend: one name to its addresses."""

    async def lookup(self, host: str) -> Answer: ...

    async def close(self) -> None: ...


class ThreadedLookup:
    """``getaddrinfo`` on a thread pool of its own, never the loop's shared default one."""

    def __init__(self, threads: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="clickhook-dns")

    async def lookup(self, host: str) -> Answer:
        resolving = functools.partial(
            socket.getaddrinfo,
            host,
            None,
            socket.AF_UNSPEC,
            socket.SOCK_STREAM,
            0,
            socket.AI_ADDRCONFIG,
        )
        infos = await asyncio.get_running_loop().run_in_executor(self._executor, resolving)
        addresses = dict.fromkeys(
            (str(sockaddr[0]), family)
            for family, _, _, _, sockaddr in infos
            if family in (socket.AF_INET, socket.AF_INET6)
        )
        return Answer(tuple(addresses), ttl_s=None)

    async def close(self) -> None:
        # A thread stuck in getaddrinfo cannot be interrupted; it ends with the system
        # resolver's own timeout, and nothing waits for it.
        self._executor.shutdown(wait=False, cancel_futures=True)


class AiohttpLookup:
    """An aiohttp resolver as a backend (tests' fakes, or aiohttp's ``AsyncResolver``)."""

    def __init__(self, resolver: AbstractResolver) -> None:
        self._resolver = resolver

    async def lookup(self, host: str) -> Answer:
        results = await self._resolver.resolve(host, 0, socket.AF_UNSPEC)
        addresses = dict.fromkeys(
            (result["host"], socket.AddressFamily(result["family"])) for result in results
        )
        return Answer(tuple(addresses), ttl_s=None)

    async def close(self) -> None:
        await self._resolver.close()


@dataclass(frozen=True, slots=True)
class _Entry:
    """What the cache knows about one name until ``expires_at``: an answer or a failure."""

    expires_at: float
    answer: Answer | None = None
    failure: str | None = None  # why the lookup failed
    timed_out: bool = False


class CachingResolver(AbstractResolver):
    """Resolves names through a backend with a cache, timeouts and bounded concurrency."""

    def __init__(
        self,
        backend: NameLookup | None = None,
        limits: ResolverLimits = DEFAULT_RESOLVER_LIMITS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = limits
        self._backend = backend or ThreadedLookup(limits.max_lookups)
        self._clock = clock
        self._slots = asyncio.Semaphore(limits.max_lookups)
        self._cache: dict[str, _Entry] = {}
        self._running: dict[str, asyncio.Task[_Entry]] = {}

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answer = await self._answer(host)
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=address_family,
                proto=socket.IPPROTO_TCP,
                flags=socket.AI_NUMERICHOST,
            )
            for address, address_family in answer.addresses
            if family in (socket.AF_UNSPEC, address_family)
        ]

    async def _answer(self, host: str) -> Answer:
        """The addresses of ``host``, from the cache or a lookup; raises LookupFailed or
        LookupTimedOut."""
        entry = self._cache.get(host)
        if entry is None or entry.expires_at <= self._clock():
            entry = await self._wait_for_lookup(host)
        return self._unpack(host, entry)

    async def close(self) -> None:
        for running in self._running.values():
            running.cancel()
        self._running.clear()
        await self._backend.close()

    @property
    def running_lookups(self) -> int:
        """Lookups started and not ended yet, abandoned ones included."""
        return len(self._running)

    async def _wait_for_lookup(self, host: str) -> _Entry:
        running = self._running.get(host)
        if running is None:
            running = asyncio.get_running_loop().create_task(self._look_up(host))
            self._running[host] = running
        try:
            async with asyncio.timeout(self._limits.lookup_timeout_s):
                # Shielded: a caller that gives up (timeout, cancellation) leaves the lookup
                # running for everyone else, and its slot taken until it really ends.
                return await asyncio.shield(running)
        except TimeoutError:
            return self._remember_timeout(host)

    async def _look_up(self, host: str) -> _Entry:
        try:
            async with self._slots:
                try:
                    answer = await self._backend.lookup(host)
                except OSError as exc:  # socket.gaierror included
                    return self._remember(host, failure=exc.strerror or str(exc) or repr(exc))
            if not answer.addresses:
                return self._remember(host, failure="no address")
            return self._remember(host, answer=answer)
        finally:
            if self._running.get(host) is asyncio.current_task():
                del self._running[host]

    def _remember(self, host: str, *, answer: Answer | None = None, failure: str = "") -> _Entry:
        limits = self._limits
        if answer is None:
            ttl_s = limits.failure_ttl_s
        else:
            reported = limits.ttl_unknown_s if answer.ttl_s is None else answer.ttl_s
            ttl_s = min(max(reported, limits.ttl_floor_s), limits.ttl_ceiling_s)
        entry = _Entry(self._clock() + ttl_s, answer=answer, failure=failure or None)
        self._store(host, entry)
        return entry

    def _remember_timeout(self, host: str) -> _Entry:
        """A timed-out lookup counts as a failure, unless it answered meanwhile."""
        current = self._cache.get(host)
        now = self._clock()
        if current is not None and current.expires_at > now:
            return current
        entry = _Entry(now + self._limits.failure_ttl_s, failure="timed out", timed_out=True)
        self._store(host, entry)
        return entry

    def _store(self, host: str, entry: _Entry) -> None:
        cache = self._cache
        cache.pop(host, None)
        cache[host] = entry
        if len(cache) > self._limits.max_names:
            del cache[next(iter(cache))]  # the oldest stored

    def _unpack(self, host: str, entry: _Entry) -> Answer:
        if entry.timed_out:
            raise LookupTimedOut(host, self._limits.lookup_timeout_s)
        if entry.answer is None:
            raise LookupFailed(host, entry.failure or "unknown")
        return entry.answer
