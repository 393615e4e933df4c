"""What an operator sees while the services start: every line in our format (structlog's,
aiokafka's and aiohttp's records alike), no ERROR and no bare traceback for the transient
states of a broker that is still settling (new topics without leaders, a group coordinator
starting, a broker not up yet)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from tests.support.services import ServiceProcess, free_port, launch, service_env

pytestmark = pytest.mark.e2e

CALM_LEVELS = {"debug", "info", "warning"}


def log_lines(path: Path) -> list[str]:
    return [line for line in path.read_text(errors="replace").splitlines() if line.strip()]


def not_our_format(lines: list[str]) -> list[str]:
    """Lines that are not one JSON object with an event, a level and a timestamp."""
    odd = []
    for line in lines:
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError:
            odd.append(line)
            continue
        if not (isinstance(parsed, dict) and {"event", "level", "timestamp"} <= parsed.keys()):
            odd.append(line)
    return odd


async def test_a_normal_start_on_a_fresh_prefix_logs_only_our_format_and_no_error(
    kafka_bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    """A fresh prefix: every topic is new, so leaders are still being elected when the
    services first read them, and the consumer groups are new."""
    env = service_env(kafka_bootstrap, prefix, CLICKHOOK_API_KEYS="tok:publish")
    services = await launch(("ingest", "dispatcher", "retry"), env, tmp_path)
    for service in services.values():
        assert service.terminate() == 0

    for name, service in services.items():
        lines = log_lines(service.log_path)
        assert lines, f"{name} logged nothing"
        assert not not_our_format(lines), f"{name}: {not_our_format(lines)[:5]}"
        alarming = [line for line in lines if orjson.loads(line)["level"] not in CALM_LEVELS]
        assert not alarming, f"{name}: {alarming[:5]}"


async def test_a_broker_not_up_yet_is_a_warning_with_an_explanation_not_an_error(
    prefix: str, tmp_path: Path
) -> None:
    nobody = f"127.0.0.1:{free_port()}"  # nothing listens: connection refused
    log = tmp_path / "ingest.log"
    port = free_port()
    env = service_env(
        nobody, prefix, CLICKHOOK_API_KEYS="tok:publish", CLICKHOOK_INGEST_PORT=str(port)
    )
    ingest = ServiceProcess("ingest", env, port, log)
    ingest.start()
    try:
        for _ in range(100):  # until the client has tried to connect, at most 10 s
            if "kafka_unreachable" in ingest.log_tail():
                break
            await asyncio.sleep(0.1)
    finally:
        ingest.terminate()

    lines = log_lines(log)
    assert not not_our_format(lines), not_our_format(lines)[:5]
    parsed = [orjson.loads(line) for line in lines]
    refused = [line for line in parsed if line["event"] == "kafka_unreachable"]
    assert refused, lines
    assert {line["level"] for line in refused} == {"warning"}
    assert "not started yet" in refused[0]["explanation"]
    assert not [line for line in parsed if line["level"] not in CALM_LEVELS]
