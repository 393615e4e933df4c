"""The bench's webhook receiver, in its own process: raw HTTP/1.1 on asyncio and uvloop.

aiohttp's server costs several times more CPU per request than this, and the receiver must
never be what limits a figure. Routes, by path:

- ``POST /ok/<group>/…``     answers 200 at once and notes the arrival under ``<group>``
- ``POST /hang/<group>/…``   notes the arrival and never answers (the sender times out)
- ``POST /stall/<group>/<ms>/…``  notes the arrival and answers 200 after ``ms``
- ``POST /outage/<group>/<outage_ms>/<answer_ms>/…``  503 for ``outage_ms`` from the group's
  first request, then 200 after ``answer_ms``; only the 200s count as arrivals, and requests
  waiting for their answer are counted (the most at once: ``max_in_flight``)
- ``POST /ids/<group>/…``    answers 200 at once
- outage and ids groups note each webhook-id's first 200 (``arrivals``, ``unique``)
- ``GET /_count/<group>``    how many arrived so far (cheap enough to poll)
- ``GET /_ledger/<group>``   the group's ledger (JSON)

Run: ``python -m tests.bench.receiver PORT``, its stdin a pipe; it exits by itself once the pipe
closes.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

import msgspec
import uvloop

from tests.bench.wire import GroupLedger

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"
UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
HEAD_END = b"\r\n\r\n"
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
WEBHOOK_ID = re.compile(rb"\r\nwebhook-id:[ \t]*([^\r]+)", re.IGNORECASE)
POSTS = ("ok", "hang", "stall", "outage", "ids")


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


@dataclass(slots=True)
class Group:
    """A group's ledger, and when its outage began (outage groups)."""

    ledger: GroupLedger = field(default_factory=GroupLedger)
    outage_from_s: float | None = None

    def arrived(self, at_s: float, body: bytes) -> None:
        ledger = self.ledger
        if ledger.count == 0:
            ledger.first_s = at_s
        ledger.count += 1
        ledger.last_s = at_s
        ref_s = reference_s(body)
        if ref_s is not None:
            ledger.latencies_ms.append((at_s - ref_s) * 1000)

    def answered(self, webhook_id: bytes | None, at_s: float) -> None:
        """A 200 for ``webhook_id``: its first one is noted with its time."""
        if webhook_id is None:
            return
        text = webhook_id.decode("latin-1")
        if text not in self.ledger.arrivals:
            self.ledger.arrivals[text] = at_s
            self.ledger.unique += 1

    def refused(self, webhook_id: bytes | None) -> None:
        """A 503: that delivery failed an attempt, and waits for its schedule's next tier."""
        self.ledger.refused += 1
        if webhook_id is not None:
            self.ledger.refused_ids.add(webhook_id.decode("latin-1"))

    def in_outage(self, at_s: float, outage_s: float) -> bool:
        if self.outage_from_s is None:
            self.outage_from_s = at_s
            self.ledger.outage_until_s = at_s + outage_s
        return at_s < self.outage_from_s + outage_s


Groups = dict[str, Group]


def take_request(buffer: bytearray) -> tuple[bytes, bytes] | None:
    """Cut one whole request (head, body) off the front of ``buffer``."""
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
    return head, body


def _webhook_id(head: bytes) -> bytes | None:
    match = WEBHOOK_ID.search(head)
    return match.group(1).strip() if match else None


def _number(parts: list[str], index: int) -> float:
    try:
        return float(parts[index])
    except (IndexError, ValueError):
        return 0.0


class Connection(asyncio.Protocol):
    def __init__(self, groups: Groups) -> None:
        self._groups = groups
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        # Answers still to be written (stall, outage), and the group each one counts against.
        self._later: dict[asyncio.TimerHandle, Group] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        for handle, group in self._later.items():
            handle.cancel()
            group.ledger.in_flight -= 1
        self._later.clear()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (request := take_request(self._buffer)) is not None:
            self._answer(*request)

    def _answer(self, head: bytes, body: bytes) -> None:
        method, _, rest = head.split(b"\r\n", 1)[0].partition(b" ")
        path = rest.partition(b" ")[0].decode("latin-1")
        parts = path.split("/")[1:]
        kind, group_name = [*parts, "", ""][:2]
        now = time.time()
        if method == b"POST" and kind in POSTS:
            group = self._groups.setdefault(group_name, Group())
            self._post(kind, group, parts, head, body, now)
        elif method == b"GET" and kind in ("_count", "_ledger"):
            ledger = self._groups.get(group_name, Group()).ledger
            self._reply_json(msgspec.json.encode(ledger.count if kind == "_count" else ledger))
        else:
            self._write(NOT_FOUND)

    def _post(
        self, kind: str, group: Group, parts: list[str], head: bytes, body: bytes, now: float
    ) -> None:
        if kind == "outage":
            if group.in_outage(now, _number(parts, 2) / 1000):
                group.refused(_webhook_id(head))
                self._write(UNAVAILABLE)
                return
            group.arrived(now, body)
            group.answered(_webhook_id(head), now)
            self._answer_later(group, _number(parts, 3) / 1000)
            return
        group.arrived(now, body)
        if kind == "ids":
            group.answered(_webhook_id(head), now)
            self._write(OK)
        elif kind == "ok":
            self._write(OK)
        elif kind == "stall":
            self._answer_later(group, _number(parts, 2) / 1000)

    def _answer_later(self, group: Group, delay_s: float) -> None:
        ledger = group.ledger
        ledger.in_flight += 1
        ledger.max_in_flight = max(ledger.max_in_flight, ledger.in_flight)
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def answer() -> None:
            assert handle is not None
            self._later.pop(handle, None)
            ledger.in_flight -= 1
            self._write(OK)

        handle = loop.call_later(delay_s, answer)
        self._later[handle] = group

    def _write(self, data: bytes) -> None:
        assert self._transport is not None
        if not self._transport.is_closing():
            self._transport.write(data)

    def _reply_json(self, payload: bytes) -> None:
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
        self._write(head % len(payload) + payload)


async def serve(port: int) -> None:
    groups: Groups = {}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(groups), "127.0.0.1", port, backlog=4096)
    async with server:
        await _until_stdin_closes()


async def _until_stdin_closes() -> None:
    """Until the bench that started it is gone (stopped, crashed or killed): it holds the other
    end of our stdin. A fixed lifetime cut the receiver off once a full run grew past it."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.read()


def main() -> None:
    uvloop.run(serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()
