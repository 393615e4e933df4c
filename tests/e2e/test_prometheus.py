"""A real Prometheus (Debian's) scrapes the three services every second with the shipped rules
loaded: before any click, every rule evaluates without error and every series an alert or a
dashboard panel reads is there, so the first events after a start are seen by rate()."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.e2e.conftest import Pipeline, StartPipeline
from tests.support.prometheus import prometheus_binary
from tests.support.promql import (
    RULES_FILE_PATH,
    alert_queries,
    dashboard_queries,
    selectors,
    without_grafana_variables,
)
from tests.support.services import free_port, wait_ready

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

SCRAPE_INTERVAL = "1s"
# Rules evaluate and both scrapes of a rate() land within a few intervals; the lag gauges come
# with the services' first lag sample.
SETTLE_TIMEOUT_S = 30.0


def prometheus_config(pipeline: Pipeline) -> dict[str, Any]:
    """Jobs named as the rules file expects (the PodMonitor's job names), loopback only."""
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(RULES_FILE_PATH)],
        "scrape_configs": [
            {
                "job_name": f"clickhook-{name}",
                "static_configs": [{"targets": [f"127.0.0.1:{service.port}"]}],
            }
            for name, service in pipeline.services.items()
        ],
    }


class Prometheus:
    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self._session = session

    async def api(self, path: str, **params: str) -> Any:
        async with self._session.get(f"{self.url}/api/v1/{path}", params=params) as response:
            body: dict[str, Any] = await response.json()
            assert body["status"] == "success", body
            return body["data"]

    async def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's samples."""
        result: list[dict[str, Any]] = (await self.api("query", query=promql))["result"]
        return result

    async def rule_health(self) -> dict[str, str]:
        """Each rule's health, or its last error; "unknown" until first evaluated."""
        groups = (await self.api("rules"))["groups"]
        return {
            rule["name"]: rule.get("lastError") or rule["health"]
            for group in groups
            for rule in group["rules"]
        }

    async def absent(self, wanted: dict[str, set[str]]) -> dict[str, list[str]]:
        """The selectors no series answers yet, with the alerts and panels that read them."""
        missing = {}
        for selector, where in wanted.items():
            if not await self.query(f"count({without_grafana_variables(selector)})"):
                missing[selector] = sorted(where)
        return missing


def spawn_prometheus(
    config: Path, storage: Path, port: int, log_path: Path
) -> subprocess.Popen[bytes]:
    """Prometheus on loopback, its data in the test's own directory."""
    with log_path.open("ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [
                prometheus_binary("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={storage}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(name="start_prometheus")
async def fixture_start_prometheus(
    tmp_path: Path,
) -> AsyncIterator[Callable[[Pipeline], Awaitable[Prometheus]]]:
    started: list[subprocess.Popen[bytes]] = []
    log_path = tmp_path / "prometheus.log"

    async def start(pipeline: Pipeline) -> Prometheus:
        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump(prometheus_config(pipeline)))
        port = free_port()
        process = spawn_prometheus(config, tmp_path / "tsdb", port, log_path)
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        await wait_ready("prometheus", process, f"{url}/-/ready", log_path.read_text, 30)
        return Prometheus(url, pipeline.session)

    yield start
    for process in started:
        stop(process)


async def test_every_rule_evaluates_and_every_series_read_exists_before_any_traffic(
    start_pipeline: StartPipeline,
    start_prometheus: Callable[[Pipeline], Awaitable[Prometheus]],
) -> None:
    pipeline = await start_pipeline(CLICKHOOK_RETRY_SCHEDULE="1s,1m")
    prometheus = await start_prometheus(pipeline)
    wanted = selectors(alert_queries() + dashboard_queries())

    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        health = await prometheus.rule_health()
        missing = await prometheus.absent(wanted)
        settled = not missing and set(health.values()) == {"ok"}
        if settled or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)

    assert health, "Prometheus loaded no rule"
    assert set(health.values()) == {"ok"}, health
    assert not missing, f"read by alerts or panels, in no series yet: {missing}"
    scraped = await prometheus.query("up == 1")
    assert sorted(sample["metric"]["job"] for sample in scraped) == [
        "clickhook-dispatcher",
        "clickhook-ingest",
        "clickhook-retry",
    ]
