"""What ops see, from the running services: /metrics of all three move as deliveries succeed,
retry and dead-letter; every metric the dashboard and the alerts read is exported; delivery
log lines carry their ids and never a secret, a token or a payload; /readyz drops on SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import ACCOUNT_ID, ACCOUNT_TOKEN, PUBLISH_TOKEN, Pipeline, StartPipeline
from tests.support.clicks import make_click
from tests.support.promql import alert_queries, clickhook_metric_names, dashboard_queries
from tests.support.receiver import Received, Receiver

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

SERVICES = ("ingest", "dispatcher", "retry")
DELIVERY_EVENTS = {"delivery_attempted", "delivery_dead_lettered", "endpoint_disabled"}
DELIVERY_IDS = ("event_id", "endpoint_id", "webhook_id", "attempt")
TYPE_SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


@dataclass(frozen=True)
class Scrape:
    """One service's /metrics: its samples, and every metric name it declares."""

    samples: list[tuple[str, dict[str, str], float]]
    names: set[str]

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        return sum(
            value
            for sample, sample_labels, value in self.samples
            if sample == name and labels.items() <= sample_labels.items()
        )

    def has(self, name: str, **labels: str) -> bool:
        return any(
            sample == name and labels.items() <= sample_labels.items()
            for sample, sample_labels, _ in self.samples
        )


def parse_scrape(text: str) -> Scrape:
    samples = [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]
    names = {name for name, _, _ in samples}
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        names |= {name + suffix for suffix in TYPE_SUFFIXES.get(kind, ("",))}
    return Scrape(samples, names)


async def scrape_all(pipeline: Pipeline) -> dict[str, Scrape]:
    scrapes = {}
    for name in SERVICES:
        url = f"http://127.0.0.1:{pipeline.services[name].port}/metrics"
        async with pipeline.session.get(url) as response:
            assert response.status == 200
            scrapes[name] = parse_scrape(await response.text())
    return scrapes


async def scrape_until(
    pipeline: Pipeline, done: Callable[[dict[str, Scrape]], bool], timeout_s: float
) -> dict[str, Scrape]:
    deadline = time.monotonic() + timeout_s
    while True:
        scrapes = await scrape_all(pipeline)
        if done(scrapes) or time.monotonic() > deadline:
            return scrapes
        await asyncio.sleep(0.3)


def json_lines(pipeline: Pipeline) -> list[dict[str, Any]]:
    """Every structlog line of every service (the standard library's lines are not JSON)."""
    return [
        orjson.loads(line)
        for service in pipeline.services.values()
        for line in service.log_path.read_text(errors="replace").splitlines()
        if line.startswith("{")
    ]


def respond_by_path(request: Received, n: int) -> int:
    """/ok succeeds, /flaky fails once, /down always fails, /gone answers 410 Gone."""
    if request.path == "/flaky":
        return 500 if n == 0 else 200
    return {"/ok": 200, "/down": 500, "/gone": 410}[request.path]


def all_outcomes_counted(scrapes: Mapping[str, Scrape]) -> bool:
    """Six attempts (ok, flaky twice, down twice, gone) and two dead letters (down, gone)."""
    workers = (scrapes["dispatcher"], scrapes["retry"])
    attempts = sum(s.value("clickhook_delivery_attempts_total") for s in workers)
    dead = sum(s.value("clickhook_dead_letters_total") for s in workers)
    return attempts >= 6 and dead >= 2


async def test_metrics_move_and_logs_keep_secrets_as_deliveries_succeed_retry_and_dead_letter(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    receiver.respond = respond_by_path
    pipeline = await start_pipeline(CLICKHOOK_RETRY_SCHEDULE="1s", CLICKHOOK_LOG_LEVEL="debug")
    url_token = f"urltoken{uuid.uuid4().hex}"
    endpoints = {
        path: await pipeline.create_endpoint(receiver.url(f"{path}?token={url_token}"))
        for path in ("/ok", "/flaky", "/down", "/gone")
    }
    marker = f"payload-marker-{uuid.uuid4().hex}"
    wrong_token = f"tok-wrong-{uuid.uuid4().hex}"
    async with pipeline.session.post(
        f"{pipeline.ingest_url}/v1/clicks",
        json=make_click("evt_obs_denied", account_id=ACCOUNT_ID),
        headers={"authorization": f"Bearer {wrong_token}"},
    ) as denied:
        assert denied.status == 401
    event = make_click("evt_obs_1", account_id=ACCOUNT_ID)
    event["click"]["user_agent"] = marker
    await pipeline.post_clicks(event)

    scrapes = await scrape_until(pipeline, all_outcomes_counted, timeout_s=30)

    assert_counters_moved(scrapes, receiver, pipeline)
    assert_dashboard_and_alert_metrics_are_exported(scrapes)
    secrets = [ep["secret"] for ep in endpoints.values()]
    secrets += [s.removeprefix("whsec_") for s in secrets]
    assert_logs_keep_secrets(
        pipeline, [*secrets, PUBLISH_TOKEN, ACCOUNT_TOKEN, wrong_token, url_token, marker]
    )
    assert_delivery_lines_carry_their_ids(pipeline, endpoints["/gone"]["id"])


def observed_statuses(receiver: Receiver) -> Counter[int]:
    """What the receiver answered, replayed from what it got (n counts per path)."""
    seen: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    for request in receiver.received:
        statuses[respond_by_path(request, seen[request.path])] += 1
        seen[request.path] += 1
    return statuses


def assert_counters_moved(
    scrapes: Mapping[str, Scrape], receiver: Receiver, pipeline: Pipeline
) -> None:
    ingest, dispatcher, retry = (scrapes[name] for name in SERVICES)
    statuses = observed_statuses(receiver)
    assert statuses == {200: 2, 500: 3, 410: 1}, pipeline.logs()

    def attempts(outcome: str) -> float:
        counter = "clickhook_delivery_attempts_total"
        return dispatcher.value(counter, outcome=outcome) + retry.value(counter, outcome=outcome)

    # Every answer the receiver gave is one attempt counted, by the service that made it.
    assert (attempts("success"), attempts("http_5xx"), attempts("gone")) == (2, 3, 1)
    assert dispatcher.value("clickhook_delivery_attempts_total") == 4
    assert retry.value("clickhook_delivery_attempts_total", outcome="success") == 1
    assert dispatcher.value("clickhook_retry_scheduled_total", service="dispatcher") == 2
    assert dispatcher.value("clickhook_dead_letters_total", reason="endpoint_gone") == 1
    assert retry.value("clickhook_dead_letters_total", reason="exhausted") == 1
    assert retry.value("clickhook_retry_lateness_seconds_count") == 2
    assert dispatcher.value("clickhook_delivery_latency_seconds_count") == 1
    assert dispatcher.value("clickhook_delivery_attempt_duration_seconds_count") == 4
    assert ingest.value("clickhook_ingest_events_total", result="accepted") == 1
    assert ingest.value("clickhook_ingest_requests_total", route="/v1/clicks", status="202") == 1
    assert ingest.value("clickhook_ingest_requests_total", route="/v1/clicks", status="401") == 1
    assert ingest.value("clickhook_ingest_publish_seconds_count") == 1
    assert dispatcher.value("clickhook_endpoints", state="enabled") == 3
    assert dispatcher.value("clickhook_endpoints", state="disabled") == 1
    # Lag is measured from the start, for each service's own group and topics.
    prefix = pipeline.prefix
    assert dispatcher.has(
        "clickhook_kafka_consumer_lag",
        group=f"{prefix}clickhook-dispatcher",
        topic=f"{prefix}clicks",
    )
    tier = f"{prefix}webhook.retry.1s"
    assert retry.has("clickhook_kafka_consumer_lag", group=f"{prefix}clickhook-retry", topic=tier)
    assert retry.has("clickhook_retry_envelopes", topic=tier, state="due")
    assert retry.has("clickhook_retry_envelopes", topic=tier, state="waiting")


def assert_dashboard_and_alert_metrics_are_exported(scrapes: Mapping[str, Scrape]) -> None:
    exported = set().union(*(scrape.names for scrape in scrapes.values()))
    used = clickhook_metric_names(alert_queries() + dashboard_queries())
    missing = {name: sorted(where) for name, where in used.items() if name not in exported}
    assert not missing, f"read by the dashboard or alerts, exported by no service: {missing}"


def assert_logs_keep_secrets(pipeline: Pipeline, secrets: list[str]) -> None:
    for name, service in pipeline.services.items():
        text = service.log_path.read_text(errors="replace")
        assert text, f"{name} logged nothing"
        leaked = [secret[:12] + "…" for secret in secrets if secret in text]
        assert not leaked, f"{name} logged {leaked}"


def assert_delivery_lines_carry_their_ids(pipeline: Pipeline, gone_endpoint_id: str) -> None:
    lines = [line for line in json_lines(pipeline) if line.get("event") in DELIVERY_EVENTS]
    assert {line["event"] for line in lines} == DELIVERY_EVENTS, pipeline.logs()
    for line in lines:
        missing = [key for key in DELIVERY_IDS if key not in line]
        assert not missing, f"{line['event']} without {missing}: {line}"
        assert line["event_id"] == "evt_obs_1"
    # The deliverer names only the endpoint here: the rest comes from the bound context.
    (disabled,) = [line for line in lines if line["event"] == "endpoint_disabled"]
    assert disabled["endpoint_id"] == gone_endpoint_id
    assert disabled["attempt"] == 1


async def readyz(session: aiohttp.ClientSession, port: int) -> tuple[int, dict[str, Any]]:
    async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
        body: dict[str, Any] = await response.json()
        return response.status, body


async def test_readyz_is_false_while_a_service_drains(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    receiver.delay_s = 3.0  # a delivery is in flight when SIGTERM arrives
    pipeline = await start_pipeline()
    await pipeline.create_endpoint(receiver.url())
    dispatcher = pipeline.services["dispatcher"]
    assert (await readyz(pipeline.session, dispatcher.port))[0] == 200
    await pipeline.post_clicks(make_click("evt_obs_drain", account_id=ACCOUNT_ID))
    await receiver.wait_for(1, timeout_s=10)

    assert dispatcher.process is not None
    dispatcher.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 2.0
    status, body = await readyz(pipeline.session, dispatcher.port)
    while status == 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        status, body = await readyz(pipeline.session, dispatcher.port)
    still_draining = dispatcher.process.poll() is None

    assert status == 503, body
    assert body["checks"]["not_draining"] is False
    assert still_draining, "unready before the drain ended, not after"
    # Off the event loop: the receiver answering the in-flight delivery runs on it.
    assert await asyncio.to_thread(dispatcher.terminate) == 0
    finished = [
        line
        for line in json_lines(pipeline)
        if line.get("event") == "delivery_attempted" and line.get("event_id") == "evt_obs_drain"
    ]
    assert [line["outcome"] for line in finished] == ["success"], "the drain let it finish"
