"""Resolver backends for tests: fixed answers for every name, and a name that never answers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable

from aiohttp.abc import AbstractResolver, ResolveResult


def answers(host: str, port: int, addresses: Iterable[str]) -> list[ResolveResult]:
    """What a resolver returns for ``host``: one numeric result per address."""
    return [
        ResolveResult(
            hostname=host,
            host=address,
            port=port,
            family=socket.AF_INET6 if ":" in address else socket.AF_INET,
            proto=0,
            flags=socket.AI_NUMERICHOST,
        )
        for address in addresses
    ]


class StaticResolver(AbstractResolver):
    """Answers every name with ``addresses``; a lookup of ``hung`` never ends."""

    def __init__(self, *addresses: str, hung: str | None = None) -> None:
        self._addresses = addresses
        self._hung = hung
        self.asked: list[str] = []
        self.hung_started = asyncio.Event()
        self._never = asyncio.Event()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host == self._hung:
            self.hung_started.set()
            await self._never.wait()
        return answers(host, port, self._addresses)

    async def close(self) -> None:
        return None
