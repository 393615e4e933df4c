"""`make up`: Kafka, the three services and a demo receiver on this machine, one command.

Usage: python deploy/local/up.py [--data DIR]      (make up, or make up DATA=DIR)

Before anything starts, every port it needs is checked: one already taken (an earlier `make up`
still running, a broker of `make kafka-start`, anything else) stops it with one line saying
which, and nothing is started or stopped. It stops only what it started: its services, its
receiver, and the broker it started itself.

Without --data the tokens are new on every run and the broker's data is deleted at exit. With
--data DIR the broker keeps its data in DIR/kafka and the tokens and the demo endpoint are kept
in DIR/state.json, so clicks, endpoints and dead letters are still there next time.

Ports and the schedule are the services' settings (CLICKHOOK_INGEST_PORT, …,
CLICKHOOK_RETRY_SCHEDULE, default 5s,30s,2m here); the broker's port is KAFKA_PORT (9092), the
receiver's DEMO_RECEIVER_PORT (9999). Logs of every process are printed here, prefixed.
"""

from __future__ import annotations

import argparse
import errno
import functools
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from shared.model.schedule import duration_label
from shared.ops.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
KAFKA_SH = ROOT / "deploy" / "local" / "kafka.sh"
SERVICES = ("ingest", "dispatcher", "retry")
ACCOUNT_ID = "acc_42"  # the README's examples publish clicks of this account
DEMO_SCHEDULE = "5s,30s,2m"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
WIDTH = 80


@dataclass(frozen=True)
class Port:
    number: int
    what: str
    setting: str


@dataclass(frozen=True)
class Plan:
    """What this run will start, where, and with which settings."""

    settings: Settings
    env: dict[str, str]
    kafka_port: int
    receiver_port: int
    data: Path | None

    def ports(self) -> list[Port]:
        settings = self.settings
        return [
            Port(self.kafka_port, "Kafka", "KAFKA_PORT"),
            Port(settings.ingest_port, "ingest API", "CLICKHOOK_INGEST_PORT"),
            Port(settings.dispatcher_port, "dispatcher", "CLICKHOOK_DISPATCHER_PORT"),
            Port(settings.retry_port, "retry", "CLICKHOOK_RETRY_PORT"),
            Port(self.receiver_port, "demo receiver", "DEMO_RECEIVER_PORT"),
        ]

    def port_of(self, service: str) -> int:
        return {
            "ingest": self.settings.ingest_port,
            "dispatcher": self.settings.dispatcher_port,
            "retry": self.settings.retry_port,
        }[service]

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.settings.ingest_port}"

    @property
    def receiver_url(self) -> str:
        return f"http://127.0.0.1:{self.receiver_port}/webhooks"

    @property
    def failing_url(self) -> str:
        """The demo receiver's path that answers 503 until ``POST …/broken/fix``."""
        return f"http://127.0.0.1:{self.receiver_port}/broken"

    def broker_log(self) -> str:
        """Where kafka.sh keeps the broker's log (its state dir, as kafka.sh picks it)."""
        cache = Path(os.environ.get("CLICKHOOK_CACHE_DIR") or Path.home() / ".cache/clickhook")
        state = os.environ.get("KAFKA_STATE_DIR") or cache / f"run-{self.kafka_port}"
        return home_relative(Path(state) / "logs" / "server.log")


def home_relative(path: Path) -> str:
    """``~/…`` for a path in the home directory: shorter, so the banner stays narrow."""
    home = str(Path.home())
    return "~" + str(path)[len(home) :] if str(path).startswith(home + "/") else str(path)


@dataclass
class Tokens:
    publish: str
    account: str
    admin: str

    @classmethod
    def new(cls) -> Tokens:
        return cls(
            *(f"demo-{role}-{secrets.token_hex(4)}" for role in ("publish", "account", "admin"))
        )

    def api_keys(self) -> str:
        return f"{self.publish}:publish,{self.account}:account:{ACCOUNT_ID},{self.admin}:admin"


# --- output that never stops the stopping -------------------------------------------------------

_output_lock = threading.Lock()
output_gone = threading.Event()


def say(text: str, stream: IO[str] | None = None) -> None:
    """Print; a terminal that went away (`make up | tee` after tee died) ends the run cleanly
    instead of breaking it, so everything started is still stopped."""
    try:
        with _output_lock:
            out = stream or sys.stdout
            out.write(text + "\n")
            out.flush()
    except (OSError, ValueError):
        output_gone.set()


def pump(name: str, stream: IO[bytes]) -> None:
    for line in iter(stream.readline, b""):
        say(f"{name:>10} | {line.decode(errors='replace').rstrip()}")


# --- checks before anything starts --------------------------------------------------------------


def port_taken(port: int) -> bool:
    """Whether a listener holds the port on loopback (what the services would bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def holder(port: int) -> str | None:
    """The process listening on ``port`` (``python3 pid 4242``), when ``ss`` can say: only a
    user's own processes are named, which is what an earlier make up is."""
    try:
        listing = subprocess.run(
            ["ss", "-Hltnp", f"sport = :{port}"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r'users:\(\("(?P<name>[^"]+)",pid=(?P<pid>\d+)', listing)
    return f"{found.group('name')} pid {found.group('pid')}" if found else None


def refusal(plan: Plan) -> str | None:
    """One line when a port this run needs is taken; None when all are free."""
    taken = [port for port in plan.ports() if port_taken(port.number)]
    if len(taken) > 1:
        numbers = ", ".join(str(port.number) for port in taken)
        return (
            f"make up: ports {numbers} are already in use: an earlier make up still running? "
            f"(held by {holder(taken[0].number) or 'another process'}; stop it with Ctrl-C)"
        )
    if taken:
        port = taken[0]
        hint = (
            "a broker this run did not start (make kafka-stop stops one of make kafka-start)"
            if port.what == "Kafka"
            else "an earlier make up still running?"
        )
        held = holder(port.number)
        return (
            f"make up: port {port.number} ({port.what}) is already in use"
            f"{f' by {held}' if held else ''} ({hint}); free it or set {port.setting}"
        )
    seen: dict[int, str] = {}
    for port in plan.ports():
        if port.number in seen:
            return f"make up: {port.what} and {seen[port.number]} both want port {port.number}"
        seen[port.number] = port.what
    return None


# --- state kept between runs --------------------------------------------------------------------


@dataclass
class State:
    """What --data keeps: the tokens and the demo endpoints (their ids and secret)."""

    tokens: Tokens
    endpoint_id: str | None = None
    secret: str | None = None
    # The quickstart's endpoint whose receiver is down (same secret, the receiver's /broken).
    failing_endpoint_id: str | None = None

    @classmethod
    def load(cls, data: Path | None) -> State:
        path = state_path(data)
        if path is None or not path.exists():
            return cls(Tokens.new())
        saved = json.loads(path.read_text())
        return cls(
            Tokens(**saved["tokens"]),
            saved.get("endpoint_id"),
            saved.get("secret"),
            saved.get("failing_endpoint_id"),
        )

    def save(self, data: Path | None) -> None:
        path = state_path(data)
        if path is None:
            return
        body = {
            "tokens": vars(self.tokens),
            "endpoint_id": self.endpoint_id,
            "secret": self.secret,
            "failing_endpoint_id": self.failing_endpoint_id,
        }
        path.touch(mode=0o600)  # tokens and a secret: for this user only
        path.write_text(json.dumps(body, indent=2) + "\n")


def state_path(data: Path | None) -> Path | None:
    return None if data is None else data / "state.json"


# --- the run ------------------------------------------------------------------------------------


def plan_from(data: Path | None, tokens: Tokens) -> Plan:
    kafka_port = int(os.environ.get("KAFKA_PORT") or 9092)
    env = {
        **os.environ,
        "CLICKHOOK_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",  # where kafka.sh listens
        "CLICKHOOK_API_KEYS": tokens.api_keys(),
        "CLICKHOOK_ALLOWED_CIDRS": "127.0.0.0/8",
        "CLICKHOOK_ALLOW_HTTP": "true",
        "CLICKHOOK_BIND_HOST": "127.0.0.1",
        "CLICKHOOK_LOG_FORMAT": "console",
        "CLICKHOOK_RETRY_SCHEDULE": os.environ.get("CLICKHOOK_RETRY_SCHEDULE") or DEMO_SCHEDULE,
        "CLICKHOOK_TOPIC_PARTITIONS": "3",
        # A key of this run's own: portal sessions end when make up stops.
        "CLICKHOOK_PORTAL_KEY": os.environ.get("CLICKHOOK_PORTAL_KEY") or secrets.token_hex(32),
    }
    return Plan(
        settings=load_settings(env),
        env=env,
        kafka_port=kafka_port,
        receiver_port=int(os.environ.get("DEMO_RECEIVER_PORT") or 9999),
        data=data,
    )


def start_kafka(plan: Plan) -> str:
    env = {**os.environ, "KAFKA_PORT": str(plan.kafka_port)}
    if plan.data is not None:
        env["KAFKA_DATA_DIR"] = str(plan.data / "kafka")  # kafka.sh keeps a dir it was given
    started = subprocess.run(
        ["bash", str(KAFKA_SH), "start"], env=env, check=False, stdout=subprocess.PIPE, text=True
    )
    if started.returncode != 0:
        raise SystemExit("make up: the broker did not start (see the lines above)")
    return started.stdout.strip().splitlines()[-1]


def stop_kafka(plan: Plan) -> None:
    env = {**os.environ, "KAFKA_PORT": str(plan.kafka_port)}
    subprocess.run(["bash", str(KAFKA_SH), "stop"], env=env, check=False)


def spawn(name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        args,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
    )
    assert process.stdout is not None
    threading.Thread(target=pump, args=(name, process.stdout), daemon=True).start()
    return process


def wait_until(ready: Callable[[], bool], process: subprocess.Popen[bytes], what: str) -> None:
    """Poll ``ready`` until it holds; stop at once if the process exits meanwhile."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"make up: {what}: the process exited with {process.returncode}")
        if ready():
            return
        time.sleep(0.2)
    raise SystemExit(f"make up: {what} not ready after {READY_TIMEOUT_S:.0f}s")


def answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except OSError:
        return False


def listens(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def api(plan: Plan, method: str, path: str, token: str, body: object = None) -> dict[str, object]:
    request = urllib.request.Request(  # noqa: S310 - loopback
        plan.api + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        result: dict[str, object] = json.loads(response.read())
        return result


def still_there(plan: Plan, state: State, endpoint_id: str | None) -> bool:
    """Whether the broker still has an endpoint kept in --data."""
    if endpoint_id is None:
        return False
    try:
        api(plan, "GET", f"/v1/endpoints/{endpoint_id}", state.tokens.account)
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise
        return False
    return True


def demo_endpoints(plan: Plan, state: State) -> State:
    """The two demo endpoints, those kept in --data if the broker still has them, else new
    ones: one at the receiver, and one at its /broken path (down until fixed), which signs with
    the same secret so that the receiver verifies it once fixed."""
    if not (state.secret is not None and still_there(plan, state, state.endpoint_id)):
        body = {"url": plan.receiver_url, "description": "make up demo"}
        created = api(plan, "POST", "/v1/endpoints", state.tokens.account, body)
        state = State(state.tokens, str(created["id"]), str(created["secret"]))
    if not still_there(plan, state, state.failing_endpoint_id):
        failing = {
            "url": plan.failing_url,
            "description": "make up demo: a receiver that is down",
            "secret": state.secret,
        }
        created = api(plan, "POST", "/v1/endpoints", state.tokens.account, failing)
        state.failing_endpoint_id = str(created["id"])
    return state


def portal_link(plan: Plan, state: State) -> str:
    """A one-time portal link for the demo account (valid 5 minutes)."""
    session = api(plan, "POST", "/v1/portal/sessions", state.tokens.account)
    return str(session["url"])


def run(plan: Plan, state: State, stop: threading.Event) -> None:
    """Start everything but the broker, print the banner, wait for Ctrl-C or a process exit."""
    processes: list[subprocess.Popen[bytes]] = []
    python = sys.executable
    try:
        processes.append(spawn("ingest", [python, "-m", "services.ingest"], plan.env))
        wait_until(functools.partial(answers_200, f"{plan.api}/readyz"), processes[0], "ingest")
        processes.extend(
            spawn(name, [python, "-m", f"services.{name}"], plan.env) for name in SERVICES[1:]
        )
        for name, process in zip(SERVICES[1:], processes[1:], strict=True):
            ready = functools.partial(answers_200, f"http://127.0.0.1:{plan.port_of(name)}/readyz")
            wait_until(ready, process, name)
        state = demo_endpoints(plan, state)
        state.save(plan.data)
        assert state.secret is not None
        receiver_env = {
            **plan.env,
            "DEMO_SECRET": state.secret,
            "DEMO_ENDPOINTS": f"/webhooks={state.endpoint_id},/broken={state.failing_endpoint_id}",
        }
        receiver = [python, "deploy/local/demo_receiver.py", str(plan.receiver_port)]
        processes.append(spawn("receiver", receiver, receiver_env))
        wait_until(functools.partial(listens, plan.receiver_port), processes[-1], "receiver")
        say(banner(plan, state))
        # After the banner: a link is longer than the banner's 80 columns.
        say(f"portal (this link opens once, within 5 minutes): {portal_link(plan, state)}")
        while not stop.wait(0.5) and not output_gone.is_set():
            if any(process.poll() is not None for process in processes):
                say("make up: a process exited; stopping the rest")
                break
    finally:
        say("\nstopping…")
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make up", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        metavar="DIR",
        help="keep the broker's data, the tokens and the demo endpoint in DIR between runs",
    )
    args = parser.parse_args(argv)
    data = args.data.expanduser().resolve() if args.data else None
    state = State.load(data)
    plan = plan_from(data, state.tokens)
    refused = refusal(plan)
    if refused is not None:
        say(refused, sys.stderr)
        return 1
    if plan.data is not None:
        plan.data.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    bootstrap = start_kafka(plan)  # from here on, the broker is ours: stopped on the way out
    try:
        run(plan, state, stop)
    finally:
        stop_kafka(plan)
    say(f"make up: stopped (broker was {bootstrap})")
    return 0


# --- the banner ---------------------------------------------------------------------------------


def banner(plan: Plan, state: State) -> str:
    """What the user needs to try it, at most 80 columns wide."""
    settings, tokens = plan.settings, state.tokens
    schedule = ", ".join(duration_label(delay) for delay in settings.retry_schedule_s)
    if plan.data is None:
        kept = [
            " state         tokens are new on every run; the broker's data is deleted at",
            "               exit (keep both between runs: make up DATA=~/clickhook-data)",
        ]
    else:
        kept = [
            " state         broker data, tokens, demo endpoint kept (delete to start over):",
            f"               {home_relative(plan.data)}",
        ]
    lines = [
        rule(" clickhook is up "),
        f" ingest API    {plan.api}   (/readyz /metrics /openapi.json)",
        f" dispatcher    http://127.0.0.1:{settings.dispatcher_port}/metrics",
        f" retry         http://127.0.0.1:{settings.retry_port}/metrics",
        f" Kafka         127.0.0.1:{plan.kafka_port}",
        f" retries       after {schedule}, then webhook.dlq",
        f" demo endpoint {state.endpoint_id} (account {ACCOUNT_ID}), to the receiver",
        f"               on port {plan.receiver_port}: it checks each signature and prints each"
        " click",
        f" failing       {state.failing_endpoint_id}, to the receiver's /broken: 503 until",
        "               fixed (the quickstart: docs/guides/quickstart.md)",
        " portal        a link below (opens once); a new one: POST /v1/portal/sessions",
        " logs          here, one prefix per process; the broker's in",
        f"               {plan.broker_log()}",
        *kept,
        "",
        " In another terminal, in this directory (the README's examples use these):",
        "   . .venv/bin/activate",
        f"   export CLICKHOOK_API={plan.api}",
        f"   export PUBLISH_TOKEN={tokens.publish}",
        f"   export ACCOUNT_TOKEN={tokens.account}",
        f"   export ADMIN_TOKEN={tokens.admin}",
        f"   export RECEIVER_URL={plan.receiver_url}",
        f"   export DEMO_SECRET={state.secret}",
        f"   export CLICKHOOK_KAFKA_BOOTSTRAP=127.0.0.1:{plan.kafka_port}",
        f"   export FAILING_ENDPOINT_ID={state.failing_endpoint_id}",
        f"   export FAILING_URL={plan.failing_url}",
        "",
        " Then publish a click; the receiver prints it here:",
        '   curl -sS -X POST "$CLICKHOOK_API/v1/clicks" \\',
        '     -H "authorization: Bearer $PUBLISH_TOKEN" \\',
        "     -H 'content-type: application/json' \\",
        '     -d \'{"type": "link.clicked", "occurred_at": "\'$(date -u +%FT%TZ)\'",',
        f'          "account_id": "{ACCOUNT_ID}", "link": {{"id": "lnk_9", "key": "abc"}}}}\'',
        "   clickhook topics tail webhook.attempts     # what happened, from Kafka",
        "",
        " Ctrl-C stops everything.",
        rule(""),
    ]
    return "\n".join(lines)


def rule(title: str) -> str:
    side = (WIDTH - len(title)) // 2
    return "─" * side + title + "─" * (WIDTH - side - len(title))


if __name__ == "__main__":
    sys.exit(main())
