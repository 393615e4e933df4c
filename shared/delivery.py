"""One delivery attempt over HTTP: sign, send through the SSRF guard, classify the result."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from shared.errors import RefusedDestination
from shared.formats import build_request
from shared.messages import AttemptRecord, Endpoint, Outcome
from shared.outcomes import (
    RETRY_AFTER_STATUSES,
    classify_exception,
    classify_status,
    describe_exception,
    parse_retry_after_s,
)
from shared.ssrf import IPNetwork, refusal_reason

RESPONSE_BODY_CAP_BYTES = 1024
USER_AGENT = "clickhook/0.1 (+https://github.com/clickhook)"


class GuardedResolver(AbstractResolver):
    """Resolves names, then keeps only addresses the SSRF policy allows.

    The connector connects to exactly the addresses returned here, so a name cannot change
    address between the check and the connect (DNS rebinding).
    """

    def __init__(self, allowed: tuple[IPNetwork, ...], inner: AbstractResolver | None = None):
        self._allowed = allowed
        self._inner = inner or aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        kept: list[ResolveResult] = []
        reasons: list[tuple[str, str]] = []
        for result in results:
            reason = refusal_reason(ipaddress.ip_address(result["host"]), self._allowed)
            if reason is None:
                kept.append(result)
            else:
                reasons.append((result["host"], reason))
        if not kept:
            address, reason = reasons[0] if reasons else ("-", "no address")
            raise RefusedDestination(host, address, reason)
        return kept

    async def close(self) -> None:
        await self._inner.close()


def check_literal_host(url: URL, allowed: tuple[IPNetwork, ...]) -> None:
    """aiohttp skips the resolver for IP literals, so those are checked here."""
    host = url.raw_host or ""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return
    reason = refusal_reason(address, allowed)
    if reason is not None:
        raise RefusedDestination(host, str(address), reason)


def create_session(
    allowed: tuple[IPNetwork, ...], timeout_s: float, resolver: AbstractResolver | None = None
) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(allowed, resolver),
        limit=0,  # global concurrency is bounded by the services, per endpoint by the limiter
        limit_per_host=0,
        ttl_dns_cache=60,
        enable_cleanup_closed=True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        headers={"user-agent": USER_AGENT},
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )


@dataclass(frozen=True, slots=True)
class AttemptResult:
    record: AttemptRecord
    retry_after_s: float | None

    @property
    def outcome(self) -> Outcome:
        return self.record.outcome


class Sender:
    """Sends signed webhook requests with one pooled session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        allowed: tuple[IPNetwork, ...],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self._allowed = allowed
        self._clock = clock

    async def attempt(
        self,
        endpoint: Endpoint,
        event: dict[str, Any],
        *,
        webhook_id: str,
        event_id: str,
        attempt: int,
    ) -> AttemptResult:
        started_s = self._clock()
        now = datetime.fromtimestamp(started_s, UTC)
        body, headers = build_request(
            endpoint, event, webhook_id=webhook_id, timestamp_s=int(started_s), now=now
        )
        status: int | None = None
        error: str | None = None
        response_body: str | None = None
        retry_after_s: float | None = None
        started = time.perf_counter()
        try:
            url = URL(endpoint.url, encoded=False)
            check_literal_host(url, self._allowed)
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                raw = await response.content.read(RESPONSE_BODY_CAP_BYTES)
                response_body = raw.decode("utf-8", errors="replace") or None
                if status in RETRY_AFTER_STATUSES:
                    retry_after_s = parse_retry_after_s(response.headers.get("retry-after"), now)
            outcome = classify_status(status)
        except Exception as exc:  # noqa: BLE001 - every failure is an outcome to record
            outcome = classify_exception(exc)
            error = describe_exception(exc)[:500]
        duration_ms = (time.perf_counter() - started) * 1000
        record = AttemptRecord(
            webhook_id=webhook_id,
            event_id=event_id,
            endpoint_id=endpoint.id,
            account_id=endpoint.account_id,
            attempt=attempt,
            at_ms=int(started_s * 1000),
            duration_ms=round(duration_ms, 3),
            outcome=outcome,
            status=status,
            error=error,
            response_body=response_body,
        )
        return AttemptResult(record=record, retry_after_s=retry_after_s)
