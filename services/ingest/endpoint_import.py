"""``POST /v1/endpoints/import``: many endpoint creates in one request.

NDJSON in, one endpoint create body per line (blank lines skipped, lines counted from 1);
NDJSON out, one line per endpoint in the order sent: ``ImportCreated`` (its id, secret and
version) or ``ImportFailed`` (the status and error object a single create of that line would
answer). Each line goes through the very operation a single create does
(``EndpointApi.create_endpoint``): the same checks, the same answers.

The creates are handed to the endpoint store a chunk at a time and its fenced writer commits
those waiting together, a transaction per batch (``shared.kafka.fenced``): a line that fails
takes nothing else with it. At most ``CHUNKS_IN_FLIGHT`` chunks wait at once, so writes of
other callers (a customer's edit in the portal) queue behind a thousand creates at most, never
behind a whole import. Results are written as their chunk completes; a client that goes away
mid-way keeps what was committed (the secrets it did not read can be rotated).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Sequence

import msgspec
from aiohttp import web
from aiokafka.errors import KafkaError

from services.ingest.api_types import (
    IMPORT_MAX_BYTES,
    IMPORT_MAX_LINES,
    EndpointCreate,
    ImportCreated,
    ImportFailed,
)
from services.ingest.auth import Principal
from services.ingest.endpoints_api import EndpointApi, decoded
from services.ingest.responses import ApiError, broker_unavailable

NDJSON_TYPES = ("application/x-ndjson", "application/ndjson")
# Lines validated and handed to the store together: about one transaction's worth
# (``shared.kafka.fenced.MAX_BATCH_WRITES``).
CHUNK_LINES = 500
CHUNKS_IN_FLIGHT = 2
READ_CHUNK_BYTES = 64 * 1024

Result = ImportCreated | ImportFailed
NumberedLine = tuple[int, bytes]

_encoder = msgspec.json.Encoder()


def numbered_lines(body: bytes) -> list[NumberedLine]:
    """The body's non-blank lines with their numbers, from 1."""
    return [(n, line) for n, line in enumerate(body.split(b"\n"), start=1) if line.strip()]


def too_large(what: str) -> ApiError:
    return ApiError(
        413,
        "payload_too_large",
        f"{what}: an import takes at most {IMPORT_MAX_LINES:,} lines and "
        f"{IMPORT_MAX_BYTES:,} bytes; send the rest in another request",
    )


async def read_limited(request: web.Request) -> bytes:
    """The whole body, refused (413) as soon as it passes ``IMPORT_MAX_BYTES``."""
    if request.content_length is not None and request.content_length > IMPORT_MAX_BYTES:
        raise too_large("the body is too large")
    parts: list[bytes] = []
    size = 0
    while part := await request.content.read(READ_CHUNK_BYTES):
        size += len(part)
        if size > IMPORT_MAX_BYTES:
            raise too_large("the body is too large")
        parts.append(part)
    return b"".join(parts)


class EndpointImport:
    def __init__(self, api: EndpointApi) -> None:
        self._api = api

    async def post(self, request: web.Request) -> web.StreamResponse:
        principal = self._api.principal(request)
        if request.content_type not in NDJSON_TYPES:
            raise ApiError(415, "unsupported_media_type", "send application/x-ndjson")
        lines = numbered_lines(await read_limited(request))
        if len(lines) > IMPORT_MAX_LINES:
            raise too_large(f"{len(lines):,} lines")
        response = web.StreamResponse(headers={"content-type": "application/x-ndjson"})
        await response.prepare(request)
        await self._stream_results(principal, lines, response)
        await response.write_eof()
        return response

    async def _stream_results(
        self, principal: Principal, lines: Sequence[NumberedLine], response: web.StreamResponse
    ) -> None:
        waiting: deque[list[asyncio.Task[Result]]] = deque()
        try:
            for start in range(0, len(lines), CHUNK_LINES):
                chunk = lines[start : start + CHUNK_LINES]
                waiting.append(
                    [asyncio.create_task(self.create_line(principal, *line)) for line in chunk]
                )
                if len(waiting) >= CHUNKS_IN_FLIGHT:
                    await _write_results(response, waiting.popleft())
            while waiting:
                await _write_results(response, waiting.popleft())
        finally:
            for task in itertools.chain.from_iterable(waiting):
                task.cancel()

    async def create_line(self, principal: Principal, line: int, raw: bytes) -> Result:
        """One line, created as a single create would be; its answer as a result line."""
        try:
            body: EndpointCreate = decoded(raw, EndpointCreate)
            endpoint, secret = await self._api.create_endpoint(principal, body)
        except ApiError as exc:
            return _failed(line, exc)
        except (KafkaError, TimeoutError):
            return _failed(line, broker_unavailable())
        return ImportCreated(
            line=line, status=201, id=endpoint.id, secret=secret, version=endpoint.version
        )


def _failed(line: int, error: ApiError) -> ImportFailed:
    return ImportFailed(line=line, status=error.status, error=error.info())


async def _write_results(
    response: web.StreamResponse, tasks: Sequence[asyncio.Task[Result]]
) -> None:
    results = await asyncio.gather(*tasks)
    await response.write(b"".join(_encoder.encode(result) + b"\n" for result in results))
