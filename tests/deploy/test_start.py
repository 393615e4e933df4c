"""The command lines and environments in the manifests start the services.

For the dev and prod overlays: the topics Job's command, then each Deployment's command, run
here as subprocesses with the environment the kubelet would build from the rendered objects.
What cannot be the cluster's is overridden, and only that: the broker address (the test
broker), the topic prefix (unique per test), replication 1 (one test broker), the ports (free
ones) and the bind address (loopback). Every Deployment turns /readyz ready, on the probe's
path, and exits 0 within terminationGracePeriodSeconds of SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from shared.kafka.clients import topic_specs
from shared.ops.settings import load_settings
from tests.deploy.manifests import (
    KUSTOMIZE_INSTALL_TIMEOUT_S,
    ROOT,
    SERVICES,
    Obj,
    Rendered,
    container_named,
    named_port,
    pod_spec,
    resolve_env,
)
from tests.support.services import free_port, wait_ready

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(KUSTOMIZE_INSTALL_TIMEOUT_S + 120)]

TEST_SECRETS = {
    ("clickhook-api-keys", "api-keys"): "test-publish:publish",
    ("clickhook-portal-key", "portal-key"): secrets.token_hex(32),
}
# Inherited from the test's own environment: what a process needs to run at all.
PASS_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")
READY_TIMEOUT_S = 60.0


def argv(container: Obj) -> list[str]:
    command = [*container.get("command", []), *container.get("args", [])]
    # The image's python and console scripts are the venv's; here, this venv's.
    scripts = {
        "python": sys.executable,
        "clickhook": str(Path(sys.executable).with_name("clickhook")),
    }
    assert command[0] in scripts, f"{command[0]}: not a program of the image's venv"
    return [scripts[command[0]], *command[1:]]


def process_env(resolved: dict[str, str], overrides: dict[str, str]) -> dict[str, str]:
    env = {key: os.environ[key] for key in PASS_THROUGH if key in os.environ}
    env.update(resolved)
    env.update(overrides)
    return env


@dataclass
class Started:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    grace_s: int
    log: Path

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])


def start(name: str, container: Obj, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            argv(container),
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def stop(started: Started) -> int:
    process = started.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=started.grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(
                f"{started.name} still running {started.grace_s} s after SIGTERM"
                f" (terminationGracePeriodSeconds):\n{started.tail()}"
            ) from None
    return process.returncode


@pytest.mark.parametrize("overlay", ["dev", "prod"])
async def test_manifest_commands_start_the_services(
    overlay: str,
    rendered_all: dict[str, Rendered],
    kafka_bootstrap: str,
    prefix: str,
    tmp_path: Path,
) -> None:
    rendered = rendered_all[overlay]
    overrides = {
        "CLICKHOOK_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "CLICKHOOK_TOPIC_PREFIX": prefix,
        "CLICKHOOK_TOPIC_REPLICATION": "1",
        "CLICKHOOK_BIND_HOST": "127.0.0.1",
    }

    # The topics Job first, as in the cluster: it runs to completion and creates every topic.
    job = rendered.get("Job", "clickhook-topics")
    job_container = pod_spec(job)["containers"][0]
    job_env = process_env(resolve_env(rendered, job, job_container, TEST_SECRETS), overrides)
    log = tmp_path / "topics.log"
    process = start("topics", job_container, job_env, log)
    try:
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code == 0, f"topics Job failed:\n{log.read_text(errors='replace')}"
    settings = load_settings(job_env)
    wanted = {spec.name: spec.num_partitions for spec in topic_specs(settings)}
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(list(wanted))
    finally:
        await admin.close()
    found = {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}
    assert found == wanted, "the Job created every topic with the manifest's partitions"
    assert settings.topic_partitions == int(rendered.settings()["CLICKHOOK_TOPIC_PARTITIONS"])

    # Then the three Deployments, side by side.
    started: list[Started] = []
    try:
        for service in SERVICES:
            deployment = rendered.deployment(service)
            container = container_named(deployment, service)
            resolved = resolve_env(rendered, deployment, container, TEST_SECRETS)
            probe = container["readinessProbe"]["httpGet"]
            probe_port = named_port(container, probe["port"])
            # The setting that makes the service listen on the probed port: moved to a free one.
            (port_key,) = [
                key
                for key, value in resolved.items()
                if key.startswith("CLICKHOOK_")
                and key.endswith("_PORT")
                and value == str(probe_port)
                and service.upper() in key
            ]
            port = free_port()
            env = process_env(resolved, {**overrides, port_key: str(port)})
            log = tmp_path / f"{service}.log"
            started.append(
                Started(
                    service,
                    start(service, container, env, log),
                    f"http://127.0.0.1:{port}{probe['path']}",
                    pod_spec(deployment)["terminationGracePeriodSeconds"],
                    log,
                )
            )
        await asyncio.gather(
            *(wait_ready(s.name, s.process, s.url, s.tail, READY_TIMEOUT_S) for s in started)
        )
    finally:
        codes = {s.name: stop(s) for s in started}
    assert codes == dict.fromkeys(SERVICES, 0), "every service exits 0 on SIGTERM"
