"""`make up` (deploy/local/up.py) as a user runs it: a process, its output, Ctrl-C.

It refuses to start, with one line and at once, when a port it needs is taken, and then starts
and stops nothing (a broker it did not start keeps running). A full start prints a banner of at
most 80 columns whose exports work as printed, delivers a click to the demo receiver, opens the
portal, keeps its state in a data directory between runs when asked to, and stops its own broker
on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.support.services import ROOT, free_port

UP = ROOT / "deploy" / "local" / "up.py"
REFUSAL_TIMEOUT_S = 30
START_TIMEOUT_S = 120
PORT_SETTINGS = (
    "KAFKA_PORT",
    "CLICKHOOK_INGEST_PORT",
    "CLICKHOOK_DISPATCHER_PORT",
    "CLICKHOOK_RETRY_PORT",
    "DEMO_RECEIVER_PORT",
)


def up_env(**ports: int) -> dict[str, str]:
    """The user's environment with every port `make up` takes moved to a free one (and none
    of them next to the broker's, which kafka.sh takes for its controller when free)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CLICKHOOK_")}
    chosen: dict[str, int] = {}
    while len(set(chosen.values())) < len(PORT_SETTINGS) or chosen["KAFKA_PORT"] + 1 in set(
        chosen.values()
    ):
        chosen = {name: free_port() for name in PORT_SETTINGS}
    env.update({name: str(port) for name, port in chosen.items()})
    env.update({name: str(port) for name, port in ports.items()})
    return env


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


@contextlib.contextmanager
def held_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def run_up(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(UP)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=REFUSAL_TIMEOUT_S,
        check=False,
    )


@pytest.mark.parametrize("setting", PORT_SETTINGS)
def test_make_up_refuses_a_taken_port_with_one_line_and_starts_nothing(setting: str) -> None:
    with held_port() as port:
        env = up_env(**{setting: port})
        result = run_up(env)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"port {port} (" in result.stderr
    assert "already in use" in result.stderr
    assert setting in result.stderr
    assert not listening(int(env["KAFKA_PORT"])), "no broker was started"


@pytest.mark.kafka
async def test_make_up_never_stops_a_broker_it_did_not_start(kafka_bootstrap: str) -> None:
    broker_port = int(kafka_bootstrap.rsplit(":", 1)[1])

    result = await asyncio.to_thread(run_up, up_env(KAFKA_PORT=broker_port))

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"port {broker_port} (Kafka) is already in use" in result.stderr
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()  # the broker still answers
    await admin.list_topics()
    await admin.close()


# --- a full start --------------------------------------------------------------------------------


@dataclass
class Up:
    """A running `make up`: its process and everything it printed so far."""

    process: asyncio.subprocess.Process
    lines: list[str]

    async def read_until(self, pattern: str, timeout_s: float = START_TIMEOUT_S) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.lines:
                if re.search(pattern, line):
                    return line
            raw = await asyncio.wait_for(
                self.process.stdout.readline(), deadline - time.monotonic()
            )
            if not raw:
                break
            self.lines.append(raw.decode().rstrip("\n"))
        tail = "\n".join(self.lines[-40:])
        raise AssertionError(f"make up never printed {pattern!r}:\n{tail}")

    def banner(self) -> list[str]:
        start = next(i for i, line in enumerate(self.lines) if "clickhook is up" in line)
        end = next(i for i, line in enumerate(self.lines) if i > start and set(line) == {"─"})
        return self.lines[start : end + 1]

    def exports(self) -> dict[str, str]:
        found = (re.fullmatch(r"\s+export (\w+)=(\S+)", line) for line in self.banner())
        return {match.group(1): match.group(2) for match in found if match}

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)  # Ctrl-C
            try:
                await asyncio.wait_for(self.read_until("make up: stopped"), 60)
            finally:
                await asyncio.wait_for(self.process.wait(), 30)
        assert self.process.returncode is not None
        return self.process.returncode


async def start_up(env: dict[str, str], *args: str) -> Up:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(UP),
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
    )
    up = Up(process, [])
    try:
        await up.read_until(r"^─+$")  # the banner's last line
    except BaseException:
        await up.stop()
        raise
    return up


async def publish(api: str, token: str, link_id: str) -> None:
    click = {
        "type": "link.clicked",
        "occurred_at": datetime.now(UTC).isoformat(),
        "account_id": "acc_42",
        "link": {"id": link_id, "key": "abc"},
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{api}/v1/clicks", json=click, headers={"authorization": f"Bearer {token}"}
        ) as response,
    ):
        assert response.status == 202, await response.text()


@pytest.mark.e2e
@pytest.mark.timeout(2 * START_TIMEOUT_S + 120)
async def test_make_up_with_a_data_directory_keeps_tokens_and_data_across_runs() -> None:
    env = up_env()
    # A short path, as a user's ~/clickhook-data: pytest's own are longer than a banner line.
    with tempfile.TemporaryDirectory(prefix="clickhook-up-") as kept:
        env["KAFKA_STATE_DIR"] = f"{kept}/kafka-state"  # the broker's logs, not in ~/.cache
        await run_twice_on(env, Path(kept) / "data")


async def open_portal(api: str, token: str) -> None:
    """The portal works: make up gives ingest a portal key of its own."""
    auth = {"authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{api}/v1/portal/sessions", headers=auth) as response:
            assert response.status == 201, await response.text()
            link = (await response.json())["url"]
        async with session.get(link, allow_redirects=False) as opened:
            assert opened.status == 303, await opened.text()


async def quickstart_failing_endpoint(up: Up, exports: dict[str, str]) -> None:
    """The quickstart's endpoint is down (503) until fixed, and make up printed a portal link."""
    assert exports["FAILING_ENDPOINT_ID"].startswith("ep_")
    await up.read_until(r"^portal \(this link opens once, within 5 minutes\): http://\S+/portal/")
    failing = exports["FAILING_ENDPOINT_ID"]
    await up.read_until(rf"\[receiver\] {failing} \(/broken\): answered 503")
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{exports['FAILING_URL']}/fix") as fixed,
    ):
        assert fixed.status == 200, await fixed.text()


async def run_twice_on(env: dict[str, str], data: Path) -> None:
    first = await start_up(env, "--data", str(data))
    try:
        banner = first.banner()
        assert max(len(line) for line in banner) <= 80, "\n".join(banner)
        text = "\n".join(banner)
        assert "after 5s, 30s, 2m, then webhook.dlq" in text
        assert f"{env['KAFKA_STATE_DIR']}/logs/server.log" in text
        assert str(data) in text
        exports = first.exports()
        assert exports["CLICKHOOK_API"] == f"http://127.0.0.1:{env['CLICKHOOK_INGEST_PORT']}"
        assert exports["CLICKHOOK_KAFKA_BOOTSTRAP"] == f"127.0.0.1:{env['KAFKA_PORT']}"
        assert {"PUBLISH_TOKEN", "ACCOUNT_TOKEN", "ADMIN_TOKEN", "RECEIVER_URL"} <= set(exports)
        assert exports["DEMO_SECRET"].startswith("whsec_")
        await publish(exports["CLICKHOOK_API"], exports["PUBLISH_TOKEN"], "lnk_first")
        await open_portal(exports["CLICKHOOK_API"], exports["ACCOUNT_TOKEN"])
        endpoint = re.search(r"demo endpoint (ep_\w+)", text)
        assert endpoint is not None
        # The receiver names the endpoint and the link (the click has a key, no domain).
        await first.read_until(
            rf"receiver \| \[receiver\] {endpoint.group(1)} \(/webhooks\): signature ok "
            r".*link=abc "
        )
        await quickstart_failing_endpoint(first, exports)
    finally:
        assert await first.stop() == 0
    assert not listening(int(env["KAFKA_PORT"])), "make up stops the broker it started"

    second = await start_up(env, "--data", str(data))
    try:
        assert second.exports() == exports, "the same tokens"
        assert f"demo endpoint {endpoint.group(1)} " in "\n".join(second.banner())
    finally:
        assert await second.stop() == 0
