"""A closed-loop HTTP/1.1 load generator on raw keep-alive connections.

Each connection sends one request, reads the whole response, and sends the next. No HTTP
client library: aiohttp's client spends more CPU per request than the servers it measures,
and on a 2-core machine that CPU is taken from them.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from tests.bench.wire import HttpLoad, HttpResult

REQUEST_TIMEOUT_S = 10.0
STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3})")
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


@dataclass
class _Tally:
    ok: int = 0
    failed: int = 0
    ok_total: int = 0


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
        while time.monotonic() < ends_at:
            writer.write(request)
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                status = await read_status(reader)
            done = time.monotonic()
            tally.ok_total += 200 <= status < 300
            if counts_from <= done < ends_at:
                if 200 <= status < 300:
                    tally.ok += 1
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
        ok=tally.ok, failed=tally.failed, seconds=job.duration_s, ok_total=tally.ok_total
    )
