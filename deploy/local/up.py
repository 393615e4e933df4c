"""`make up`: Kafka, the three services and a demo receiver on this machine, one command.

Ctrl-C stops everything it started. Logs of every process are prefixed and interleaved.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[2]
KAFKA_SH = ROOT / "deploy" / "local" / "kafka.sh"
PORTS = {"ingest": 8080, "dispatcher": 8081, "retry": 8082}
RECEIVER_PORT = int(os.environ.get("DEMO_RECEIVER_PORT", "9999"))
KAFKA_PORT = os.environ.get("KAFKA_PORT", "9092")


def pump(name: str, stream: IO[bytes]) -> None:
    for line in iter(stream.readline, b""):
        sys.stdout.write(f"{name:>10} | {line.decode(errors='replace')}")
        sys.stdout.flush()


def spawn(name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        args,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
    )
    assert process.stdout is not None
    threading.Thread(target=pump, args=(name, process.stdout), daemon=True).start()
    return process


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: process exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"{url} not ready after {timeout_s}s")


def api(method: str, path: str, token: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{PORTS['ingest']}{path}",
        method=method,
        data=json.dumps(body).encode(),
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        result: dict[str, object] = json.loads(response.read())
        return result


def main() -> int:
    bootstrap = (
        subprocess.run(
            ["bash", str(KAFKA_SH), "start"],
            env={**os.environ, "KAFKA_PORT": KAFKA_PORT},
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    publish_token = "demo-publish-" + secrets.token_hex(4)
    account_token = "demo-account-" + secrets.token_hex(4)
    env = {
        **os.environ,
        "CLICKHOOK_KAFKA_BOOTSTRAP": bootstrap,
        "CLICKHOOK_API_KEYS": f"{publish_token}:publish,{account_token}:account:acc_demo",
        "CLICKHOOK_ALLOWED_CIDRS": "127.0.0.0/8",
        "CLICKHOOK_ALLOW_HTTP": "true",
        "CLICKHOOK_BIND_HOST": "127.0.0.1",
        "CLICKHOOK_LOG_FORMAT": "console",
        "CLICKHOOK_RETRY_SCHEDULE": os.environ.get("CLICKHOOK_RETRY_SCHEDULE", "5s,30s,2m"),
        "CLICKHOOK_TOPIC_PARTITIONS": "3",
    }
    processes: list[subprocess.Popen[bytes]] = []
    try:
        python = sys.executable
        processes.append(spawn("ingest", [python, "-m", "services.ingest"], env))
        wait_ready(f"http://127.0.0.1:{PORTS['ingest']}/readyz", processes[-1])
        for name in ("dispatcher", "retry"):
            processes.append(spawn(name, [python, "-m", f"services.{name}"], env))
            wait_ready(f"http://127.0.0.1:{PORTS[name]}/readyz", processes[-1])
        endpoint = api(
            "POST",
            "/v1/endpoints",
            account_token,
            {
                "url": f"http://127.0.0.1:{RECEIVER_PORT}/webhooks",
                "description": "make up demo",
            },
        )
        receiver_env = {**env, "DEMO_SECRET": str(endpoint["secret"])}
        receiver_args = [python, "deploy/local/demo_receiver.py", str(RECEIVER_PORT)]
        processes.append(spawn("receiver", receiver_args, receiver_env))
        print(
            TRY_IT.format(
                publish_token=publish_token,
                account_token=account_token,
                endpoint_id=endpoint["id"],
                bootstrap=bootstrap,
            ),
            flush=True,
        )
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.wait(0.5):
            if any(process.poll() is not None for process in processes):
                print("a process exited; stopping the rest", flush=True)
                break
    finally:
        print("\nstopping…", flush=True)
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        subprocess.run(
            ["bash", str(KAFKA_SH), "stop"],
            env={**os.environ, "KAFKA_PORT": KAFKA_PORT},
            check=False,
        )
    return 0


TRY_IT = """
──────────────────────────────── clickhook is up ────────────────────────────────
 Kafka           {bootstrap}
 ingest API      http://127.0.0.1:8080   (metrics: /metrics, readiness: /readyz)
 dispatcher      http://127.0.0.1:8081/metrics     retry: http://127.0.0.1:8082/metrics
 demo endpoint   {endpoint_id} → the receiver below, which checks every signature

 Try it:
   curl -sS -X POST http://127.0.0.1:8080/v1/clicks \\
     -H 'authorization: Bearer {publish_token}' -H 'content-type: application/json' \\
     -d '{{"type":"link.clicked","occurred_at":"'$(date -u +%Y-%m-%dT%H:%M:%S.000Z)'",
          "account_id":"acc_demo","link":{{"id":"lnk_1","domain":"短.be","key":"abc"}},
          "click":{{"country":"JP"}}}}'
   curl -sS http://127.0.0.1:8080/v1/endpoints -H 'authorization: Bearer {account_token}'

 Ctrl-C stops everything.
──────────────────────────────────────────────────────────────────────────────────
"""

if __name__ == "__main__":
    sys.exit(main())
