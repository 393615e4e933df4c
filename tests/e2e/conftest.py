"""The pipeline as deployed: ingest, dispatcher and retry as subprocesses on the real broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from tests.support.services import ServiceProcess, free_port, launch, service_env

PUBLISH_TOKEN = "tok-publish"
ACCOUNT_TOKEN = "tok-acc42"
ACCOUNT_ID = "acc_42"
ADMIN_TOKEN = "tok-admin"
REPLAY_TIMEOUT_S = 60.0


@dataclass
class Pipeline:
    bootstrap: str
    prefix: str
    services: dict[str, ServiceProcess]
    session: aiohttp.ClientSession

    @property
    def ingest_url(self) -> str:
        return f"http://127.0.0.1:{self.services['ingest'].port}"

    def topic(self, name: str) -> str:
        return self.prefix + name

    async def _call(
        self, method: str, path: str, token: str, expected: int, json: Any = None
    ) -> dict[str, Any]:
        """One request to ingest's API; its JSON body, once the status is the one expected."""
        async with self.session.request(
            method,
            f"{self.ingest_url}{path}",
            json=json,
            headers={"authorization": f"Bearer {token}"},
        ) as response:
            body: dict[str, Any] = await response.json()
            assert response.status == expected, body
            return body

    async def create_endpoint(
        self, url: str, token: str = ACCOUNT_TOKEN, **fields: Any
    ) -> dict[str, Any]:
        return await self._call("POST", "/v1/endpoints", token, 201, {"url": url, **fields})

    async def endpoint(self, endpoint_id: str, token: str = ACCOUNT_TOKEN) -> dict[str, Any]:
        """The endpoint as the API shows it."""
        return await self._call("GET", f"/v1/endpoints/{endpoint_id}", token, 200)

    async def patch_endpoint(
        self, endpoint_id: str, token: str = ACCOUNT_TOKEN, **fields: Any
    ) -> dict[str, Any]:
        return await self._call("PATCH", f"/v1/endpoints/{endpoint_id}", token, 200, fields)

    async def disabled_endpoint(self, endpoint_id: str, timeout_s: float = 5.0) -> dict[str, Any]:
        """The endpoint as the API shows it once a service's disable has reached ingest (or as
        it stands after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            body = await self.endpoint(endpoint_id)
            if body["enabled"] is False or time.monotonic() > deadline:
                return body
            await asyncio.sleep(0.1)

    async def post_clicks(self, payload: Any) -> dict[str, Any]:
        return await self._call("POST", "/v1/clicks", PUBLISH_TOKEN, 202, payload)

    async def post_until_accepted(
        self, batch: list[dict[str, Any]], *, retry_s: float = 0.5, timeout_s: float = 30.0
    ) -> tuple[list[str], int]:
        """POST a batch of clicks until it is accepted, always with the same ids (on a 503, send
        the same events again: docs/guides/publishing.md); the ids of the 202, and how many
        tries failed."""
        failed = 0
        while True:
            try:
                async with self.session.post(
                    f"{self.ingest_url}/v1/clicks",
                    json=batch,
                    headers={"authorization": f"Bearer {PUBLISH_TOKEN}"},
                    timeout=aiohttp.ClientTimeout(total=timeout_s),
                ) as response:
                    if response.status == 202:
                        ids: list[str] = (await response.json())["ids"]
                        return ids, failed
                    assert response.status == 503, await response.text()
            except (aiohttp.ClientError, TimeoutError):
                pass
            failed += 1
            await asyncio.sleep(retry_s)

    async def replay(
        self, endpoint_id: str, since: datetime, token: str = ACCOUNT_TOKEN
    ) -> dict[str, Any]:
        """Start a replay of the endpoint's dead letters and wait until the job has ended."""
        path = f"/v1/endpoints/{endpoint_id}/replay"
        job = await self._call("POST", path, token, 202, {"since": since.isoformat()})
        async with asyncio.timeout(REPLAY_TIMEOUT_S):
            while job["state"] == "running":
                await asyncio.sleep(0.2)
                job = await self._call("GET", path, token, 200)
        return job

    def spawn(self, name: str, instance: str) -> ServiceProcess:
        """Another process of a service (a second instance, or a restart after kill -9)."""
        template = self.services[name]
        port = free_port()
        env = {**template.env, f"CLICKHOOK_{name.upper()}_PORT": str(port)}
        log_path = template.log_path.with_name(f"{name}-{instance}.log")
        service = ServiceProcess(name, env, port, log_path)
        self.services[f"{name}-{instance}"] = service
        service.start()
        return service

    async def produce_clicks(
        self, events: list[dict[str, Any]], headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        """Straight to the ``clicks`` topic, as a shortener may do."""
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, enable_idempotence=True)
        await producer.start()
        try:
            futures = [
                await producer.send(
                    self.topic("clicks"),
                    key=e["link"]["id"].encode(),
                    value=orjson.dumps(e),
                    headers=headers,
                )
                for e in events
            ]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    async def metric(self, service: str, name: str, **labels: str) -> float:
        """The sum of a service's samples of ``name`` that carry ``labels`` (0: none)."""
        port = self.services[service].port
        async with self.session.get(f"http://127.0.0.1:{port}/metrics") as response:
            text = await response.text()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def logs(self) -> str:
        return "\n".join(
            f"--- {name} ---\n{service.log_tail(60)}" for name, service in self.services.items()
        )


StartPipeline = Callable[..., Awaitable[Pipeline]]


@pytest.fixture(name="start_pipeline")
async def fixture_start_pipeline(
    kafka_bootstrap: str, prefix: str, tmp_path: Path
) -> AsyncIterator[StartPipeline]:
    started: list[Pipeline] = []

    async def start(bootstrap: str | None = None, **extra_env: str) -> Pipeline:
        bootstrap = bootstrap or kafka_bootstrap
        env = service_env(
            bootstrap,
            prefix,
            CLICKHOOK_API_KEYS=(
                f"{PUBLISH_TOKEN}:publish,{ACCOUNT_TOKEN}:account:{ACCOUNT_ID},{ADMIN_TOKEN}:admin"
            ),
            **extra_env,
        )
        services = await launch(("ingest", "dispatcher", "retry"), env, tmp_path)
        pipeline = Pipeline(bootstrap, prefix, services, aiohttp.ClientSession())
        started.append(pipeline)
        return pipeline

    yield start
    for pipeline in started:
        await pipeline.session.close()
        for service in pipeline.services.values():
            service.terminate()
