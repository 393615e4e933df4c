"""HTTP/1.1 load on raw keep-alive connections: closed loop (each connection sends one
request, reads the whole response, and sends the next) or an open-loop stream of single
clicks at a fixed rate. No HTTP client library: aiohttp's client spends more CPU per request
than the servers it measures, and on a 2-core machine that CPU is taken from them.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import orjson

from tests.bench.produce import click_event
from tests.bench.wire import HttpLoad, HttpResult, HttpStream

REQUEST_TIMEOUT_S = 10.0
STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3})")
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


@dataclass
class _Tally:
    ok: int = 0
    failed: int = 0
    ok_total: int = 0
    latencies_ms: list[float] = field(default_factory=list)


def build_request(job: HttpLoad) -> tuple[str, int, bytes]:
    url = urlsplit(job.url)
    body = job.body.encode()
    head = (
        f"POST {url.path} HTTP/1.1\r\n"
        f"host: {url.netloc}\r\n"
        f"authorization: Bearer {job.token}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return url.hostname or "127.0.0.1", url.port or 80, head.encode() + body


async def read_status(reader: asyncio.StreamReader) -> int:
    """Read one response; its body is skipped."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = STATUS_LINE.match(head)
    length = CONTENT_LENGTH.search(head)
    if length is not None:
        await reader.readexactly(int(length.group(1)))
    return int(status.group(1)) if status else 0


async def _connection(
    host: str, port: int, request: bytes, counts_from: float, ends_at: float, tally: _Tally
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while (sent := time.monotonic()) < ends_at:
            writer.write(request)
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                status = await read_status(reader)
            done = time.monotonic()
            tally.ok_total += 200 <= status < 300
            if counts_from <= done < ends_at:
                if 200 <= status < 300:
                    tally.ok += 1
                    tally.latencies_ms.append((done - sent) * 1000)
                else:
                    tally.failed += 1
    finally:
        writer.close()


async def run_http_load(job: HttpLoad) -> HttpResult:
    """Requests completed inside the measuring window (after ``warmup_s``)."""
    host, port, request = build_request(job)
    counts_from = time.monotonic() + job.warmup_s
    ends_at = counts_from + job.duration_s
    tally = _Tally()
    await asyncio.gather(
        *(
            _connection(host, port, request, counts_from, ends_at, tally)
            for _ in range(job.concurrency)
        )
    )
    return HttpResult(
        ok=tally.ok,
        failed=tally.failed,
        seconds=job.duration_s,
        ok_total=tally.ok_total,
        latencies_ms=tally.latencies_ms,
    )


# --- an open-loop stream of single clicks -------------------------------------------------


class _Pool:
    """Idle keep-alive connections to one server; a request finding none opens another, so
    the stream keeps its schedule whatever the answers' pace (open loop)."""

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened: list[asyncio.StreamWriter] = []

    async def take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._idle:
            return self._idle.pop()
        reader, writer = await asyncio.open_connection(self._host, self._port)
        self.opened.append(writer)
        return reader, writer

    def give_back(self, connection: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self._idle.append(connection)

    def close(self) -> None:
        for writer in self.opened:
            writer.close()


def stream_request(job: HttpStream, url_path: str, host: str, n: int) -> bytes:
    """One click, stamped now: the receiver measures from this ``occurred_at``."""
    event = click_event("-", job.account_id, job.link_ids[n % len(job.link_ids)])
    del event["id"]  # ingest assigns it, as for a shortener's request
    event["occurred_at"] = datetime.now(UTC).isoformat()
    body = orjson.dumps(event)
    head = (
        f"POST {url_path} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {job.token}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def run_http_stream(job: HttpStream) -> HttpResult:
    url = urlsplit(job.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    pool = _Pool(host, port)
    for _ in range(job.connections):
        pool.give_back(await pool.take())
    tally = _Tally()
    started = time.monotonic()

    async def one(n: int) -> None:
        try:
            connection = await pool.take()
            reader, writer = connection
            writer.write(stream_request(job, url.path, url.netloc, n))
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                status = await read_status(reader)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            tally.failed += 1  # that connection is not given back
            return
        pool.give_back(connection)
        if 200 <= status < 300:
            tally.ok += 1
        else:
            tally.failed += 1

    requests: set[asyncio.Task[None]] = set()
    try:
        for n in range(job.count):
            ahead_s = n / job.rate_per_s - (time.monotonic() - started)
            if ahead_s > 0:
                await asyncio.sleep(ahead_s)
            task = asyncio.create_task(one(n))
            requests.add(task)
            task.add_done_callback(requests.discard)
        await asyncio.gather(*requests)
    finally:
        pool.close()
    seconds = time.monotonic() - started
    return HttpResult(ok=tally.ok, failed=tally.failed, seconds=seconds, ok_total=tally.ok)
