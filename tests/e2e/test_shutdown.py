"""Stopping a service whatever became of its output, and failing one whose background task
died: each service as a real process (``python -m services.<name>``) on the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.services import ROOT, free_port, service_env, wait_ready

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

DRAIN_GRACE_S = 10
SERVICES = ("ingest", "dispatcher", "retry")


class StdoutPipe:
    """A pipe for a child's stdout, drained by the test's event loop until ``close`` closes its
    read end, as a ``tee`` that died would (a thread blocked reading would keep it open)."""

    def __init__(self) -> None:
        self._read_fd, self.write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._read_fd, self._drain)
        self.closed = False

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read_fd, 65536):
                pass

    def close(self) -> None:
        if not self.closed:
            self._loop.remove_reader(self._read_fd)
            os.close(self._read_fd)
            self.closed = True


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    stdout: StdoutPipe
    port: int
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def wait_ready(self) -> None:
        url = f"http://127.0.0.1:{self.port}/readyz"
        await wait_ready(self.name, self.process, url, self.stderr)

    async def exit_status(self, timeout_s: float) -> int | None:
        """The exit status, or None if the child still runs after ``timeout_s``."""
        try:
            return await asyncio.to_thread(self.process.wait, timeout_s)
        except subprocess.TimeoutExpired:
            return None


def spawn(
    command: list[str], env: dict[str, str], stdout_fd: int, stderr_path: Path
) -> subprocess.Popen[bytes]:
    with stderr_path.open("wb") as stderr:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=stdout_fd, stderr=stderr)


@contextlib.asynccontextmanager
async def child(
    name: str, args: list[str], kafka_bootstrap: str, prefix: str, tmp_path: Path
) -> AsyncIterator[Child]:
    """A service process, stdout on a pipe the test may close, stderr kept; killed at the end
    if it still runs."""
    port = free_port()
    env = service_env(
        kafka_bootstrap,
        prefix,
        CLICKHOOK_DRAIN_GRACE=f"{DRAIN_GRACE_S}s",
        CLICKHOOK_API_KEYS="tok:admin",
        **{f"CLICKHOOK_{name.upper()}_PORT": str(port)},
    )
    stdout = StdoutPipe()
    stderr_path = tmp_path / f"{name}.stderr.log"
    process = spawn([sys.executable, *args], env, stdout.write_fd, stderr_path)
    os.close(stdout.write_fd)  # the child holds the only write end now
    try:
        yield Child(name, process, stdout, port, stderr_path)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        stdout.close()


@pytest.mark.parametrize("name", SERVICES)
async def test_sigterm_with_stdout_a_closed_pipe_exits_0_within_the_drain_grace(
    kafka_bootstrap: str, prefix: str, tmp_path: Path, name: str
) -> None:
    async with child(name, ["-m", f"services.{name}"], kafka_bootstrap, prefix, tmp_path) as c:
        await c.wait_ready()
        c.stdout.close()  # the reader is gone: every line the service writes now fails
        c.process.terminate()
        status = await c.exit_status(DRAIN_GRACE_S)

        assert status == 0, c.stderr()


# The endpoint follower of a real ingest process breaks once the test creates a file.
FOLLOWER_BREAKS_ON_FILE = """
import asyncio, sys
from pathlib import Path
from shared.kafka import endpoint_store
from shared.ops.process import run
from services.ingest.__main__ import main

trigger = Path(sys.argv[1])
follow = endpoint_store.EndpointStore.follow


async def follow_until_the_file_appears(self):
    following = asyncio.ensure_future(follow(self))
    while not trigger.exists():
        await asyncio.sleep(0.05)
    following.cancel()
    raise RuntimeError("the follower broke (injected by the test)")


endpoint_store.EndpointStore.follow = follow_until_the_file_appears
run(main)
"""


async def test_a_service_whose_follower_dies_stops_and_exits_1(
    kafka_bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    trigger = tmp_path / "break-the-follower"
    args = ["-c", FOLLOWER_BREAKS_ON_FILE, str(trigger)]
    async with child("ingest", args, kafka_bootstrap, prefix, tmp_path) as c:
        await c.wait_ready()
        trigger.touch()
        status = await c.exit_status(DRAIN_GRACE_S)

        assert status == 1, c.stderr()
