"""A raw TCP server on 127.0.0.1 for tests that write exact bytes back to the client."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass
class RawServer:
    """Counts connections and hands each to ``_serve_connection`` with its number (from 1);
    ``stop`` ends them all, waking handlers that wait on ``stopping`` or on the client."""

    port: int = 0
    connections: int = 0
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    closed: dict[int, asyncio.Event] = field(default_factory=dict)  # by connection number
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        self.stopping.set()
        for writer in self._writers:
            writer.close()  # handlers waiting for the client see the end of the stream
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)
        await self._server.wait_closed()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int
    ) -> None:
        raise NotImplementedError

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.append(writer)
        self.connections += 1
        number = self.connections
        self.closed[number] = asyncio.Event()
        try:
            await self._serve_connection(reader, writer, number)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client hung up
        finally:
            writer.close()
            self.closed[number].set()
