"""The processes a scenario runs: the broker, the three services, the receiver, and jobs
for the load generator. Services start as they are deployed (``python -m services.<name>``),
through the same helpers the end-to-end tests use."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import msgspec

from tests.bench.procstat import Usage, current_rss_mb, usage
from tests.bench.wire import GroupLedger, Job
from tests.support.services import ROOT, ServiceProcess, free_port, service_env

ADMIN_TOKEN = "bench-admin"
PUBLISH_TOKEN = "bench-publish"
SERVICES = ("ingest", "dispatcher", "retry")
JOB_TIMEOUT_S = 300
BROKER_START_ATTEMPTS = 3

R = TypeVar("R")


class Broker:
    """A throwaway single-node Kafka from deploy/local/kafka.sh on a free port."""

    def __init__(self, log_dir: Path) -> None:
        self.port = 0
        self._log_dir = log_dir

    def start(self) -> str:
        failure = ""
        # A free port (or the controller's, port + 1) can be taken by another process
        # between the check and the broker's bind, on a busy machine: try other ports.
        for _ in range(BROKER_START_ATTEMPTS):
            self.port = free_port()
            done = self._kafka_sh("start")
            if done.returncode == 0:
                return done.stdout.strip().splitlines()[-1]
            failure = done.stderr[-3000:]
        raise RuntimeError(f"the broker did not start:\n{failure}")

    def stop(self) -> None:
        self._kafka_sh("stop")

    def node_pids(self) -> list[int]:
        """The broker's JVM, as a one-node list (a cluster has one per node)."""
        return [int((self._state_dir() / "kafka.pid").read_text())]

    def data_dir(self) -> Path:
        """The broker's ``log.dirs``, as kafka.sh wrote it into the node's properties."""
        properties = self._state_dir() / "server.properties"
        for line in properties.read_text().splitlines():
            if line.startswith("log.dirs="):
                return Path(line.removeprefix("log.dirs="))
        raise RuntimeError(f"no log.dirs in {properties}")

    def _state_dir(self) -> Path:
        return self._log_dir / f"kafka-{self.port}"

    def _kafka_sh(self, command: str) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "KAFKA_PORT": str(self.port),
            "KAFKA_LOG_LEVEL": "WARN",
            # The broker's pid file, config and logs go with the bench's other logs.
            "KAFKA_STATE_DIR": str(self._state_dir()),
        }
        return subprocess.run(
            ["bash", "deploy/local/kafka.sh", command],
            cwd=ROOT,
            env=env,
            check=False,
            capture_output=True,
            text=True,
        )


class ReceiverProcess:
    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self._log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        command = [sys.executable, "-m", "tests.bench.receiver"]
        with self._log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, str(self.port)],
                stdin=subprocess.PIPE,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self, session: aiohttp.ClientSession) -> None:
        for _ in range(100):
            try:
                await self.count(session, "-")
                return
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
        raise RuntimeError("the bench receiver did not start")

    async def count(self, session: aiohttp.ClientSession, group: str) -> int:
        async with session.get(self.url(f"/_count/{group}")) as response:
            return int(await response.read())

    async def ledger(self, session: aiohttp.ClientSession, group: str) -> GroupLedger:
        async with session.get(self.url(f"/_ledger/{group}")) as response:
            return msgspec.json.decode(await response.read(), type=GroupLedger)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)


@dataclass
class Stack:
    """The three services on one topic prefix, so scenarios never see each other's records."""

    bootstrap: str
    log_dir: Path
    session: aiohttp.ClientSession
    extra_env: dict[str, str] = field(default_factory=dict)
    prefix: str = field(default_factory=lambda: f"bench{uuid.uuid4().hex[:8]}.")
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ports = {name: free_port() for name in SERVICES}
        env = service_env(
            self.bootstrap,
            self.prefix,
            CLICKHOOK_API_KEYS=f"{ADMIN_TOKEN}:admin,{PUBLISH_TOKEN}:publish",
            CLICKHOOK_INGEST_PORT=str(ports["ingest"]),
            CLICKHOOK_DISPATCHER_PORT=str(ports["dispatcher"]),
            CLICKHOOK_RETRY_PORT=str(ports["retry"]),
            # Logging every delivery would be measured too (unless a scenario asks for it).
            **{"CLICKHOOK_LOG_LEVEL": "warning", **self.extra_env},
        )
        self.services = {
            name: ServiceProcess(name, env, port, self.log_dir / f"{self.prefix}{name}.log")
            for name, port in ports.items()
        }

    def topic(self, name: str) -> str:
        return self.prefix + name

    def url(self, service: str, path: str) -> str:
        return f"http://127.0.0.1:{self.services[service].port}{path}"

    async def start(self, *names: str) -> None:
        for name in names:
            self.services[name].start()
        await asyncio.gather(*(self.services[name].wait_ready() for name in names))

    async def stop(self, *names: str) -> None:
        running = [self.services[n] for n in names or SERVICES if self.running(n)]
        await asyncio.gather(*(asyncio.to_thread(service.terminate) for service in running))

    def running(self, name: str) -> bool:
        process = self.services[name].process
        return process is not None and process.poll() is None

    def usage(self, name: str) -> Usage:
        return usage(self.pid(name))

    def rss_mb(self, name: str) -> float:
        return current_rss_mb(self.pid(name))

    def pid(self, name: str) -> int:
        process = self.services[name].process
        assert process is not None
        return process.pid

    async def create_endpoint(self, url: str, account_id: str, **fields: Any) -> str:
        async with self.session.post(
            self.url("ingest", "/v1/endpoints"),
            json={"url": url, "account_id": account_id, **fields},
            headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as response:
            body = await response.json()
            if response.status != 201:
                raise RuntimeError(f"creating an endpoint failed: {response.status} {body}")
            endpoint_id: str = body["id"]
            return endpoint_id

    async def metric(self, service: str, name: str) -> float:
        """Sum of a Prometheus counter's samples (every label set) on ``service``."""
        async with self.session.get(self.url(service, "/metrics")) as response:
            text = await response.text()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith((name + "{", name + " "))
        )


async def run_job(job: Job, result_type: type[R]) -> R:
    """Run one load-generator job in its own process and return its result.

    The result comes back in a file, not on stdout: read through a pipe, a closed loop's
    3 MB of latencies sometimes arrived cut at a multiple of 64 KiB, with exit status 0."""
    with tempfile.NamedTemporaryFile(prefix="clickhook-loadgen-", suffix=".json") as result:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.bench.loadgen",
            result.name,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(JOB_TIMEOUT_S):
                _, err = await process.communicate(msgspec.json.encode(job))
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        if process.returncode != 0:
            raise RuntimeError(f"load generator failed:\n{err.decode(errors='replace')[-2000:]}")
        out = await asyncio.to_thread(Path(result.name).read_bytes)
        return msgspec.json.decode(out, type=result_type)
