"""The services as real subprocesses, as they are deployed: ``python -m services.<name>``."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_ready(
    name: str,
    process: subprocess.Popen[bytes],
    url: str,
    log_tail: Callable[[], str],
    timeout_s: float = 60.0,
) -> None:
    """Poll ``url`` until it answers 200; fail at once if the process exits meanwhile."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"{name} exited early:\n{log_tail()}")
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"{name}: {url} not ready in {timeout_s}s:\n{log_tail()}")


# The service processes started since the current test began: when the test fails, their logs
# go with its report (tests/conftest.py), so a failure in CI shows what the services did.
STARTED: list[ServiceProcess] = []


@dataclass
class ServiceProcess:
    name: str
    env: dict[str, str]
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None)

    def start(self) -> None:
        if all(started is not self for started in STARTED):
            STARTED.append(self)
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"services.{self.name}"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        assert self.process is not None
        url = f"http://127.0.0.1:{self.port}/readyz"
        await wait_ready(self.name, self.process, url, self.log_tail, timeout_s)

    def kill(self) -> None:
        """kill -9: no drain, no commit."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def terminate(self, timeout_s: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def service_env(bootstrap: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CLICKHOOK_")}
    env.update(
        {
            "CLICKHOOK_KAFKA_BOOTSTRAP": bootstrap,
            "CLICKHOOK_TOPIC_PREFIX": prefix,
            "CLICKHOOK_ALLOWED_CIDRS": "127.0.0.0/8",
            "CLICKHOOK_ALLOW_HTTP": "true",
            "CLICKHOOK_BIND_HOST": "127.0.0.1",
            "CLICKHOOK_LOG_FORMAT": "json",
            "CLICKHOOK_TOPIC_PARTITIONS": "3",
            "CLICKHOOK_DRAIN_GRACE": "5s",
            # Ingest's portal signs with it (without one the portal is off).
            "CLICKHOOK_PORTAL_KEY": secrets.token_hex(32),
        }
    )
    env.update(extra)
    return env


async def launch(
    names: tuple[str, ...], env: dict[str, str], log_dir: Path
) -> dict[str, ServiceProcess]:
    """Start services as processes, ingest first (it creates the topics the others find), and
    wait until each is ready. ``env`` comes from ``service_env``; ports are picked here."""
    ports = {name: free_port() for name in names}
    env = {**env, **{f"CLICKHOOK_{name.upper()}_PORT": str(port) for name, port in ports.items()}}
    services = {
        name: ServiceProcess(name, env, port, log_dir / f"{name}.log")
        for name, port in ports.items()
    }
    if "ingest" in services:
        services["ingest"].start()
        await services["ingest"].wait_ready()
    others = [name for name in names if name != "ingest"]
    for name in others:
        services[name].start()
    await asyncio.gather(*(services[name].wait_ready() for name in others))
    return services
