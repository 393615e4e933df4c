"""deploy/local/kafka.sh picking its ports: what the tests and the bench start dozens of times.

A port that only a connection holds (the local end of a live connection) is taken for the
broker's bind, though nothing listens on it; and when a port is taken between the pick and the
bind, a start on picked ports (KAFKA_PORT=0) begins again on fresh ones, three attempts in all.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from collections.abc import Iterator

import pytest

from tests.support.services import ROOT, free_port

KAFKA_SH = ROOT / "deploy" / "local" / "kafka.sh"
START_TIMEOUT_S = 90

pytestmark = pytest.mark.e2e


def kafka_sh(command: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(KAFKA_SH), command],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        check=False,
    )


def bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@contextlib.contextmanager
def connection_from_port_after_a_free_one() -> Iterator[int]:
    """A live loopback connection whose local port is P + 1 while P is free; yields P."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        while True:
            port = free_port()
            if bindable(port - 1):
                break
        with socket.socket() as client:
            client.bind(("127.0.0.1", port))
            client.connect(server.getsockname())
            yield port - 1


def test_the_local_port_of_a_live_connection_is_not_taken_for_the_controller() -> None:
    """The controller goes on the client port + 1 when that is free. A connect probe finds
    nothing listening on a port a connection holds, but the broker's bind would fail on it."""
    with connection_from_port_after_a_free_one() as port:
        started = kafka_sh("start", KAFKA_PORT=str(port))
        try:
            assert started.returncode == 0, started.stderr[-2000:]
            assert started.stdout.splitlines()[-1] == f"127.0.0.1:{port}"
        finally:
            kafka_sh("stop", KAFKA_PORT=str(port))


def test_a_port_taken_before_the_bind_starts_again_on_fresh_ports_three_times_at_most() -> None:
    """The controller's listener is pinned to a port held here, so every attempt meets a taken
    port: two starts again, then a failure that says why."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        pinned = (
            f"listeners=PLAINTEXT://127.0.0.1:{free_port()},"
            f"CONTROLLER://127.0.0.1:{held.getsockname()[1]}"
        )
        started = kafka_sh("start", KAFKA_PORT="0", KAFKA_EXTRA_PROPERTIES=pinned)

    assert started.returncode == 1
    assert started.stdout == ""
    assert started.stderr.count("starting again on fresh ports") == 2
    assert started.stderr.count("broker exited during startup (") == 3
    assert "Address already in use" in started.stderr
