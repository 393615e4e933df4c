"""A fresh install starts every pod at once: each service, started at the same moment as the
others and as a second copy of itself, on a broker with none of their topics yet, becomes
ready (each creates the topics and waits for their metadata instead of assuming it)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from tests.support.broker import PrivateBroker
from tests.support.services import ServiceProcess, free_port, service_env

pytestmark = [pytest.mark.kafka, pytest.mark.e2e, pytest.mark.timeout(150)]

SERVICES = ("ingest", "dispatcher", "retry")
COPIES = 2
# Round one meets a broker that has never had a topic (nor its offsets topic); the others
# meet a warm broker, each with topics of its own prefix to create. Before the fix every
# round had services dying at start.
ROUNDS = 3
READY_TIMEOUT_S = 60.0


def all_at_once(bootstrap: str, log_dir: Path) -> list[ServiceProcess]:
    prefix = f"race{uuid.uuid4().hex[:8]}."
    processes = []
    for copy in range(COPIES):
        for name in SERVICES:
            port = free_port()
            env = service_env(bootstrap, prefix, **{f"CLICKHOOK_{name.upper()}_PORT": str(port)})
            log_path = log_dir / f"{prefix}{name}-{copy}.log"
            processes.append(ServiceProcess(name, env, port, log_path))
    return processes


async def test_every_service_started_at_once_twice_on_a_fresh_broker_becomes_ready(
    private_broker: PrivateBroker, tmp_path: Path
) -> None:
    for round_ in range(1, ROUNDS + 1):
        processes = all_at_once(private_broker.bootstrap, tmp_path)
        for process in processes:
            process.start()
        try:
            outcomes = await asyncio.gather(
                *(p.wait_ready(READY_TIMEOUT_S) for p in processes), return_exceptions=True
            )
        finally:
            statuses = [p.terminate() for p in processes]
        failed = [f"{p.log_path.name}: {o}" for p, o in zip(processes, outcomes, strict=True) if o]

        assert failed == [], f"round {round_}"
        assert statuses == [0] * len(processes), f"round {round_}"
