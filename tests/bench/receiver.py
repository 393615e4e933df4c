"""The bench's webhook receiver, in its own process: raw HTTP/1.1 on asyncio and uvloop.

aiohttp's server costs several times more CPU per request than this, and the receiver must
never be what limits a figure. Routes, by path:

- ``POST /ok/<group>/…``    answers 200 at once and notes the arrival under ``<group>``
- ``POST /hang/<group>/…``  notes the arrival and never answers (the sender times out)
- ``GET /_count/<group>``   how many arrived so far (cheap enough to poll)
- ``GET /_ledger/<group>``  the group's count, first/last arrival and latencies (JSON)

Run: ``python -m tests.bench.receiver PORT LIFETIME_S``; it exits by itself after LIFETIME_S.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from datetime import datetime
from typing import cast

import msgspec
import uvloop

from tests.bench.wire import GroupLedger, Ledger

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
HEAD_END = b"\r\n\r\n"
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


class _Data(msgspec.Struct):
    bench_due_ms: int | None = None


class _Webhook(msgspec.Struct):
    """The two fields the latency needs; msgspec skips the rest of the body unparsed."""

    timestamp: str | None = None
    data: _Data = msgspec.field(default_factory=_Data)


_decode_webhook = msgspec.json.Decoder(_Webhook).decode


def reference_s(body: bytes) -> float | None:
    """When the delivery was due: the retry bench's due time, else the click's occurred_at."""
    try:
        webhook = _decode_webhook(body)
    except msgspec.DecodeError:
        return None
    if webhook.data.bench_due_ms is not None:
        return webhook.data.bench_due_ms / 1000
    if webhook.timestamp is None:
        return None
    try:
        return datetime.fromisoformat(webhook.timestamp).timestamp()
    except ValueError:
        return None


def note(ledger: Ledger, group: str, at_s: float, body: bytes) -> None:
    entry = ledger.get(group)
    if entry is None:
        entry = ledger[group] = GroupLedger(first_s=at_s)
    entry.count += 1
    entry.last_s = at_s
    ref_s = reference_s(body)
    if ref_s is not None:
        entry.latencies_ms.append((at_s - ref_s) * 1000)


def take_request(buffer: bytearray) -> tuple[bytes, bytes] | None:
    """Cut one whole request (request line, body) off the front of ``buffer``."""
    head_end = buffer.find(HEAD_END)
    if head_end < 0:
        return None
    head = bytes(buffer[:head_end])
    match = CONTENT_LENGTH.search(head)
    body_start = head_end + len(HEAD_END)
    body_end = body_start + (int(match.group(1)) if match else 0)
    if len(buffer) < body_end:
        return None
    body = bytes(buffer[body_start:body_end])
    del buffer[:body_end]
    return head.split(b"\r\n", 1)[0], body


class Connection(asyncio.Protocol):
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (request := take_request(self._buffer)) is not None:
            self._answer(*request)

    def _answer(self, request_line: bytes, body: bytes) -> None:
        assert self._transport is not None
        method, _, rest = request_line.partition(b" ")
        path = rest.partition(b" ")[0].decode("latin-1")
        _, kind, group, *_ = [*path.split("/", 3), "", ""]
        if method == b"POST" and kind in ("ok", "hang"):
            note(self._ledger, group, time.time(), body)
            if kind == "ok":
                self._transport.write(OK)
        elif method == b"GET" and kind in ("_count", "_ledger"):
            entry = self._ledger.get(group, GroupLedger())
            self._reply_json(msgspec.json.encode(entry.count if kind == "_count" else entry))
        else:
            self._transport.write(NOT_FOUND)

    def _reply_json(self, payload: bytes) -> None:
        assert self._transport is not None
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
        self._transport.write(head % len(payload) + payload)


async def serve(port: int, lifetime_s: float) -> None:
    ledger: Ledger = {}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(ledger), "127.0.0.1", port, backlog=1024)
    async with server:
        await asyncio.sleep(lifetime_s)


def main() -> None:
    port, lifetime_s = int(sys.argv[1]), float(sys.argv[2])
    uvloop.run(serve(port, lifetime_s))


if __name__ == "__main__":
    main()
